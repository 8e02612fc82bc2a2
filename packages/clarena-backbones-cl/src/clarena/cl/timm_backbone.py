"""Any timm model as a continual-learning backbone."""

from __future__ import annotations

from typing import Any

from torch import nn

from clarena.backbones import extends_arguments
from clarena.backbones.timm_backbone import TimmBackbone
from clarena.cl.base import CLBackbone


class CLTimmBackbone(CLBackbone, TimmBackbone):
    """:class:`~clarena.backbones.timm_backbone.TimmBackbone` shared across tasks, with the task
    bookkeeping of :class:`~clarena.cl.CLBackbone`; a mask method attaches with
    :meth:`~clarena.cl.CLBackbone.attach` and acts on every weighted layer. Arguments as for
    ``TimmBackbone``.
    """

    @extends_arguments(TimmBackbone)
    def __init__(self, **arguments: Any) -> None:
        super().__init__(**arguments)

    def normalization_layer(self, layer_name: str) -> nn.Module | None:
        """The batch norm right after weighted layer ``layer_name`` (its unit gate follows it),
        or ``None``: the module now at that path (a per-task batch norm once a method made it
        one)."""
        self._check_layer_name(layer_name)
        path = self.gate_norm_paths.get(layer_name)
        return None if path is None else self.get_submodule(path)

    def feature_layer_names(self) -> tuple[str, ...]:
        """Weighted layers whose unit outputs reach the feature (from the trace): ``proj`` when
        there is one."""
        return TimmBackbone.feature_layer_names(self)
