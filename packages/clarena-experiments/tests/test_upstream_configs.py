"""Upstream CLArena's config trees: composed and run unchanged, or refused by name.

The trees under ``fixtures/upstream/`` are written by us in upstream's three layouts (see its
README). End-to-end runs use MNIST-format files written under ``<tmp>/data/MNIST``, the root
the trees name, and change only ``train_tasks`` (``num_tasks`` in the old layout) and
``trainer.max_epochs``.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object
from omegaconf import OmegaConf

from clarena.experiments import cli
from clarena.experiments.errors import DatasetNotFoundError, PipelineConfigError
from clarena.experiments.running.data.synthetic_files import write_synthetic_files
from clarena.experiments.runs.safe_config import allowed_target
from clarena.experiments.upstream import aliases, weights
from clarena.experiments.upstream.adapter import adapt_config

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
Tree = Callable[[str], Path]

#: Every experiment file of the fixture trees, with the override choosing it.
EXPERIMENTS: list[tuple[str, str]] = [
    ("example_configs", "index=example_cl_main_expr"),
    ("example_configs", "index=example_mtl_expr"),
    ("example_configs", "index=example_stl_expr"),
    ("paper_configs", "index=adahat_paper/hat_pmnist_20tasks"),
    ("paper_configs", "index=adahat_paper/adahat_pmnist_20tasks"),
    ("paper_configs", "index=adahat_paper/hat_resnet18_scifar100_10tasks"),
    ("old_configs", "experiment=clmain_train/til_pmnist_finetuning"),
    ("old_configs", "experiment=mtl_train/mtl_smnist_joint_learning"),
]


@pytest.fixture
def upstream_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tree:
    """Copy a fixture tree to ``<tmp>/configs``, write MNIST files, work in ``<tmp>``."""

    def make(layout: str) -> Path:
        shutil.copytree(FIXTURES / layout, tmp_path / "configs")
        write_synthetic_files("mnist", tmp_path / "data" / "MNIST", train_count=60, test_count=30)
        monkeypatch.chdir(tmp_path)
        return tmp_path

    return make


def _run_dir(root: Path, expr_name: str) -> Path:
    (run_dir,) = (root / "outputs" / expr_name).iterdir()
    # upstream's output_dir: outputs/${expr_name}/${misc.timestamp}
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", run_dir.name)
    return run_dir


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def _log(run_dir: Path) -> str:
    """The job's log (Hydra names it after the job; config_tree.log is the tree)."""
    (log,) = (path for path in run_dir.glob("*.log") if path.name != "config_tree.log")
    return log.read_text()


@pytest.mark.parametrize(("layout", "choice"), EXPERIMENTS)
def test_every_fixture_experiment_composes(
    upstream_tree: Tree, capsys: pytest.CaptureFixture[str], layout: str, choice: str
) -> None:
    upstream_tree(layout)
    cli.main([choice, "--cfg", "job"])
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed.get("backbone") is not None


def test_alias_table_targets_exist_and_are_allowed_in_model_files() -> None:
    for upstream, alias in aliases.ALIASES.items():
        assert get_object(alias.target) is not None
        assert aliases.is_upstream(upstream)
        if alias.target.startswith(
            ("clarena.experiments.algorithms.", "clarena.experiments.data.")
        ):
            assert allowed_target(alias.target)
            assert allowed_target(upstream), upstream
    assert not allowed_target("clarena.cl_algorithms.EWC")


def test_hat_and_datasets_translate_to_clarena_arguments() -> None:
    cfg = OmegaConf.create(
        {
            "pipeline": "CL_MAIN_EXPR",
            "cl_dataset": {
                "_target_": "clarena.cl_datasets.PermutedMNIST",
                "root": "data/MNIST",
                "num_tasks": 10,
                "validation_percentage": 0.1,
                "batch_size": 128,
                "permutation_mode": "first_channel_only",
                "permutation_seeds": None,
                "custom_transforms": None,
                "to_tensor": True,
                "repeat_channels": 3,
                "resize": [32, 32],
            },
            "cl_algorithm": {
                "_target_": "clarena.cl_algorithms.HAT",
                "adjustment_mode": "hat",
                "s_max": 400.0,
                "clamp_threshold": 50.0,
                "mask_sparsity_reg_factor": 0.1,
                "mask_sparsity_reg_mode": "original",
                "task_embedding_init_mode": "N01",
            },
        }
    )
    adapted = OmegaConf.to_container(adapt_config(cfg))
    assert adapted["cl_dataset"] == {
        "_target_": "clarena.experiments.data.CLDataModule",
        "sequence": "permuted",
        "source": "mnist",
        "root": "data/MNIST",
        "num_tasks": 10,
        "val_fraction": 0.1,
        "batch_size": 128,
        "eval_batch_size": 128,
        "channels": 3,
        "image_size": 32,
    }
    assert adapted["cl_algorithm"] == {
        "_target_": "clarena.experiments.algorithms.HAT",
        "s_max": 400.0,
        "clamp_threshold": 50.0,
        "mask_sparsity_reg_factor": 0.1,
        "task_embedding_init_mode": "N01",
    }


def test_mtl_and_stl_datasets_translate() -> None:
    split = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    cfg = OmegaConf.create(
        {
            "pipeline": "MTL_EXPR",
            "train_tasks": 2,
            "eval_tasks": [1, 2],
            "mtl_dataset": {
                "_target_": "clarena.mtl_datasets.MTLDatasetFromCL",
                "cl_dataset": {
                    "_target_": "clarena.cl_datasets.SplitMNIST",
                    "root": "r",
                    "num_tasks": 5,
                    "class_split": {t + 1: classes for t, classes in enumerate(split)},
                    "validation_percentage": 0.2,
                },
                "sampling_strategy": "mixed",
                "batch_size": 32,
            },
            "stl_dataset": {"_target_": "clarena.stl_datasets.CIFAR10", "root": "c"},
        }
    )
    adapted = OmegaConf.to_container(adapt_config(cfg))
    assert adapted["mtl_dataset"] == {
        "_target_": "clarena.experiments.data.MTLDataModule",
        "sequence": "split",
        "source": "mnist",
        "root": "r",
        "num_tasks": 2,
        "class_split": split[:2],
        "val_fraction": 0.2,
        "batch_size": 32,
        "eval_batch_size": 32,
    }
    assert "train_tasks" not in adapted
    assert "eval_tasks" not in adapted
    assert adapted["stl_dataset"] == {
        "_target_": "clarena.experiments.data.STLDataModule",
        "sequence": "permuted",
        "source": "cifar10",
        "num_tasks": 1,
        "task_id": 1,
        "root": "c",
    }


def test_list_shaped_metrics_and_callbacks_become_clarena_settings() -> None:
    cfg = OmegaConf.create(
        {
            "pipeline": "CL_MAIN_EXPR",
            "output_dir": "out",
            "metrics": [
                {
                    "_target_": "clarena.metrics.CLAccuracy",
                    "save_dir": "${output_dir}/results/",
                    "test_acc_csv_name": "acc.csv",
                    "test_acc_matrix_plot_name": "acc_matrix.png",
                    "test_ave_acc_plot_name": None,
                },
                {"_target_": "clarena.metrics.HATNetworkCapacity"},
                {
                    "_target_": "clarena.metrics.CLLoss",
                    "save_dir": "${output_dir}/results/",
                    "test_loss_cls_csv_name": "loss_cls.csv",
                    "test_loss_cls_matrix_plot_name": "loss_cls_matrix.png",
                    "test_ave_loss_cls_plot_name": "ave_loss_cls.png",
                },
            ],
            "callbacks": [
                {"_target_": "clarena.callbacks.CLPylogger"},
                {"_target_": "clarena.callbacks.CLRichProgressBar"},
                {"_target_": "lightning.pytorch.callbacks.RichProgressBar"},
                {"_target_": "clarena.callbacks.SaveModels", "save_dir": "${output_dir}/models/"},
            ],
        }
    )
    adapted = OmegaConf.to_container(adapt_config(cfg))
    assert adapted["metrics"] == {
        "accuracy_csv": "results/acc.csv",
        "accuracy_matrix_plot": "results/acc_matrix.png",
        "summary": "results/summary.json",
        "loss_csv": "results/loss_cls.csv",
        "loss_matrix_plot": "results/loss_cls_matrix.png",
        "average_loss_plot": "results/ave_loss_cls.png",
    }
    assert adapted["callbacks"] == {
        "CLRichProgressBar": {"_target_": "clarena.experiments.callbacks.ProgressBar"},
        "RichProgressBar": {"_target_": "lightning.pytorch.callbacks.RichProgressBar"},
    }
    assert adapted["save_model"] is True
    assert adapted["model_file"] == "models/saved_model.pt"


def test_old_layout_infers_the_pipeline_and_reads_num_tasks() -> None:
    cfg = OmegaConf.create(
        {
            "num_tasks": 3,
            "test": True,
            "cl_dataset": {"_target_": "clarena.experiments.data.CLDataModule"},
            "cl_algorithm": {"_target_": "clarena.experiments.algorithms.Finetuning"},
        }
    )
    adapted = adapt_config(cfg)
    assert adapted.pipeline == "CL_MAIN_EXPR"
    assert adapted.train_tasks == 3
    assert "num_tasks" not in adapted
    assert "test" not in adapted
    mtl = adapt_config(
        OmegaConf.create(
            {
                "mtl_algorithm": {"_target_": "clarena.mtl_algorithms.JointLearning"},
                "cl_dataset": {"_target_": "clarena.cl_datasets.PermutedMNIST", "num_tasks": 4},
            }
        )
    )
    assert mtl.pipeline == "MTL_EXPR"
    assert "cl_dataset" not in mtl
    assert mtl.mtl_dataset._target_ == "clarena.experiments.data.MTLDataModule"
    assert mtl.mtl_dataset.num_tasks == 4


def test_clarena_config_is_returned_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = OmegaConf.create(
        {"pipeline": "CL_MAIN_EXPR", "metrics": {"accuracy_csv": "results/acc.csv"}}
    )
    assert adapt_config(cfg) is cfg
    assert capsys.readouterr().err == ""


def test_each_alias_notice_is_printed_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Outside a Hydra job (an earlier in-process run leaves Hydra's config behind).
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)
    algorithm = {"_target_": "clarena.cl_algorithms.Finetuning"}
    adapt_config(
        OmegaConf.create({"pipeline": "CL_MAIN_EXPR", "cl_algorithm": algorithm, "x": algorithm})
    )
    err = capsys.readouterr().err
    assert err.count("clarena.cl_algorithms.Finetuning is") == 1
    assert err.splitlines() == [
        "clarena: upstream CLArena's clarena.cl_algorithms.Finetuning is "
        "clarena.experiments.algorithms.Finetuning (registered alias)"
    ]


REFUSALS: list[tuple[dict[str, Any], list[str]]] = [
    (
        {
            "cl_algorithm": {
                "_target_": "clarena.cl_algorithms.EWC",
                "parameter_change_reg_factor": 1,
            }
        },
        ["cl_algorithm: upstream CLArena's clarena.cl_algorithms.EWC", "EWC", "HAT, AdaHAT"],
    ),
    ({"cl_algorithm": {"_target_": "clarena.cl_algorithms.LwF"}}, ["LwF (distillation)"]),
    ({"cl_algorithm": {"_target_": "clarena.cl_algorithms.DER"}}, ["DER (replay)"]),
    (
        {"cul_algorithm": {"_target_": "clarena.cul_algorithms.AmnesiacHATUnlearn"}},
        ["clarena.cul_algorithms.AmnesiacHATUnlearn", "continual unlearning is not in clarena"],
    ),
    ({"pipeline": "CUL_MAIN_EXPR"}, ["CUL_MAIN_EXPR", "continual unlearning"]),
    ({"pipeline": "CL_REF_JOINT_EXPR"}, ["CL_REF_JOINT_EXPR", "MTL_EXPR"]),
    (
        {"metrics": [{"_target_": "clarena.metrics.HATMasks"}]},
        ["metrics[0]", "HATMasks", "remove HATMasks"],
    ),
    (
        {"backbone": {"_target_": "clarena.backbones.HATMaskMLP", "gate": "tanh"}},
        ["backbone.gate='tanh'", "set gate: sigmoid"],
    ),
    (
        {
            "metrics": [
                {
                    "_target_": "clarena.metrics.MTLAccuracy",
                    "save_dir": "${output_dir}/r/",
                    "test_acc_plot_name": "acc.png",
                }
            ]
        },
        ["metrics[0].test_acc_plot_name='acc.png'", "writes no such file"],
    ),
    (
        {"callbacks": [{"_target_": "clarena.callbacks.ImageShow"}]},
        ["callbacks[0]", "clarena.callbacks.ImageShow", "remove it from callbacks"],
    ),
    (
        {
            "cl_algorithm": {
                "_target_": "clarena.cl_algorithms.HAT",
                "adjustment_mode": "hat_const_1",
            }
        },
        ["cl_algorithm.adjustment_mode='hat_const_1'", "Set adjustment_mode: hat"],
    ),
    (
        {
            "cl_algorithm": {
                "_target_": "clarena.cl_algorithms.AdaHAT",
                "adjustment_mode": "adahat_no_sum",
            }
        },
        ["cl_algorithm.adjustment_mode='adahat_no_sum'", "Set adjustment_mode: adahat"],
    ),
    (
        {
            "cl_algorithm": {
                "_target_": "clarena.cl_algorithms.HAT",
                "mask_sparsity_reg_mode": "cross",
            }
        },
        ["cl_algorithm.mask_sparsity_reg_mode='cross'", "original"],
    ),
    (
        {"cl_dataset": {"_target_": "clarena.cl_datasets.PermutedMNIST", "permutation_seeds": [1]}},
        ["cl_dataset.permutation_seeds=[1]", "permutation_seed"],
    ),
    (
        {
            "cl_dataset": {
                "_target_": "clarena.cl_datasets.PermutedCIFAR10",
                "permutation_mode": "all",
            }
        },
        ["cl_dataset.permutation_mode='all'", "by_channel"],
    ),
    (
        {"cl_dataset": {"_target_": "clarena.cl_datasets.SplitMNIST", "batch_size": [32, 64]}},
        ["cl_dataset.batch_size=[32, 64]", "one batch size"],
    ),
    (
        {"cl_dataset": {"_target_": "clarena.cl_datasets.PermutedMNIST", "shuffle": True}},
        ["cl_dataset.shuffle=True", "no clarena counterpart"],
    ),
    (
        {"cl_dataset": {"_target_": "clarena.cl_datasets.PermutedKMNIST"}},
        ["clarena.cl_datasets.PermutedKMNIST", "clarena reads"],
    ),
    (
        {"train_tasks": 4, "eval_after_tasks": [2, 4]},
        ["eval_after_tasks=[2, 4] leaves out trained tasks [1, 3]", "Drop eval_after_tasks"],
    ),
    ({"test": False}, ["test=False", "always tests"]),
    ({"main_model_path": "m.pth"}, ["main_model_path='m.pth'", "model_path"]),
    ({"misc": {"colour": True}}, ["misc.colour=True", "misc.timestamp and misc.config_tree"]),
    (
        {"num_tasks": 3, "train_tasks": 2},
        ["num_tasks=3 and train_tasks=2 disagree"],
    ),
    (
        {
            "pipeline": "MTL_EXPR",
            "train_tasks": 5,
            "mtl_dataset": {"_target_": "clarena.experiments.data.MTLDataModule", "num_tasks": 3},
        },
        ["train_tasks=5", "every task of mtl_dataset, which has 3 tasks"],
    ),
    (
        {
            "backbone": {
                "_target_": "clarena.backbones.ResNet18",
                "pretrained_weights": "IMAGENET1K_V2",
            }
        },
        ["IMAGENET1K_V2", "resnet18.tv_in1k"],
    ),
]


@pytest.mark.parametrize(("config", "expected"), REFUSALS)
def test_what_clarena_lacks_is_refused_by_name(config: dict[str, Any], expected: list[str]) -> None:
    with pytest.raises(PipelineConfigError) as error:
        adapt_config(OmegaConf.create({"pipeline": "CL_MAIN_EXPR", **config}))
    message = str(error.value)
    assert "\n" not in message
    for text in expected:
        assert text in message


def test_refusal_through_the_command_exits_1_with_one_line(
    upstream_tree: Tree, capsys: pytest.CaptureFixture[str]
) -> None:
    upstream_tree("example_configs")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["index=example_cl_main_expr", "cl_algorithm._target_=clarena.cl_algorithms.EWC"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert (
        "clarena: PipelineConfigError: cl_algorithm: upstream CLArena's clarena.cl_algorithms.EWC "
        "has no clarena counterpart: EWC (a regularisation method) is not in clarena" in err
    )
    assert "Traceback" not in err


def test_torchvision_weight_names_are_timm_tags_of_the_same_tensors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torchvision_models = pytest.importorskip("torchvision.models")
    published = set(timm.list_pretrained("resnet*"))
    for (depth, name), (tag, file_name) in weights.TORCHVISION_WEIGHTS.items():
        enum = getattr(torchvision_models, f"ResNet{depth}_Weights")
        assert enum[name].url.rsplit("/", 1)[1] == file_name
        assert tag in published
        assert enum.DEFAULT.name == weights.DEFAULT_WEIGHTS[depth]
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    target = "clarena.backbones.HATMaskResNet18"
    assert weights.clarena_weights(target, "IMAGENET1K_V1", "k")[0] == "resnet18.tv_in1k"
    assert weights.clarena_weights(target, "DEFAULT", "k")[0] == "resnet18.tv_in1k"
    assert weights.clarena_weights("clarena.backbones.ResNet52", "DEFAULT", "k")[0] == (
        "resnet50.tv2_in1k"
    )
    cached = tmp_path / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir()
    cached.write_bytes(b"")
    value = weights.clarena_weights(target, "ResNet18_Weights.IMAGENET1K_V1", "k")[0]
    assert value == str(cached)


def test_paper_resnet_config_maps_the_weights_without_fetching(
    upstream_tree: Tree, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from hydra import compose, initialize_config_dir

    root = upstream_tree("paper_configs")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with initialize_config_dir(str(root / "configs"), version_base=None):
        cfg = compose("entrance", ["index=adahat_paper/hat_resnet18_scifar100_10tasks"])
    adapted = adapt_config(cfg)
    assert adapted.backbone.pretrained_weights == "resnet18.tv_in1k"
    assert adapted.backbone._target_ == "clarena.backbones.HATMaskResNet18"
    assert adapted.cl_dataset.source == "cifar100"
    assert "eval_after_tasks" not in adapted


def test_dataset_missing_from_root_is_one_line_naming_root_and_layout(tmp_path: Path) -> None:
    cfg = adapt_config(
        OmegaConf.create(
            {
                "pipeline": "CL_MAIN_EXPR",
                "cl_dataset": {
                    "_target_": "clarena.cl_datasets.SplitCIFAR10",
                    "root": str(tmp_path / "nowhere"),
                    "num_tasks": 5,
                },
            }
        )
    )
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.cl_dataset)
    with pytest.raises(DatasetNotFoundError) as error:
        datamodule.num_tasks  # noqa: B018 - loading the sequence reads the files
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message
    assert "cifar-10-batches-py" in message
    assert "\n" not in message
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.slow
def test_index_layout_cl_experiment_runs_unchanged(upstream_tree: Tree) -> None:
    root = upstream_tree("example_configs")
    cli.main(["index=example_cl_main_expr", "train_tasks=2", "trainer.max_epochs=1"])
    run_dir = _run_dir(root, "example_cl_main_expr")
    assert [row["after_training_task"] for row in _rows(run_dir / "results/acc.csv")] == ["1", "2"]
    losses = _rows(run_dir / "results/loss_cls.csv")
    assert [row["after_training_task"] for row in losses] == ["1", "2"]
    assert float(losses[1]["test_on_task_2"]) > 0
    for name in (
        "acc_matrix.png",
        "ave_acc.png",
        "summary.json",
        "loss_cls_matrix.png",
        "ave_loss_cls.png",
    ):
        assert (run_dir / "results" / name).is_file()
    assert (run_dir / "saved_models/saved_model.pt").is_file()
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["task_1.png", "task_2.png"]
    assert "cl_algorithm" in (run_dir / "config_tree.log").read_text()
    log = _log(run_dir)
    for notice in (
        "clarena.cl_datasets.PermutedMNIST is clarena.experiments.data.CLDataModule",
        "clarena.cl_algorithms.Finetuning is clarena.experiments.algorithms.Finetuning",
        "eval_after_tasks=10: honoured",
        "hydra/job_logging: colorlog",
    ):
        assert log.count(notice) == 1, notice


@pytest.mark.slow
def test_paper_layout_hat_runs_unchanged(upstream_tree: Tree) -> None:
    root = upstream_tree("paper_configs")
    cli.main(["index=adahat_paper/hat_pmnist_20tasks", "train_tasks=2", "trainer.max_epochs=1"])
    summary = json.loads(
        (_run_dir(root, "hat_pmnist_20tasks") / "results/summary.json").read_text()
    )
    assert summary["algorithm"] == "HAT"
    assert summary["trained_tasks"] == [1, 2]
    assert set(summary["capacity_per_task"]) == {"1", "2"}


@pytest.mark.slow
def test_old_layout_runs_unchanged(upstream_tree: Tree) -> None:
    root = upstream_tree("old_configs")
    cli.main(
        ["experiment=clmain_train/til_pmnist_finetuning", "num_tasks=2", "trainer.max_epochs=1"]
    )
    run_dir = _run_dir(root, "til_pmnist_finetuning")
    assert [row["after_training_task"] for row in _rows(run_dir / "results/acc.csv")] == ["1", "2"]
    assert "running pipeline: CL_MAIN_EXPR, inferred from cl_algorithm" in _log(run_dir)


@pytest.mark.slow
def test_index_layout_mtl_experiment_trains_the_first_train_tasks(upstream_tree: Tree) -> None:
    root = upstream_tree("example_configs")
    cli.main(["index=example_mtl_expr", "train_tasks=2", "eval_tasks=2", "trainer.max_epochs=1"])
    (row,) = _rows(_run_dir(root, "example_mtl_expr") / "results/acc.csv")
    assert sorted(row) == ["average_accuracy", "test_on_task_1", "test_on_task_2"]


def test_test_loss_is_the_mean_cross_entropy_over_the_whole_test_set() -> None:
    from clarena.experiments.running.algorithms.test_accuracy import ExactTestAccuracy

    counter = ExactTestAccuracy()
    counter._init_test_accuracy()
    counter.test_task_ids = [3]
    counter.on_test_epoch_start()
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 4, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 4, (10,), generator=generator)
    for part in (slice(0, 7), slice(7, 10)):  # unequal batches: a mean of means would differ
        counter.count_test(3, logits[part], targets[part])
    counter.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
    counter.on_test_epoch_end()
    expected = torch.nn.functional.cross_entropy(logits.float(), targets).item()
    assert counter.test_loss[3] == pytest.approx(expected, rel=1e-6)
