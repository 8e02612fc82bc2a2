"""Silence warnings that are noise to a clarena user (they are about the libraries, not the
user's config); every other warning still shows.

:func:`silence_known_warnings` runs at the start of every pipeline.
"""

from __future__ import annotations

import warnings

#: ``(message regex, category)`` of each silenced warning, and why it is noise.
KNOWN_NOISE: tuple[tuple[str, type[Warning]], ...] = (
    # Lightning 2.6 calls a torch pytree API that torch deprecated; nothing a user can change.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    # Lightning's DDP all_gather (the rank checks after each task) calls a deprecated torch
    # collective.
    (r"torch\.distributed\.nn\.functional\.all_gather is deprecated", FutureWarning),
)


def silence_known_warnings() -> None:
    """Ignore each warning of :data:`KNOWN_NOISE` in this process."""
    for message, category in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)
