"""What a run prints: the progress bar's metrics, the result table, no known-noise warnings."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from clarena.experiments.running.callbacks import ProgressBar, short_metric_name
from clarena.experiments.running.pipelines.common import print_table
from clarena.experiments.running.quiet import silence_known_warnings


class _Logging(LightningModule):
    task_id = 2

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 2)

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        loss = self.layer(batch[0]).sum()
        self.log("task_2/train/loss", loss, prog_bar=True)
        self.log("task_2/train/acc", 0.5, prog_bar=True)
        return loss

    def validation_step(self, batch: list[Tensor], batch_idx: int) -> None:
        self.log("task_2/val/acc", 0.25, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_short_metric_names() -> None:
    assert short_metric_name("task_12/train/loss") == "loss"
    assert short_metric_name("task_3/val/acc") == "val_acc"
    assert short_metric_name("val/acc") == "val_acc"
    assert short_metric_name("train/acc") == "acc"


def test_progress_bar_shows_task_epoch_and_short_metrics_without_v_num(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    bar = ProgressBar()
    shown = _ShownDescriptions(bar)
    data = DataLoader(TensorDataset(torch.randn(8, 3)), batch_size=4)
    module = _Logging()
    trainer = Trainer(
        max_epochs=2,
        logger=CSVLogger(tmp_path, version="task_2"),
        callbacks=[bar, shown],
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, data, data)
    assert set(bar.get_metrics(trainer, module)) == {"loss", "acc", "val_acc"}
    # Epochs count 1..max_epochs, as max_epochs: 2 reads (Lightning's own bar shows 0/1, 1/1).
    assert shown.descriptions == ["Task 2 epoch 1/2", "Task 2 epoch 2/2"]


class _ShownDescriptions(Callback):
    """The training bar's description at the end of each training epoch, as the console shows it."""

    def __init__(self, bar: ProgressBar) -> None:
        self.bar = bar
        self.descriptions: list[str] = []

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        progress = self.bar.progress
        assert progress is not None
        assert self.bar.train_progress_bar_id is not None
        task = next(t for t in progress.tasks if t.id == self.bar.train_progress_bar_id)
        self.descriptions.append(task.description)


def test_result_table_fits_80_columns_and_prints_the_path_whole(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = "/a/rather/long/output/dir/" + "x" * 90 + "/2026-12-01_17-00-00"
    print_table(
        "CL main experiment (Finetuning, TIL)",
        ["tasks", "average accuracy", "BWT", "forgetting"],
        ["5", "0.5610", "-0.5223", "+0.5223"],
        [f"Results in {path}"],
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"Results in {path}"
    assert all(len(line) <= 80 for line in lines[:-1])
    assert "CL main experiment (Finetuning, TIL)" in lines[0]


def test_known_noise_warnings_are_silenced_and_others_kept() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_known_warnings()
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, "
            "TreeSpec) and treespec.is_leaf()` instead.",
            FutureWarning,
            stacklevel=1,
        )
        warnings.warn(
            "torch.distributed.nn.functional.all_gather is deprecated, use "
            "torch.distributed._functional_collectives.all_gather_single instead.",
            FutureWarning,
            stacklevel=1,
        )
        warnings.warn("your config does something odd", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["your config does something odd"]


@pytest.mark.slow
def test_a_run_warns_no_leafspec_and_prints_the_output_path_whole(
    run_clarena: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = run_clarena(
            "example_clmain_train",
            "train_tasks=1",
            "trainer.max_epochs=1",
            "lightning_loggers=none",
            "save_model=false",
        )
    assert not [str(w.message) for w in caught if "LeafSpec" in str(w.message)]
    assert f"Results in {run_dir}\n" in capsys.readouterr().out


@pytest.mark.slow
def test_a_task_smaller_than_the_logging_interval_logs_every_epoch_without_a_warning(
    run_clarena: Callable[..., Path],
) -> None:
    # Task 2 of the DIL example's split digits has 4 training batches; trainer/cpu.yaml logs
    # every 5 steps.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = run_clarena(
            "example_clmain_dil",
            "train_tasks=[2]",
            "trainer.max_epochs=2",
            "lightning_loggers.tensorboard=null",
            "callbacks=none",
            "save_model=false",
            "resume_state=false",
            "metrics.accuracy_matrix_plot=null",
            "metrics.average_accuracy_plot=null",
        )
    assert not [str(w.message) for w in caught if "log_every_n_steps" in str(w.message)]
    metrics = (run_dir / "lightning_logs" / "csv" / "task_2" / "metrics.csv").read_text()
    rows = [line.split(",") for line in metrics.splitlines()]
    header = rows[0]
    epoch, step, loss = (header.index(k) for k in ("epoch", "step", "task_2/train/loss"))
    # Every epoch logs its training loss, at the last of its 4 steps.
    assert [(r[epoch], r[step]) for r in rows[1:] if r[loss]] == [("0", "3"), ("1", "7")]


@pytest.mark.slow
def test_a_failing_tests_report_carries_no_torch_trace_records(tmp_path: Path) -> None:
    """pytest >= 9.2 attaches its report handler to every non-propagating logger, among them
    torch's structured-trace logger ``torch.__trace`` (always at DEBUG, one empty record per
    compile event). The repository's pytest config (``log_level``) keeps DEBUG out of reports.
    """
    root = Path(__file__).resolve().parents[3]
    module = tmp_path / "test_compiles_then_fails.py"
    module.write_text(
        "import torch\n\n\n"
        "def test_compiles_then_fails():\n"
        "    torch.compile(lambda x: x.sin() + 1, backend='aot_eager')(torch.randn(3))\n"
        "    assert False\n",
        encoding="utf-8",
    )
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(module),
            "-p",
            "no:cacheprovider",
            "-c",
            str(root / "pyproject.toml"),
            f"--rootdir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    assert "1 failed" in report
    assert "torch.__trace" not in report
