"""Old location of :mod:`clarena.backbones.layers`, kept so existing imports keep working."""

from __future__ import annotations

from clarena.backbones.layers import ActivationLayer, resolve_activation_layer

__all__ = ["ActivationLayer", "resolve_activation_layer"]
