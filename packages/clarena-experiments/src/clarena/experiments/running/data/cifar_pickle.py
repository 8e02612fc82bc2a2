"""Read the CIFAR python batches without running anything a file names.

The published CIFAR-10 / CIFAR-100 batches are pickles of one dict: bytes keys, lists of ints or
bytes, and NumPy arrays. ``pickle.load`` would call whatever callable a file names (a crafted
``data_batch_1`` could call ``os.system``), so :func:`load_cifar_batch` unpickles with
:class:`CifarUnpickler`, whose :meth:`~CifarUnpickler.find_class` admits only the names the
format uses, each replaced by a stand-in written here:

- ``numpy.core.multiarray._reconstruct`` / ``numpy.ndarray`` / ``numpy.dtype`` (protocol 2, how
  the published files and NumPy's protocol-2 pickles hold an array) and
  ``numpy.core.numeric._frombuffer`` (protocol 5): the array is rebuilt with
  :func:`numpy.frombuffer` from the pickled bytes after its dtype (plain numbers only), shape and
  byte count are checked, so no NumPy callable runs and no size comes from anywhere but the bytes
  in the file;
- ``_codecs.encode`` with ``latin1`` and ``bytes()`` without arguments: how Python 3 writes
  ``bytes`` (and empty ``bytes``) in protocol 2.

Any other name is refused with :class:`RefusedPickleError`, before anything is called.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

#: The NumPy modules an array's reconstruction is pickled under (NumPy 1.x and 2.x names).
_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")

#: Dtype kinds an array in a CIFAR file may have: booleans, integers, floats.
_NUMERIC_KINDS = frozenset("biuf")


class RefusedPickleError(pickle.UnpicklingError):
    """The pickle names a callable or holds a value the CIFAR format never holds."""


class _NDArray:
    """Stands in for ``numpy.ndarray`` as the first argument of ``_reconstruct``."""


class _DType:
    """Stands in for a pickled ``numpy.dtype``: its code, then its byte order from the state."""

    def __init__(self, code: object, align: object = False, copy: object = True) -> None:
        self.code = _text(code, "a dtype code")
        self.byteorder = "|"

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) < 2:
            raise RefusedPickleError(f"a dtype state {_short(state)} that NumPy never writes")
        self.byteorder = _text(state[1], "a byte order")

    def resolve(self) -> np.dtype:
        """The NumPy dtype, if it is a plain number type (no objects, no records)."""
        try:
            dtype = np.dtype(self.code)
        except TypeError:
            raise RefusedPickleError(
                f"the dtype {self.code!r}, which is not a number type"
            ) from None
        if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype:
            raise RefusedPickleError(f"the dtype {self.code!r}, which is not a number type")
        if self.byteorder in ("<", ">"):
            dtype = dtype.newbyteorder("<" if self.byteorder == "<" else ">")
        elif self.byteorder not in ("|", "="):
            raise RefusedPickleError(f"the byte order {self.byteorder!r}")
        return dtype


class _PendingArray:
    """What ``_reconstruct`` returns: an array whose shape, dtype and bytes the state gives."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        # ndarray.__reduce__ state: (version, shape, dtype, is_fortran, raw bytes); version-less
        # states (very old NumPy) omit the first entry.
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise RefusedPickleError(f"an array state {_short(state)} that NumPy never writes")
        shape, dtype, is_fortran, raw = state
        self.array = _array(raw, dtype, shape, "F" if is_fortran else "C")


def _reconstruct(cls: object, shape: object, code: object) -> _PendingArray:
    if cls is not _NDArray:
        raise RefusedPickleError(f"_reconstruct of {_short(cls)}, not of numpy.ndarray")
    return _PendingArray()


def _frombuffer(raw: object, dtype: object, shape: object, order: object) -> np.ndarray:
    return _array(raw, dtype, shape, _text(order, "an array order"))


def _latin1(text: object, encoding: object = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedPickleError(f"_codecs.encode({_short(text)}, {_short(encoding)})")
    return text.encode("latin1")


def _empty_bytes(*args: object) -> bytes:
    if args:
        raise RefusedPickleError(f"bytes{_short(args)}")
    return b""


def _array(raw: object, dtype: object, shape: object, order: str) -> np.ndarray:
    """``raw`` read as an array of ``dtype`` and ``shape``, once all three agree."""
    if not isinstance(dtype, _DType):
        raise RefusedPickleError(f"an array whose dtype is {_short(dtype)}")
    resolved = dtype.resolve()
    if not isinstance(raw, bytes | bytearray):
        raise RefusedPickleError(f"an array whose data is {_short(raw)}, not bytes")
    if not isinstance(shape, tuple) or not all(
        isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in shape
    ):
        raise RefusedPickleError(f"an array of shape {_short(shape)}")
    if math.prod(shape) * resolved.itemsize != len(raw):
        raise RefusedPickleError(
            f"an array of shape {shape} and dtype {resolved} in {len(raw)} bytes"
        )
    if order not in ("C", "F"):
        raise RefusedPickleError(f"the array order {order!r}")
    return np.frombuffer(raw, dtype=resolved).reshape(shape, order="F" if order == "F" else "C")


#: ``(module, name)`` a CIFAR pickle may name -> the stand-in built instead.
_ADMITTED: dict[tuple[str, str], Callable[..., Any] | type] = {
    **{(module, "_reconstruct"): _reconstruct for module in _MULTIARRAY},
    **{(module, "_frombuffer"): _frombuffer for module in _NUMERIC},
    ("numpy", "ndarray"): _NDArray,
    ("numpy", "dtype"): _DType,
    ("_codecs", "encode"): _latin1,
    **{(module, "bytes"): _empty_bytes for module in ("builtins", "__builtin__")},
}


class CifarUnpickler(pickle.Unpickler):
    """Unpickles what the CIFAR format holds and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        stand_in = _ADMITTED.get((module, name))
        if stand_in is None:
            raise RefusedPickleError(
                f"it names {module}.{name}, which a CIFAR file never holds (refused, not called)"
            )
        return stand_in


def load_cifar_batch(file: BinaryIO) -> Any:
    """Unpickle one CIFAR batch from ``file`` (Python 2 strings read as ``bytes``).

    Returns:
        The file's object; NumPy arrays in a top-level dict are ``np.ndarray`` (read-only views
        of the file's bytes).

    Raises:
        RefusedPickleError: the pickle names anything but the format's array reconstruction.
        pickle.UnpicklingError, EOFError, ValueError, TypeError: the bytes are not a pickle.
    """
    content = CifarUnpickler(file, encoding="bytes").load()
    if isinstance(content, dict):
        content = {key: _finished(value) for key, value in content.items()}
    return content


def _finished(value: object) -> object:
    if isinstance(value, _PendingArray):
        if value.array is None:
            raise RefusedPickleError("an array without its data")
        return value.array
    return value


def _text(value: object, what: str) -> str:
    if isinstance(value, bytes):
        value = value.decode("latin1")
    if not isinstance(value, str):
        raise RefusedPickleError(f"{what} {_short(value)}")
    return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
