"""A third-party distribution adds config groups to ``clarena`` without touching clarena-experiments.

``integration-tests/third_party_configs`` (distribution ``clarena-demo-configs``) ships
``backbone/demo_mlp.yaml`` and ``experiment/demo_experiment.yaml`` as package data and a Hydra
search-path plugin appending ``pkg://clarena_demo_configs/conf``. ``nox -s tests`` installs it
before running this folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from clarena.experiments import cli

DEMO = "clarena_demo_configs"
INSTALL = "pip install integration-tests/third_party_configs"
#: The demo backbone (conf/backbone/demo_mlp.yaml): 784 -> 24 -> 12 -> 16.
DEMO_LAYER_SHAPES = [(24, 784), (12, 24), (16, 12)]
SHORT_RUN = ("trainer.max_epochs=1", "++trainer.limit_train_batches=2")


@pytest.fixture(autouse=True)
def demo_configs_installed() -> None:
    # Not a skip: `nox -s tests` always installs the distribution, so its absence is a setup bug.
    for module in (DEMO, f"{DEMO}.conf", f"hydra_plugins.{DEMO}.searchpath"):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"{module} is not importable: install the demo distribution ({INSTALL})")


def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *overrides: str) -> dict:
    """Run ``clarena <overrides>`` in-process (shipped tree, no ./configs); the saved model."""
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    cli.main([*overrides, f"output_dir={run_dir}"])
    assert (run_dir / "results" / "acc.csv").is_file()
    return torch.load(run_dir / "saved_model.pt", weights_only=True)


def layer_shapes(model: dict) -> list[tuple[int, ...]]:
    state = model["state_dict"]
    return [tuple(state[f"backbone.fc.{i}.weight"].shape) for i in range(len(DEMO_LAYER_SHAPES))]


def test_search_path_holds_the_demo_tree_after_the_shipped_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    cli.main(["--info", "searchpath"])
    paths = [
        line.split("|")[2].strip()
        for line in capsys.readouterr().out.splitlines()
        if line.count("|") == 3
    ]
    assert f"pkg://{DEMO}.conf" in paths
    shipped = f"file://{cli.SHIPPED_CONFIGS}"
    assert paths.index(shipped) < paths.index(f"pkg://{DEMO}.conf")


@pytest.mark.slow
def test_shipped_experiment_uses_the_demo_backbone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = run(
        tmp_path,
        monkeypatch,
        "experiment=example_clmain_train",
        "backbone=demo_mlp",
        "train_tasks=1",
        *SHORT_RUN,
    )
    assert model["config"]["backbone"]["hidden_dims"] == [24, 12]
    assert layer_shapes(model) == DEMO_LAYER_SHAPES
    assert model["trained_tasks"] == [1]


@pytest.mark.slow
def test_demo_experiment_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = run(tmp_path, monkeypatch, "experiment=demo_experiment", *SHORT_RUN)
    assert layer_shapes(model) == DEMO_LAYER_SHAPES
    # demo_experiment.yaml's train_tasks: 2, with groups shipped by clarena-experiments.
    assert model["trained_tasks"] == [1, 2]
    assert (
        model["config"]["cl_algorithm"]["_target_"] == "clarena.experiments.algorithms.Finetuning"
    )
