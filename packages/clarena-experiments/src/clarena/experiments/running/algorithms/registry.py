"""The algorithm registry: the ``clarena.algorithms`` entry-point group.

clarena-experiments registers its algorithms here, and any distribution can register its own
(``MyAlgorithm = "my_package.algorithm:MyAlgorithm"``). What is registered is what a saved
model's config may name (see :mod:`clarena.experiments.safe_config`), and which algorithms drive a
mask method is found here, from each algorithm's ``drives_mask_method``.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from clarena.backbones.registry import install_hint

#: Entry-point group under which distributions register their algorithm classes.
ENTRY_POINT_GROUP = "clarena.algorithms"


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_algorithms() -> dict[str, str]:
    """Every registered algorithm's name mapped to the distribution providing it."""
    return {
        name: (ep.dist.name if ep.dist is not None else "unknown")
        for name, ep in sorted(_entry_points().items())
    }


def resolve_algorithm(name: str) -> Any:
    """The algorithm class registered as ``name``.

    Raises:
        KeyError: no installed distribution registers ``name``; for one of clarena's own, the
            message names the ``pip install`` to run.
    """
    entry_point = _entry_points().get(name)
    if entry_point is None:
        hint = install_hint(ENTRY_POINT_GROUP, name)
        raise KeyError(
            hint
            or f"no algorithm '{name}' is registered (registered: "
            f"{', '.join(sorted(_entry_points()))}); install the distribution that registers "
            f"it in the '{ENTRY_POINT_GROUP}' entry-point group."
        )
    return entry_point.load()


def algorithms_driving(mask_method: str) -> list[str]:
    """Names of the registered algorithms whose ``drives_mask_method`` is ``mask_method``."""
    return [
        name
        for name in sorted(_entry_points())
        if getattr(resolve_algorithm(name), "drives_mask_method", None) == mask_method
    ]


@functools.cache
def entry_point_targets(*groups: str) -> frozenset[str]:
    """The ``_target_`` strings (``module.attribute``) of every entry point in ``groups``."""
    return frozenset(
        ep.value.replace(":", ".").replace(" ", "")
        for group in groups
        for ep in entry_points(group=group)
    )
