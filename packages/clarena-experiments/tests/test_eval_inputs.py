"""At evaluation, the data location and the process resources are the user's, never the file's.

A crafted model file names an attacker's data root (holding garbage files that would fail the
run if read), 24 loader workers, 64 threads and timm pretrained weights; the evaluation reads
the user's ``data_root``, starts no worker, leaves the thread count alone and opens no socket.
"""

from __future__ import annotations

import copy
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from clarena.experiments import cli
from clarena.experiments.experiment_config import ExperimentConfig
from clarena.experiments.running.data import datamodules, local_sources
from clarena.experiments.running.data.synthetic_files import write_synthetic_files
from clarena.experiments.running.pipelines import common
from clarena.experiments.running.pipelines.evaluation import evaluation_config
from clarena.experiments.running.pipelines.supervised import build_stl

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints-0.1"


def _fixture(name: str) -> dict[str, Any]:
    return torch.load(FIXTURES / name / "saved_model.pt", map_location="cpu", weights_only=True)


@pytest.fixture
def attacker_root(tmp_path: Path) -> Path:
    """MNIST files that are garbage: a run that reads them fails."""
    raw = tmp_path / "attacker" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            (raw / f"{split}-{kind}-ubyte").write_bytes(b"garbage")
    return raw.parents[1]


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Record each root a reader opens and each data module's ``num_workers``."""
    seen: dict[str, list[Any]] = {"roots": [], "num_workers": []}
    read_mnist = local_sources.READERS["mnist"]

    def reader(root: str | None) -> Any:
        seen["roots"].append(root)
        return read_mnist(root)

    monkeypatch.setitem(local_sources.READERS, "mnist", reader)
    init = datamodules._SequenceDataModule.__init__

    def recording_init(self: Any, *args: Any, **kwargs: Any) -> None:
        seen["num_workers"].append(kwargs.get("num_workers"))
        init(self, *args, **kwargs)

    monkeypatch.setattr(datamodules._SequenceDataModule, "__init__", recording_init)
    return seen


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every attempt to connect a socket is recorded and fails."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        attempts.append(args)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def _crafted_cl_model(tmp_path: Path, attacker_root: Path) -> Path:
    """The 0.1 CL fixture (784 inputs) retargeted to permuted MNIST from the attacker's root."""
    content = _fixture("example_clmain_train")
    config = copy.deepcopy(content["config"])
    config["cl_dataset"].update(source="mnist", root=str(attacker_root), num_workers=24)
    config["num_threads"] = 64
    content["config"] = config
    path = tmp_path / "shared.pt"
    torch.save(content, path)
    return path


def _evaluate(tmp_path: Path, model: Path, experiment: str, *overrides: str) -> Path:
    run_dir = tmp_path / "eval"
    extra = ["metrics.accuracy_matrix_plot=null", "metrics.average_accuracy_plot=null"]
    cli.main(
        [
            f"experiment={experiment}",
            f"model_path={model}",
            f"output_dir={run_dir}",
            "callbacks=none",
            *(extra if experiment == "example_clmain_eval" else []),
            *overrides,
        ]
    )
    return run_dir


def test_evaluation_reads_the_users_data_root_workers_and_threads(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    attacker_root: Path,
    spies: dict[str, list[Any]],
) -> None:
    monkeypatch.chdir(tmp_path)
    user_root = write_synthetic_files("mnist", tmp_path / "mine", train_count=60, test_count=30)
    model = _crafted_cl_model(tmp_path, attacker_root)
    threads = torch.get_num_threads()
    run_dir = _evaluate(
        tmp_path, model, "example_clmain_eval", f"data_root={user_root}", "eval_tasks=[1]"
    )
    assert (run_dir / "results" / "acc.csv").is_file()
    assert spies["roots"] == [str(user_root)]
    assert spies["num_workers"] == [0]
    assert torch.get_num_threads() == threads
    out = capsys.readouterr().out
    assert (
        f"Evaluating {model} on cl_dataset: permuted mnist read from data_root '{user_root}'" in out
    )
    assert str(attacker_root) not in out


def test_without_data_root_the_default_is_used_never_the_files(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    attacker_root: Path,
    spies: dict[str, list[Any]],
) -> None:
    monkeypatch.chdir(tmp_path)
    model = _crafted_cl_model(tmp_path, attacker_root)
    with pytest.raises(SystemExit) as exit_info:
        _evaluate(tmp_path, model, "example_clmain_eval")
    assert exit_info.value.code == 1
    assert spies["roots"] == ["data"]
    captured = capsys.readouterr()
    assert f"read from data_root '{tmp_path / 'data'}'" in captured.out
    assert "Dataset 'mnist': root 'data' does not exist" in captured.err
    assert str(attacker_root) not in captured.err


def test_saved_pretrained_weights_are_never_fetched(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_network: list[Any],
) -> None:
    monkeypatch.chdir(tmp_path)
    config = copy.deepcopy(_fixture("example_stl_train")["config"])
    config["stl_dataset"]["test_fraction"] = 0.03
    config["backbone"] = {
        "_target_": "clarena.backbones.ResNet18",
        "input_channels": 1,
        "output_dim": 16,
        "small_input": True,
        "pretrained_weights": None,
    }
    built = OmegaConf.create(config)
    algorithm = build_stl(
        ExperimentConfig.parse(built, strict=False), instantiate(built.stl_dataset), train=False
    )
    config["backbone"]["pretrained_weights"] = "resnet18.a1_in1k"
    model = tmp_path / "resnet.pt"
    common.save_checkpoint(model, OmegaConf.create(config), algorithm.state_dict())
    run_dir = _evaluate(tmp_path, model, "example_stl_eval")
    assert (run_dir / "results" / "acc.csv").is_file()
    assert no_network == []
    assert (
        f"Evaluating {model} on stl_dataset: permuted digits (scikit-learn's bundled digits; no "
        f"files read)" in capsys.readouterr().out
    )


def test_evaluation_config_replaces_exactly_the_users_keys() -> None:
    saved = OmegaConf.create(
        {
            "mtl_dataset": {"source": "cifar10", "root": "~/x", "num_workers": 24, "seed": 3},
            "backbone": {"_target_": "clarena.backbones.ResNet18", "pretrained_weights": "a"},
            "num_threads": 64,
            "global_seed": 5,
        }
    )
    user = OmegaConf.create({"data_root": "/data", "num_workers": 2, "num_threads": None})
    assert OmegaConf.to_container(
        evaluation_config(saved, ExperimentConfig.parse(user, strict=False))
    ) == {
        "mtl_dataset": {"source": "cifar10", "root": "/data", "num_workers": 2, "seed": 3},
        "backbone": {"_target_": "clarena.backbones.ResNet18", "pretrained_weights": None},
        "num_threads": None,
        "global_seed": 5,
    }


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("num_workers", -1, "num_workers must be a number of data loader processes >= 0; got -1"),
        ("num_workers", "4", "num_workers must be a number of data loader processes >= 0"),
        ("data_root", 5, "data_root must be a directory path; got 5"),
    ],
)
def test_bad_user_values_are_named(key: str, value: Any, message: str) -> None:
    with pytest.raises(common.PipelineConfigError, match=message):
        ExperimentConfig.parse(OmegaConf.create({key: value}), strict=False)


@pytest.mark.parametrize(
    ("name", "edit", "shape"),
    [
        # 20000 x 20000 float32 hidden layers: 1.6 GB for a file of under 1 MB of weights.
        (
            "example_stl_train",
            lambda c: c["config"]["backbone"].update(hidden_dims=[20000, 20000]),
            "(20000, 20000)",
        ),
        # A class count of two million: a 512 MB head.
        (
            "example_clmain_train",
            lambda c: c["num_classes"].update({1: 2_000_000}),
            "(2000000, 64)",
        ),
    ],
)
def test_a_config_claiming_more_than_its_weights_is_refused_before_building(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    edit: Any,
    shape: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    content = _fixture(name)
    content["config"] = copy.deepcopy(content["config"])
    edit(content)
    model = tmp_path / "big.pt"
    torch.save(content, model)
    experiment = "example_stl_eval" if name == "example_stl_train" else "example_clmain_eval"
    with pytest.raises(SystemExit) as exit_info:
        _evaluate(tmp_path, model, experiment)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "ModelFileError" in line)
    assert (
        f"model_path '{model}': building the model its config describes allocates more than" in line
    )
    assert f"of shape {shape}), far more than the file's weights" in line
    assert not (tmp_path / "eval" / "results").exists()
