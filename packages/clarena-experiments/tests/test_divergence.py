"""A non-finite training loss stops the run: one line, exit 1, no model or results written."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from clarena.experiments.errors import TrainingDivergedError
from clarena.experiments.running import divergence
from clarena.experiments.running.divergence import DivergenceCheck
from clarena.experiments.testing import QUIET_OUTPUT_OVERRIDES, quiet_trainer

Run = Callable[..., Path]

#: A few batches, no loggers or progress bar (valid for the CL, MTL and STL experiments).
QUICK = ("trainer.max_epochs=1", "+trainer.limit_train_batches=3", *QUIET_OUTPUT_OVERRIDES[:2])

#: What Hydra writes before the job starts; a diverged run may leave nothing else.
HYDRA_FILES = {".hydra", "clarena.log"}


@pytest.mark.parametrize(
    ("experiment", "where"),
    [
        ("example_clmain_train", "task 1, epoch 0, step 1"),
        ("example_mtl_train", "the joint training of all tasks, epoch 0, step 1"),
        ("example_stl_train", "task 1, epoch 0, step 1"),
    ],
)
def test_a_huge_learning_rate_stops_the_run_and_saves_nothing(
    run_clarena: Run,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    experiment: str,
    where: str,
) -> None:
    with pytest.raises(SystemExit) as exited:
        run_clarena(experiment, *QUICK, "optimizer.lr=1e30", "save_model=true")
    assert exited.value.code == 1
    message = (
        f"The training loss is nan at {where}: the training diverged, so the run stopped before "
        f"writing its model and summary. The learning rate is 1e+30: lower it (e.g. "
        f"optimizer.lr=1e+28), or check the data for nan or infinite values."
    )
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"clarena: TrainingDivergedError: {message}"
    run_dir = tmp_path / experiment
    assert {path.name for path in run_dir.iterdir()} <= HYDRA_FILES
    # The failure is recorded in the run's log.
    assert f"[{divergence.log.name}][ERROR] - {message}" in (run_dir / "clarena.log").read_text()


class Regression(LightningModule):
    """A one-weight regression whose loss becomes infinite at the batch holding ``inf``."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1, bias=False)
        self.task_id = 3
        self.weights: list[torch.Tensor] = []

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        self.weights.append(self.layer.weight.detach().clone())
        inputs, targets = batch
        return ((self.layer(inputs) - targets) ** 2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.125)


def test_the_check_stops_before_the_bad_loss_reaches_the_weights() -> None:
    inputs = torch.tensor([[1.0], [2.0], [float("inf")], [3.0]])
    data = DataLoader(TensorDataset(inputs, torch.ones(4, 1)), batch_size=1)
    module = Regression()
    trainer = quiet_trainer(max_epochs=1, callbacks=[DivergenceCheck()])
    with pytest.raises(TrainingDivergedError) as error:
        trainer.fit(module, data)
    assert str(error.value) == (
        "The training loss is inf at task 3, epoch 0, step 2: the training diverged, so the run "
        "stopped before writing its model and summary. The learning rate is 0.125: lower it "
        "(e.g. optimizer.lr=0.00125), or check the data for nan or infinite values."
    )
    # Two steps were taken; the infinite loss produced none.
    assert len(module.weights) == 3
    assert torch.equal(module.layer.weight.detach(), module.weights[2])
    assert torch.isfinite(module.layer.weight).all()


def test_finite_losses_pass() -> None:
    data = DataLoader(TensorDataset(torch.ones(4, 1), torch.ones(4, 1)), batch_size=2)
    module = Regression()
    quiet_trainer(max_epochs=2, callbacks=[DivergenceCheck()]).fit(module, data)
    assert len(module.weights) == 4


def test_every_rank_stops_when_another_ranks_loss_diverged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under DDP the flag is all-reduced: a rank with a finite loss stops too (no hang)."""
    data = DataLoader(TensorDataset(torch.ones(4, 1), torch.ones(4, 1)), batch_size=2)
    module = Regression()
    trainer = quiet_trainer(max_epochs=1, callbacks=[DivergenceCheck()])
    decisions: list[tuple[bool, bool]] = []

    def another_rank_diverged(decision: bool, all: bool = True) -> bool:
        decisions.append((decision, all))
        return True

    monkeypatch.setattr(trainer.strategy, "reduce_boolean_decision", another_rank_diverged)
    with pytest.raises(
        TrainingDivergedError,
        match=r"^The training loss is nan or infinite on "
        r"another rank at task 3, epoch 0, step 0: ",
    ):
        trainer.fit(module, data)
    # This rank's loss was finite; the decision is "any rank", not "all ranks".
    assert decisions == [(False, False)]
    assert torch.equal(module.layer.weight.detach(), module.weights[0])


@pytest.mark.slow
def test_two_process_ddp_run_stops_on_both_ranks(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    clarena = str(Path(sys.executable).parent / "clarena")
    command = [clarena, "experiment=example_clmain_train", "trainer=ddp_cpu", *QUICK]
    completed = subprocess.run(
        [*command, "optimizer.lr=1e30", f"output_dir={run_dir}"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 1, completed.stderr[-3000:]
    assert (
        "clarena: TrainingDivergedError: The training loss is nan at task 1, epoch 0, step 1"
        in completed.stderr
    )
    assert not (run_dir / "results").exists()
    assert not (run_dir / "checkpoints").exists()
