"""The mask-method contract: a method object attached to a CLBackbone (SPEC §9)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from clarena.backbones import BackboneOutput
from clarena.cl import CLMLP, MaskMethod, resolve_mask_method


class ZeroUnits(MaskMethod):
    """A toy method: task t closes unit t-1 of every layer (unit_gate) and halves weights."""

    name = "zero-units"
    state_names = ("toy_marker",)

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def _attach(self, backbone: Any) -> None:
        backbone.register_buffer("toy_marker", torch.zeros(1))

    def setup_task(self, task_id: int, is_new: bool) -> None:
        self.calls.append(("setup_task", (task_id, is_new)))

    def end_task(self, task_id: int) -> None:
        self.calls.append(("end_task", task_id))

    def layer_forward(self, layer_name: str, layer: nn.Module, input: Tensor) -> Tensor:
        assert isinstance(layer, nn.Linear)
        return nn.functional.linear(input, layer.weight * 0.5, layer.bias)

    def unit_gate(self, layer_name: str, hidden: Tensor) -> Tensor:
        gate = torch.ones(hidden.shape[1])
        gate[self.backbone.task_id - 1] = 0
        return hidden * gate

    def forward(
        self, input: Tensor, stage: str | None, task_id: int | None, step: Mapping[str, Any]
    ) -> BackboneOutput:
        self.calls.append(("forward", dict(step)))
        feature, activations = self.backbone._run_features(input)
        return BackboneOutput(
            feature, activations, extras={"step": dict(step)}, fields=("feature", "step")
        )

    def layer_usage(self) -> dict[str, tuple[int, int]]:
        return {"fc/0": (1, 4), "fc/1": (1, 2)}


def _backbone() -> CLMLP:
    torch.manual_seed(0)
    return CLMLP(input_dim=3, hidden_dims=[4], output_dim=2, activation_layer=None)


def test_attached_method_receives_hooks_task_setup_and_step_arguments():
    backbone = _backbone()
    weight0, bias0 = backbone.fc[0].weight.detach(), backbone.fc[0].bias.detach()
    weight1, bias1 = backbone.fc[1].weight.detach(), backbone.fc[1].bias.detach()
    method = ZeroUnits()
    assert backbone.attach(method) is backbone
    assert backbone.mask_method is method
    backbone.setup_task_id(2)
    backbone.setup_task_id(2)
    input = torch.randn(5, 3)
    feature, step = backbone(input, "train", scale=3.0)
    # The reference, computed by hand: halved weights, unit 1 (task 2) of each layer closed.
    hidden = input @ (0.5 * weight0).T + bias0
    hidden[:, 1] = 0
    expected = hidden @ (0.5 * weight1).T + bias1
    expected[:, 1] = 0
    assert torch.equal(feature, expected)
    assert step == {"scale": 3.0}
    assert method.calls == [
        ("setup_task", (2, True)),
        ("setup_task", (2, False)),
        ("forward", {"scale": 3.0}),
    ]
    assert "toy_marker" in backbone.state_dict()
    assert method.capacity() == pytest.approx(2 / 6)
    assert method.capacity_per_layer() == {"fc/0": 0.25, "fc/1": 0.5}


def test_a_backbone_carries_one_method_attached_before_its_first_task():
    backbone = _backbone()
    backbone.attach(ZeroUnits())
    with pytest.raises(RuntimeError, match=r"already has ZeroUnits attached"):
        backbone.attach(ZeroUnits())
    late = _backbone()
    late.setup_task_id(1)
    with pytest.raises(RuntimeError, match=r"before the first setup_task_id; tasks \[1\]"):
        late.attach(ZeroUnits())


def test_a_method_object_serves_one_backbone():
    method = ZeroUnits()
    _backbone().attach(method)
    with pytest.raises(RuntimeError, match=r"already attached to a CLMLP"):
        _backbone().attach(method)
    with pytest.raises(RuntimeError, match=r"is not attached to a backbone"):
        _ = ZeroUnits().backbone


def test_cl_backbone_without_method_refuses_step_arguments():
    backbone = _backbone()
    backbone.setup_task_id(1)
    with pytest.raises(TypeError, match=r"CLMLP.forward got step arguments mask_percentage"):
        backbone(torch.randn(2, 3), "train", mask_percentage=0.5)


def test_unknown_mask_method_names_the_installed_ones():
    with pytest.raises(KeyError, match=r"no mask method 'nope' is installed \(installed: "):
        resolve_mask_method("nope")
