"""A third party's mask method, its backbone builder and the algorithm that drives it.

Registered through entry points (see ``pyproject.toml``), never named by clarena:

- ``clarena.mask_methods``: ``demo_gate`` = :class:`DemoGate`, a fixed per-unit gate;
- ``clarena.backbones``: ``DemoGateMLP`` = :func:`DemoGateMLP`, a ``CLMLP`` with it attached;
- ``clarena.algorithms``: ``DemoGateFinetuning`` = :class:`DemoGateFinetuning`, which drives it.

A model saved with them evaluates through clarena's model-file allowlist without
``trust_model_file``, because the allowlist is what these groups register.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from clarena.backbones import BackboneOutput
from clarena.cl import CLMLP, CLBackbone, MaskMethod
from clarena.experiments.running.algorithms import Finetuning


class DemoGate(MaskMethod):
    """Multiplies every layer's units by a fixed gate of 0.5, saved as ``demo_gate.<layer>``."""

    name: ClassVar[str] = "demo_gate"
    state_names: ClassVar[tuple[str, ...]] = ("demo_gate",)

    def _attach(self, backbone: CLBackbone) -> None:
        backbone.demo_gate = torch.nn.ParameterDict(
            {
                name.replace("/", "_"): torch.nn.Parameter(
                    torch.full((backbone.get_layer_by_name(name).weight.shape[0],), 0.5),
                    requires_grad=False,
                )
                for name in backbone.weighted_layer_names
            }
        )

    def unit_gate(self, layer_name: str, hidden: Tensor) -> Tensor:
        return hidden * self.backbone.demo_gate[layer_name.replace("/", "_")]

    def forward(
        self, input: Tensor, stage: str | None, task_id: int | None, step: Mapping[str, Any]
    ) -> BackboneOutput:
        self.backbone.check_task_id_ready(task_id)
        return BackboneOutput(*self.backbone._run_features(input))

    def end_task(self, task_id: int) -> None:
        return None

    def layer_usage(self) -> dict[str, tuple[int, int]]:
        return {name: (0, 1) for name in self.backbone.weighted_layer_names}


def DemoGateMLP(**arguments: Any) -> CLMLP:
    """A ``CLMLP`` (same arguments) with :class:`DemoGate` attached."""
    backbone = CLMLP(**arguments)
    backbone.attach(DemoGate())
    return backbone


class DemoGateFinetuning(Finetuning):
    """Finetuning of a backbone carrying :class:`DemoGate`."""

    drives_mask_method: ClassVar[str | None] = "demo_gate"


def unregistered_helper() -> None:
    """Importable, but registered in no entry-point group: a saved model may not name it."""
