"""CIFAR batches are read without running anything a file names.

A crafted batch under a dataset root is refused with one line, and its payload (creating a
marker file) never runs; batches in the published format, Python 2 pickles included, still
load to the arrays ``pickle`` gives.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from clarena.experiments.running.data import DatasetNotFoundError, load_local_source
from clarena.experiments.running.data.cifar_pickle import RefusedPickleError, load_cifar_batch
from clarena.experiments.running.data.synthetic_files import write_synthetic_files


class _Call:
    """Pickles as ``function(*args)``: what a crafted batch would run on loading."""

    def __init__(self, function: Any, *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.function, self.args


def _payloads(marker: Path) -> dict[str, Any]:
    import builtins
    import subprocess

    return {
        "posix.system": _Call(os.system, f"touch {marker}"),
        "posix.mkdir": _Call(os.mkdir, str(marker)),
        "builtins.exec": _Call(builtins.exec, f"open({str(marker)!r}, 'w')"),
        "subprocess.Popen": _Call(subprocess.Popen, ["touch", str(marker)]),
        # A NumPy callable outside the format: np.save would write the marker.
        "numpy.save": _Call(np.save, str(marker), np.zeros(1)),
    }


@pytest.mark.parametrize("name", sorted(_payloads(Path("x"))))
def test_a_crafted_cifar_batch_is_refused_and_its_payload_never_runs(
    tmp_path: Path, name: str
) -> None:
    root = write_synthetic_files("cifar10", tmp_path / "data", train_count=20, test_count=10)
    marker = tmp_path / "pwned"
    batch_path = root / "cifar-10-batches-py" / "data_batch_3"
    batch = {b"data": _payloads(marker)[name], b"labels": [0, 1]}
    batch_path.write_bytes(pickle.dumps(batch, protocol=4))
    with pytest.raises(DatasetNotFoundError) as error:
        load_local_source("cifar10", str(root))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        f"Dataset 'cifar10': 'data_batch_3' is not a CIFAR pickle: it names {name}, which a "
        f"CIFAR file never holds (refused, not called) under root '{root}'"
    )
    assert not marker.exists()


def _pickle(obj: Any, protocol: int = 2) -> bytes:
    return pickle.dumps(obj, protocol=protocol)


def _reconstructed(shape: Any, dtype: Any, raw: Any) -> _Call:
    """An ndarray's own protocol-2 reduction, with ``shape``, ``dtype`` and ``raw`` chosen."""

    class State:
        def __reduce__(self) -> Any:
            return (
                np._core.multiarray._reconstruct,
                (np.ndarray, (0,), b"b"),
                (
                    1,
                    shape,
                    dtype,
                    False,
                    raw,
                ),
            )

    return State()  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            _reconstructed((2, 3072), np.dtype("u1"), b"x" * 10),
            "an array of shape (2, 3072) and dtype uint8 in 10 bytes",
        ),
        (_reconstructed((2,), np.dtype("O"), [1, 2]), "the dtype 'O8', which is not a number type"),
        (_reconstructed((-1,), np.dtype("u1"), b""), "an array of shape (-1,)"),
        (_reconstructed((1,), np.dtype("u1"), "x"), "an array whose data is 'x', not bytes"),
    ],
)
def test_array_reconstruction_is_checked_before_any_array_exists(value: Any, message: str) -> None:
    with pytest.raises(RefusedPickleError, match=None) as error:
        load_cifar_batch(io.BytesIO(_pickle({b"data": value})))
    assert str(error.value) == message


def _python2_pickle(batch: dict[bytes, Any]) -> bytes:
    """``batch`` pickled as Python 2 with NumPy 1.x wrote the published CIFAR files.

    Byte strings are Python 2 ``str`` (BINSTRING opcodes) and arrays name
    ``numpy.core.multiarray._reconstruct``.
    """

    class Python2Pickler(pickle._Pickler):  # type: ignore[name-defined,misc]
        dispatch: ClassVar[dict[type, Any]] = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

        def save_str_bytes(self, obj: bytes) -> None:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
            self.memoize(obj)

        dispatch[bytes] = save_str_bytes

    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(batch)
    raw = buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"_codecs" not in raw
    assert b"numpy.core.multiarray\n_reconstruct" in raw
    return raw


@pytest.mark.parametrize("kind", ["python2", "protocol2", "protocol5"])
def test_published_cifar_batches_load_as_pickle_reads_them(kind: str) -> None:
    rng = np.random.default_rng(0)
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [3, 1, 4],
        b"data": rng.integers(0, 256, size=(3, 3072), dtype=np.uint8),
        b"filenames": [b"a.png", b"b.png", b"c.png"],
    }
    raw = {
        "python2": _python2_pickle,
        "protocol2": lambda b: _pickle(b, 2),
        "protocol5": lambda b: _pickle(b, 5),
    }[kind](batch)
    read = load_cifar_batch(io.BytesIO(raw))
    reference = pickle.loads(raw, encoding="bytes")
    assert read.keys() == reference.keys() == batch.keys()
    for key in batch:
        if isinstance(batch[key], np.ndarray):
            assert read[key].dtype == reference[key].dtype == np.uint8
            assert np.array_equal(read[key], reference[key])
        else:
            assert read[key] == reference[key] == batch[key]


def test_python2_cifar_files_load_through_the_reader(tmp_path: Path) -> None:
    root = write_synthetic_files("cifar100", tmp_path, train_count=30, test_count=10)
    folder = root / "cifar-100-python"
    for name in ("train", "test"):
        batch = pickle.loads((folder / name).read_bytes(), encoding="bytes")
        batch[b"coarse_labels"] = [label // 5 for label in batch[b"fine_labels"]]
        (folder / name).write_bytes(_python2_pickle(batch))
    splits = load_local_source("cifar100", str(root), val_fraction=0.0)
    test = pickle.loads((folder / "test").read_bytes(), encoding="bytes")
    assert torch.equal(
        splits.test_images, torch.from_numpy(test[b"data"].copy()).view(10, 3, 32, 32)
    )
    assert splits.test_labels.tolist() == test[b"fine_labels"]
