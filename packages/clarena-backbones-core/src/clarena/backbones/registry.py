"""The backbone name registry: ``clarena.backbones.<Name>`` for every installed distribution.

Each distribution declares its backbones (classes or builder functions) in the entry-point group
``clarena.backbones``. Names resolve lazily, so installing a distribution is all it takes for its
names to appear here. A name that one of clarena's own distributions publishes, but that is not
installed, says what to install: the names clarena publishes, per entry-point group, are package
data (``published.json``), not rules in code, so no layer here knows a method by name.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from importlib.resources import files
from typing import Any

from clarena.backbones.errors import ClarenaError

ENTRY_POINT_GROUP = "clarena.backbones"


@functools.cache
def published_names(group: str) -> dict[str, str]:
    """The names clarena's own distributions register in entry-point ``group``, with each name's
    distribution (installed or not); empty for a group clarena publishes nothing in."""
    catalogue = json.loads(files("clarena.backbones").joinpath("published.json").read_text())
    return dict(catalogue.get(group, {}))


def install_hint(group: str, name: str) -> str | None:
    """``"<name> is provided by <dist>, which is not installed: pip install <dist>"`` for a name
    clarena publishes in ``group``; ``None`` for any other name."""
    distribution = published_names(group).get(name)
    if distribution is None:
        return None
    return (
        f"{name} is provided by {distribution}, which is not installed: pip install {distribution}"
    )


#: Every backbone name a clarena distribution provides, with that distribution's name.
KNOWN_BACKBONES: dict[str, str] = published_names(ENTRY_POINT_GROUP)


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


def resolve_backbone(name: str) -> Callable[..., Any]:
    """Return the backbone registered as ``name``: a backbone class or a builder function.

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
        backbone: Callable[..., Any] = entry_point.load()
        return backbone
    hint = install_hint(ENTRY_POINT_GROUP, name)
    if hint is not None:
        raise BackboneNotInstalledError(hint)
    candidates = sorted(set(_entry_points()) | set(KNOWN_BACKBONES))
    nearest = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    suggestion = f" Did you mean {' or '.join(nearest)}?" if nearest else ""
    raise AttributeError(
        f"clarena.backbones has no backbone '{name}'.{suggestion} "
        f"Available here: {', '.join(sorted(_entry_points()))}."
    )
