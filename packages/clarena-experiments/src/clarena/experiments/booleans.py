"""The one parser of the boolean config keys: ``true`` or ``false``, nothing else.

``bool("no")`` is ``True``, so reading a switch with ``bool()`` or ``if cfg.get(key)`` turns any
non-empty string on: ``trust_model_file=no`` would skip the model-file allowlist. Every boolean
key is read through :func:`strict_bool` instead, which accepts only a real boolean: YAML's
``true``/``false`` (OmegaConf also reads YAML 1.1's ``yes``/``no``/``on``/``off`` in a file as
booleans) and Hydra's unquoted ``key=true``/``key=false``. Anything else, the quoted strings
``"true"``/``"false"``, ``1``, ``null`` and ``no`` on the command line included, is refused with
the key's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clarena.experiments.errors import PipelineConfigError

#: The override with which a user builds a file's config without the allowlist check.
TRUST_KEY = "trust_model_file"

#: The top-level boolean keys of an experiment config, with their defaults and what ``true``
#: does (for the message).
BOOLEAN_KEYS: dict[str, tuple[bool, str]] = {
    TRUST_KEY: (
        False,
        "trust_model_file=true builds a model file's config without the allowlist check; use it "
        "only for a file you trust",
    ),
    "compile": (False, "compile=true compiles the backbone with torch.compile"),
    "save_model": (False, "save_model=true saves the trained model file"),
    "overwrite": (
        False,
        "overwrite=true deletes a previous run's files in the output dir and starts clean",
    ),
    "resume_state": (True, "resume_state=true writes the resume state after every task"),
}


def strict_bool(value: Any, key: str) -> bool:
    """``value`` of the boolean config key ``key``, which must be ``True`` or ``False``.

    Raises:
        PipelineConfigError: ``value`` is not a bool (a string, a number, ``None``).
    """
    if isinstance(value, bool):
        return value
    meaning = BOOLEAN_KEYS[key][1] if key in BOOLEAN_KEYS else f"{key}=true turns it on"
    raise PipelineConfigError(
        f"{key} must be true or false (unquoted); got {value!r}, which clarena does not guess "
        f"at. Set {key}=true or {key}=false: {meaning}."
    )


def config_bool(cfg: Mapping[str, Any], key: str) -> bool:
    """The boolean top-level key ``key`` of ``cfg`` (its default when absent), checked."""
    return strict_bool(cfg.get(key, BOOLEAN_KEYS[key][0]), key)


def check_boolean_keys(cfg: Mapping[str, Any]) -> None:
    """Refuse ``cfg`` when any of :data:`BOOLEAN_KEYS` is set to anything but true or false.

    Raises:
        PipelineConfigError: naming the first such key.
    """
    for key in BOOLEAN_KEYS:
        config_bool(cfg, key)
