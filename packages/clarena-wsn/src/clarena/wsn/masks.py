"""Keys of WSN's masked parameters; masks are kept in :class:`clarena.cl.TaskMaskStore`."""

from __future__ import annotations

from clarena.cl.mask_store import TaskMaskStore

__all__ = ["TaskMaskStore", "parameter_key"]


def parameter_key(layer_name: str, kind: str) -> str:
    """Key of a masked parameter: ``'<layer name>/weight'`` or ``'<layer name>/bias'``."""
    return f"{layer_name}/{kind}"
