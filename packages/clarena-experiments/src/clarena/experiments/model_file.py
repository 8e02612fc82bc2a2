"""Writing and reading model and resume files: atomic saves and a SHA-256 of the contents.

A file is a ``torch.save`` of one dict (``config``, ``state_dict`` and bookkeeping). On saving,
:func:`write` adds ``sha256``: a digest of every entry, tensors by dtype, shape and raw bytes, so
a flipped byte anywhere in the weights or the config shows when :func:`read` loads the file.
Files saved before the checksum existed (clarena 0.1) load as they are, with a note.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from clarena.experiments.errors import ModelFileError

#: Key of the checksum in a saved file's dict.
CHECKSUM_KEY = "sha256"

_ADVICE = "Copy the file again from where it was saved, or rerun the training that wrote it."

log = logging.getLogger(__name__)


def checksum(content: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of ``content``: mappings by sorted key, tensors by dtype, shape and bytes.

    Mapping order does not count (a state dict loads by key); everything else does.

    Raises:
        TypeError: ``content`` holds a value that is not a tensor, container or plain scalar.
    """
    digest = hashlib.sha256()
    _feed(digest, content)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)}|".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}|".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, str):
        encoded = value.encode()
        digest.update(f"S{len(encoded)}|".encode())
        digest.update(encoded)
    elif value is None or isinstance(value, bool | int | float):
        digest.update(f"{type(value).__name__}:{value!r}|".encode())
    else:
        raise TypeError(f"cannot checksum a {type(value).__name__} in a model file")


def write(path: Path, content: Mapping[str, Any]) -> Path:
    """Save ``content`` plus its checksum to ``path`` atomically; returns ``path``.

    The file is written to ``.<name>.<pid>.tmp`` beside ``path`` and renamed over it, so an
    interruption leaves the previous file intact; on any failure (a full disk) the temporary
    file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({**content, CHECKSUM_KEY: checksum(content)}, temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def read(
    path: Path, what: str, required: Sequence[str] = ("config", "state_dict")
) -> dict[str, Any]:
    """Load the file ``path`` written by :func:`write` and verify its checksum.

    Args:
        path: an existing file.
        what: how errors name the file, e.g. ``"model_path '<path>'"``.
        required: keys the file's dict must hold.

    Returns:
        The file's dict, without the checksum entry.

    Raises:
        ModelFileError: the file is empty, cannot be loaded (truncated, garbage, not saved by
            clarena), lacks a required entry, or its contents differ from its checksum.
    """
    if path.stat().st_size == 0:
        raise ModelFileError(f"{what} is an empty file. {_ADVICE}")
    try:
        # weights_only: only tensors, plain containers and numbers are unpickled; no code runs.
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ModelFileError(
            f"{what} cannot be loaded: it is truncated, corrupt or not a file clarena saved "
            f"({type(error).__name__}: {reason}). {_ADVICE}"
        ) from error
    if not isinstance(content, dict) or any(key not in content for key in required):
        raise ModelFileError(
            f"{what} is not a file clarena saved: it lacks the entries "
            f"{', '.join(k for k in required if not isinstance(content, dict) or k not in content)}."
            f" {_ADVICE}"
        )
    stored = content.pop(CHECKSUM_KEY, None)
    if stored is None:
        _note(f"{what} has no checksum (saved by clarena 0.1); its contents are not verified.")
        return content
    try:
        actual = checksum(content)
    except TypeError as error:
        raise ModelFileError(f"{what} is not a file clarena saved: {error}. {_ADVICE}") from None
    if actual != stored:
        raise ModelFileError(
            f"{what} is corrupt: its contents do not match the SHA-256 recorded when it was saved "
            f"(recorded {str(stored)[:12]}..., now {actual[:12]}...). {_ADVICE}"
        )
    return content


def _note(message: str) -> None:
    """Tell the user on stderr and in the run's log."""
    print(f"clarena: {message}", file=sys.stderr)
    log.warning(message)
