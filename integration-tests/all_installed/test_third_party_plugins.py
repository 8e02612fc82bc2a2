"""A third party's mask method, backbone builder and algorithm, registered through entry points.

``integration-tests/third_party_configs`` (distribution ``clarena-demo-configs``) registers
``DemoGate`` (``clarena.mask_methods``), ``DemoGateMLP`` (``clarena.backbones``) and
``DemoGateFinetuning`` (``clarena.algorithms``); clarena names none of them. A model saved with
them evaluates through the model-file allowlist without ``trust_model_file``, while a name of the
same module that no group registers is refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clarena.experiments import cli
from clarena.experiments.running.algorithms.registry import algorithms_driving, available_algorithms
from clarena.experiments.runs import model_file
from clarena.experiments.runs.safe_config import allowed_target

PLUGIN = "clarena_demo_configs.plugin"
TRAIN = (
    "experiment=demo_experiment",
    "backbone=demo_gate_mlp",
    "cl_algorithm=demo_gate_finetuning",
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=2",
    "callbacks=none",
    "metrics.accuracy_matrix_plot=null",
    "metrics.average_accuracy_plot=null",
)


def last_line(path: Path) -> str:
    return path.read_text().strip().splitlines()[-1]


def test_the_entry_point_groups_are_the_allowlist() -> None:
    assert available_algorithms()["DemoGateFinetuning"] == "clarena-demo-configs"
    assert algorithms_driving("demo_gate") == ["DemoGateFinetuning"]
    assert allowed_target(f"{PLUGIN}.DemoGateFinetuning")
    assert allowed_target(f"{PLUGIN}.DemoGate")
    assert allowed_target("clarena.backbones.DemoGateMLP")
    assert not allowed_target(f"{PLUGIN}.unregistered_helper")


@pytest.mark.slow
def test_a_third_party_saved_model_evaluates_safely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    cli.main([*TRAIN, f"output_dir={tmp_path / 'train'}"])
    model_path = tmp_path / "train" / "saved_model.pt"
    saved = torch.load(model_path, weights_only=True)
    assert saved["config"]["cl_algorithm"]["_target_"] == f"{PLUGIN}.DemoGateFinetuning"
    assert "backbone.demo_gate.fc_0" in saved["state_dict"]

    evaluate = ["experiment=example_clmain_eval", "callbacks=none"]
    evaluate += ["metrics.accuracy_matrix_plot=null", "metrics.average_accuracy_plot=null"]
    cli.main([*evaluate, f"model_path={model_path}", f"output_dir={tmp_path / 'eval'}"])
    assert "trust_model_file" not in capsys.readouterr().err
    assert last_line(tmp_path / "eval" / "results" / "acc.csv") == last_line(
        tmp_path / "train" / "results" / "acc.csv"
    )

    saved["config"]["cl_algorithm"]["_target_"] = f"{PLUGIN}.unregistered_helper"
    del saved[model_file.CHECKSUM_KEY]
    crafted = model_file.write(tmp_path / "crafted.pt", saved)
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*evaluate, f"model_path={crafted}", f"output_dir={tmp_path / 'crafted'}"])
    assert exit_info.value.code == 1
    assert (
        f"config key 'cl_algorithm' names _target_ '{PLUGIN}.unregistered_helper'"
        in capsys.readouterr().err
    )


def test_a_plain_algorithm_on_the_third_party_method_names_the_algorithm_that_drives_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*TRAIN[:2], f"output_dir={tmp_path / 'run'}"])
    assert exit_info.value.code == 1
    assert (
        "Finetuning trains a plain continual-learning backbone, but mask method 'demo_gate' is "
        "attached to CLMLP; only the algorithms that drive it train it: DemoGateFinetuning."
    ) in capsys.readouterr().err
