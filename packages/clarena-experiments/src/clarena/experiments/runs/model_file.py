"""Writing and reading model and resume files: atomic saves and a SHA-256 of the contents.

A file is a ``torch.save`` of one dict (``config``, ``state_dict`` and bookkeeping). On saving,
:func:`write` adds ``sha256``: a digest of every entry, tensors by dtype, shape and raw bytes, so
a flipped byte anywhere in the weights or the config shows when :func:`read` loads the file.
Files saved before the checksum existed (clarena 0.1) load as they are, with a note.

The checksum detects damage, not tampering: whoever edits a file can store a new digest with it.
What :func:`read` guarantees for any file, checksummed or not, is that loading it runs no code
(``weights_only``) and allocates no more than the file holds: before loading, the zip archive
must store its entries uncompressed and within the file's size; after loading, every tensor must
be a plain CPU tensor whose elements its storage holds (a stride-0 view of one number claiming
10^10 elements is refused), and hashing reads the stored bytes in bounded chunks, never a
materialised copy of a view.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from clarena.experiments.errors import ModelFileError

#: Key of the checksum in a saved file's dict.
CHECKSUM_KEY = "sha256"

_ADVICE = "Copy the file again from where it was saved, or rerun the training that wrote it."

#: Largest piece of a non-contiguous tensor copied at once while hashing it.
_CHUNK_BYTES = 1 << 20

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
        tensor = value.detach().cpu()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}|".encode())
        _feed_elements(digest, tensor)
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


def _feed_elements(digest: Any, tensor: torch.Tensor) -> None:
    """Hash ``tensor``'s elements in row-major order, as one contiguous copy would hold them.

    A contiguous tensor is hashed straight from its storage; a strided view is copied in pieces
    of at most :data:`_CHUNK_BYTES` (one row at a time when a row is larger).
    """
    if tensor.is_contiguous():
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
        return
    if tensor.numel() * tensor.element_size() <= _CHUNK_BYTES:
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())
        return
    row_bytes = tensor[0].numel() * tensor.element_size()
    step = _CHUNK_BYTES // row_bytes
    if step <= 1:
        for row in tensor:
            _feed_elements(digest, row)
        return
    for start in range(0, len(tensor), step):
        _feed_elements(digest, tensor[start : start + step])


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
            clarena, a compressed or oversized archive entry), holds a tensor that claims more
            elements than its storage (or storages larger than the file), lacks a required
            entry, or its contents differ from its checksum.
    """
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"{what} is an empty file. {_ADVICE}")
    try:
        _check_archive(path, size)
        # weights_only: only tensors, plain containers and numbers are unpickled; no code runs.
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ModelFileError(
            f"{what} cannot be loaded: it is truncated, corrupt or not a file clarena saved "
            f"({type(error).__name__}: {reason}). {_ADVICE}"
        ) from error
    problem = _oversized_tensor(content, size)
    if problem is not None:
        raise ModelFileError(
            f"{what} is not a file clarena saved: {problem}. It was refused before anything was "
            f"built from it; use only model files that clarena wrote."
        )
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
    except RecursionError:
        raise ModelFileError(
            f"{what} is not a file clarena saved: it is nested too deeply."
        ) from None
    except TypeError as error:
        raise ModelFileError(f"{what} is not a file clarena saved: {error}. {_ADVICE}") from None
    if actual != stored:
        raise ModelFileError(
            f"{what} is corrupt: its contents do not match the SHA-256 recorded when it was saved "
            f"(recorded {str(stored)[:12]}..., now {actual[:12]}...). {_ADVICE}"
        )
    return content


def _check_archive(path: Path, size: int) -> None:
    """Refuse a zip archive whose entries could unpack to more than the file holds.

    ``torch.save`` stores every entry uncompressed, so together they fit in the file; a
    compressed entry (which could inflate to any size) or a size beyond the file is refused
    before anything is read.

    Raises:
        zipfile.BadZipFile: not a zip archive (clarena never wrote the legacy format).
        ValueError: a compressed entry, or entries larger than the file.
    """
    with zipfile.ZipFile(path) as archive:
        entries = archive.infolist()
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED or entry.file_size != entry.compress_size:
            raise ValueError(
                f"its entry {entry.filename} is compressed, which torch.save never does"
            )
    total = sum(entry.file_size for entry in entries)
    if total > size:
        raise ValueError(f"its entries claim {total} bytes, more than the file's {size}")


def _oversized_tensor(content: Any, size: int) -> str | None:
    """What is wrong with the first tensor in ``content`` that claims more than it stores.

    Every tensor must be a strided CPU tensor whose elements fit in its storage, and the
    storages together must fit in the file's ``size`` bytes. Walks ``content`` without
    recursion (a crafted file may nest deeply).
    """
    stack: list[tuple[str, Any]] = [("", content)]
    storages: dict[int, int] = {}
    while stack:
        key, value = stack.pop()
        if isinstance(value, Mapping):
            stack.extend(
                (f"{key}[{name!r}]" if key else str(name), item) for name, item in value.items()
            )
        elif isinstance(value, list | tuple):
            stack.extend((f"{key}[{index}]", item) for index, item in enumerate(value))
        elif isinstance(value, torch.Tensor):
            name = f"the tensor {key}"
            if value.layout != torch.strided or value.device.type != "cpu" or value.is_quantized:
                return f"{name} is a {value.layout} {value.device.type} tensor"
            storage = value.untyped_storage()
            held = storage.nbytes() // value.element_size()
            if value.numel() > held:
                return (
                    f"{name} claims {value.numel()} elements of shape {tuple(value.shape)} but "
                    f"its storage holds {held}"
                )
            storages[storage.data_ptr()] = storage.nbytes()
    if sum(storages.values()) > size:
        return f"its tensors hold {sum(storages.values())} bytes, more than the file's {size}"
    return None


def _note(message: str) -> None:
    """Tell the user on stderr and in the run's log."""
    print(f"clarena: {message}", file=sys.stderr)
    log.warning(message)
