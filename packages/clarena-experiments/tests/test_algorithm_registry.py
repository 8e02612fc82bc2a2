"""The ``clarena.algorithms`` entry-point group and the base's mask-method check."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest

from clarena.backbones import BackboneOutput
from clarena.cl import CLMLP, HeadsTIL, MaskMethod
from clarena.experiments.running import algorithms
from clarena.experiments.running.algorithms import CLConfigError, Finetuning
from clarena.experiments.running.algorithms.registry import (
    algorithms_driving,
    available_algorithms,
    resolve_algorithm,
)
from clarena.experiments.runs.safe_config import allowed_target


class Gate(MaskMethod):
    name: ClassVar[str] = "gate"

    def _attach(self, backbone: Any) -> None:
        return None

    def end_task(self, task_id: int) -> None:
        return None

    def forward(
        self, input: Any, stage: Any, task_id: Any, step: Mapping[str, Any]
    ) -> BackboneOutput:
        return BackboneOutput(*self.backbone._run_features(input))

    def layer_usage(self) -> dict[str, tuple[int, int]]:
        return {}


class GateFinetuning(Finetuning):
    drives_mask_method: ClassVar[str | None] = "gate"


def mlp() -> CLMLP:
    return CLMLP(input_dim=4, hidden_dims=[3], output_dim=2)


def test_clarena_registers_every_algorithm_it_exports() -> None:
    exported = {name for name in algorithms.__all__ if name not in {"CLAlgorithm", "CLConfigError"}}
    registered = {n for n, d in available_algorithms().items() if d == "clarena-experiments"}
    assert registered == exported
    for name in exported:
        assert resolve_algorithm(name) is getattr(algorithms, name)
        assert allowed_target(f"clarena.experiments.algorithms.{name}")
    assert not allowed_target("clarena.experiments.algorithms.CLAlgorithm")


def test_the_drivers_of_a_method_are_found_through_the_registry() -> None:
    assert algorithms_driving("hat") == ["AdaHAT", "FGAdaHAT", "HAT"]
    assert algorithms_driving("wsn") == ["WSN"]


def test_a_missing_clarena_algorithm_names_its_distribution(monkeypatch) -> None:
    from clarena.experiments.running.algorithms import registry

    monkeypatch.setattr(registry, "_entry_points", dict)
    with pytest.raises(KeyError, match="pip install clarena-experiments"):
        resolve_algorithm("HAT")
    with pytest.raises(KeyError, match="no algorithm 'EWC' is registered"):
        resolve_algorithm("EWC")


def test_a_plain_algorithm_refuses_a_backbone_with_a_method() -> None:
    with pytest.raises(
        CLConfigError,
        match=r"^Finetuning trains a plain continual-learning backbone, but mask method 'gate' "
        r"is attached to CLMLP; only the algorithms that drive it train it: no installed",
    ):
        Finetuning(mlp().attach(Gate()), HeadsTIL(2))


def test_an_algorithm_driving_a_method_refuses_a_backbone_without_it() -> None:
    with pytest.raises(
        CLConfigError,
        match=r"^GateFinetuning drives mask method 'gate', but CLMLP has none attached\.",
    ):
        GateFinetuning(mlp(), HeadsTIL(2))
    assert GateFinetuning(mlp().attach(Gate()), HeadsTIL(2)).drives_mask_method == "gate"


def test_the_algorithm_base_imports_no_mask_method_package() -> None:
    code = (
        "import sys\n"
        "sys.modules['clarena.hat'] = None\n"
        "sys.modules['clarena.wsn'] = None\n"
        "from clarena.experiments.algorithms.base import CLAlgorithm\n"
        "print(CLAlgorithm.drives_mask_method)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout.strip()) == (0, "None"), result.stderr
