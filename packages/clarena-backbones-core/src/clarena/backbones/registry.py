"""The backbone name registry: ``clarena.backbones.<ClassName>`` for every installed distribution.

Each clarena distribution declares its backbone classes in the entry-point group
``clarena.backbones``. Names resolve lazily, so installing a distribution is all it takes for
its names to appear here, and a known name whose distribution is missing says what to install.
"""

from __future__ import annotations

import difflib
import functools
from importlib.metadata import EntryPoint, entry_points

from clarena.backbones.errors import ClarenaError

ENTRY_POINT_GROUP = "clarena.backbones"

#: Backbone families of the clarena distributions, by class-name prefix.
_FAMILY_SUFFIXES = ("MLP", "ResNet18", "ResNet34", "ResNet50", "ResNet52", "ResNet101", "ResNet152")
_PREFIX_DISTRIBUTIONS = {
    "": "clarena-backbones-core",
    "CL": "clarena-backbones-cl",
    "HATMask": "clarena-hat",
    "WSNMask": "clarena-wsn",
}

#: Every backbone name a clarena distribution provides, with that distribution's name.
KNOWN_BACKBONES: dict[str, str] = {
    prefix + suffix: distribution
    for prefix, distribution in _PREFIX_DISTRIBUTIONS.items()
    for suffix in _FAMILY_SUFFIXES
} | {"TimmBackbone": "clarena-backbones-core", "CLTimmBackbone": "clarena-backbones-cl"}


class BackboneNotInstalledError(ClarenaError, ImportError):
    """A known backbone name whose distribution is not installed."""


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_backbones() -> dict[str, str]:
    """Map every backbone name available in this environment to the distribution providing it."""
    return {
        name: (ep.dist.name if ep.dist is not None else "unknown")
        for name, ep in sorted(_entry_points().items())
    }


def resolve_backbone(name: str) -> type:
    """Return the backbone class registered as ``name``.

    Raises:
        TypeError: ``name`` is not a string.
        BackboneNotInstalledError: ``name`` belongs to a clarena distribution that is not
            installed; the message names the ``pip install`` to run.
        AttributeError: ``name`` is not a backbone name; the message suggests the nearest ones.
    """
    if not isinstance(name, str):
        raise TypeError(
            f"resolve_backbone: name must be a backbone's name, a string such as 'ResNet18' or "
            f"'CLMLP'; got {name!r}. clarena.backbones.available_backbones() lists the names."
        )
    entry_point = _entry_points().get(name)
    if entry_point is not None:
        return entry_point.load()
    if name in KNOWN_BACKBONES:
        distribution = KNOWN_BACKBONES[name]
        raise BackboneNotInstalledError(
            f"{name} is provided by {distribution}, which is not installed: "
            f"pip install {distribution}"
        )
    candidates = sorted(set(_entry_points()) | set(KNOWN_BACKBONES))
    nearest = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(nearest)}?" if nearest else ""
    raise AttributeError(
        f"clarena.backbones has no backbone '{name}'.{hint} "
        f"Available here: {', '.join(sorted(_entry_points()))}."
    )
