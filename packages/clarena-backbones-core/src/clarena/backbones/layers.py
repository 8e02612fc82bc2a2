"""Layer factories from constructor arguments: the public layers API of clarena backbones.

Modelled on timm's ``timm.layers.create_act``: a backbone takes an activation as a class, a
factory or a timm name, and :func:`resolve_activation_layer` turns any of them into one factory.
Sibling distributions (clarena-backbones-cl, clarena-hat, clarena-wsn) build on this module.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

__all__ = ["ActivationLayer", "resolve_activation_layer"]

#: What ``activation_layer`` accepts: a module class, a factory, a timm activation name, or None.
ActivationLayer = type[nn.Module] | Callable[..., nn.Module] | str | None


def resolve_activation_layer(value: ActivationLayer, owner: str) -> Callable[..., nn.Module]:
    """Return a factory ``make(inplace: bool = False) -> nn.Module`` for ``activation_layer``.

    Args:
        value: an ``nn.Module`` class (``nn.ReLU``), a factory (a Hydra ``_partial_``), a timm
            activation name (``'relu'``, ``'gelu'``, ``'silu'``, ...) or ``None`` for no activation.
        owner: the backbone class name, for error messages.

    Raises:
        ValueError: for an unknown activation name or a value that is not callable.
    """
    if value is None:
        return _identity_factory
    if isinstance(value, str):
        from timm.layers import get_act_layer

        try:
            resolved = get_act_layer(value)
        except KeyError:
            raise ValueError(
                f"{owner}: unknown activation_layer '{value}'. Give a timm activation name such "
                f"as 'relu', 'gelu', 'silu', 'tanh', 'sigmoid', 'leaky_relu', an nn.Module class "
                f"such as torch.nn.ReLU, or null for none."
            ) from None
        if resolved is None:
            return _identity_factory
        value = resolved
    if not callable(value):
        raise ValueError(
            f"{owner}: activation_layer must be an nn.Module class, a factory or a name; "
            f"got {value!r}."
        )
    return _inplace_aware(value)


def _identity_factory(inplace: bool = False) -> nn.Module:
    return nn.Identity()


def _inplace_aware(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Adapt ``factory`` to the ``act_layer(inplace=True)`` calls of timm blocks."""
    try:
        takes_inplace = "inplace" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_inplace = False

    def make(inplace: bool = False) -> nn.Module:
        return factory(inplace=inplace) if takes_inplace else factory()

    return make
