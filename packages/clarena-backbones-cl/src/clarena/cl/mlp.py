"""Continual-learning MLP."""

from __future__ import annotations

from typing import Any

from clarena.backbones import MLP, extends_arguments
from clarena.cl.base import CLBackbone


class CLMLP(CLBackbone, MLP):
    """:class:`~clarena.backbones.MLP` shared across tasks. Arguments as for ``MLP``."""

    @extends_arguments(MLP)
    def __init__(self, **arguments: Any) -> None:
        super().__init__(**arguments)
