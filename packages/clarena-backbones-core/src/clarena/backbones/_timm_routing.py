"""Routing a timm model's layers through a backbone's ``layer_forward`` and ``unit_gate`` hooks.

timm's blocks call their layers directly (``self.qkv(x)``), so the hooks go into the layers
themselves: each weighted layer (and each normalisation that gates one) gets its class swapped
for a thin subclass whose ``forward`` calls the backbone. The module keeps its attributes and
parameters, so parameter names, ``state_dict`` keys and timm checkpoints are unchanged. The
original computation runs on a *plain view*: a shallow copy of the module with its original
class, sharing its parameter, buffer and child dictionaries.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

if TYPE_CHECKING:
    from clarena.backbones.timm_backbone import TimmBackbone


class _Routed(nn.Module):
    """Base of the routed classes; state lives in the instance's ``__dict__`` (see :func:`route`)."""

    _clarena_backbone: TimmBackbone
    _clarena_layer: str
    _clarena_gate_dim: int | None
    _clarena_plain: nn.Module

    def train(self, mode: bool = True) -> _Routed:
        """Set training mode here and on the plain view (a batch norm's statistics follow it)."""
        super().train(mode)
        self._clarena_plain.training = mode
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _Routed:
        # A copy of the whole backbone routes to the copied backbone (already in ``memo``); a
        # module copied alone (a per-task batch norm made from this one) stays routed to this
        # backbone rather than dragging a copy of it along.
        backbone = self.__dict__["_clarena_backbone"]
        memo.setdefault(id(backbone), backbone)
        copied = _rebuild(type(self).__bases__[0].__name__, type(self).__bases__[1])
        memo[id(self)] = copied
        for key, value in self.__dict__.items():
            copied.__dict__[key] = copy.deepcopy(value, memo)
        assert isinstance(copied, _Routed)
        return copied

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Routed classes are made on the fly; pickle and deepcopy rebuild them from the base.
        base = type(self).__bases__[1]
        return (_rebuild, (type(self).__bases__[0].__name__, base), self.__dict__)


class RoutedLayer(_Routed):
    """A weighted layer: ``backbone.layer_forward``, then its unit gate unless a norm gates it."""

    def forward(self, input: Tensor) -> Tensor:
        backbone = self._clarena_backbone
        hidden = backbone.layer_forward(self._clarena_layer, self._clarena_plain, input)
        if self._clarena_gate_dim is None:
            return hidden
        return backbone._gate_units(self._clarena_layer, hidden, self._clarena_gate_dim)


class GatedNorm(_Routed):
    """A normalisation consuming a weighted layer's output: normalise, then gate its units."""

    def forward(self, input: Tensor) -> Tensor:
        hidden = self._clarena_plain(input)
        gate_dim = self._clarena_gate_dim
        assert gate_dim is not None
        return self._clarena_backbone._gate_units(self._clarena_layer, hidden, gate_dim)


class GatedDrop(_Routed):
    """The ``drop`` of a timm norm-activation module (``BatchNormAct2d`` ...): it runs right
    after the normalisation and before the activation, so the gate goes in front of it."""

    def forward(self, input: Tensor) -> Tensor:
        gate_dim = self._clarena_gate_dim
        assert gate_dim is not None
        gated = self._clarena_backbone._gate_units(self._clarena_layer, input, gate_dim)
        return self._clarena_plain(gated)


_KINDS: dict[str, type[_Routed]] = {
    cls.__name__: cls for cls in (RoutedLayer, GatedNorm, GatedDrop)
}


_CLASSES: dict[tuple[str, type[nn.Module]], type[nn.Module]] = {}


def routed_class(kind: str, base: type[nn.Module]) -> type[nn.Module]:
    """The class ``kind`` (``'RoutedLayer'``, ``'GatedNorm'``, ``'GatedDrop'``) over ``base``;
    one class per pair, so every routed ``Conv2d`` shares one class (and one compiled code)."""
    key = (kind, base)
    if key not in _CLASSES:
        name = f"{kind}[{base.__name__}]"
        _CLASSES[key] = type(name, (_KINDS[kind], base), {"__module__": __name__})
    return _CLASSES[key]


def _rebuild(kind: str, base: type[nn.Module]) -> nn.Module:
    cls = routed_class(kind, base)
    module: nn.Module = cls.__new__(cls)
    return module


def route(
    module: nn.Module,
    kind: str,
    backbone: TimmBackbone,
    layer_name: str,
    gate_dim: int | None,
) -> None:
    """Swap ``module``'s class for the routed ``kind`` over its class, in place."""
    if isinstance(module, _Routed):
        raise RuntimeError(f"{layer_name}: a module is routed once; this one already is.")
    plain = copy.copy(module)
    module.__class__ = routed_class(kind, type(module))
    # Plain attributes, not registered children: the backbone and the plain view must not appear
    # in named_modules() or the state dict.
    module.__dict__["_clarena_backbone"] = backbone
    module.__dict__["_clarena_layer"] = layer_name
    module.__dict__["_clarena_gate_dim"] = gate_dim
    module.__dict__["_clarena_plain"] = plain
    plain.training = module.training


def is_norm_act(module: nn.Module) -> bool:
    """A timm norm-activation module: its ``drop`` runs between the norm and the activation."""
    return isinstance(getattr(module, "drop", None), nn.Module) and isinstance(
        getattr(module, "act", None), nn.Module
    )
