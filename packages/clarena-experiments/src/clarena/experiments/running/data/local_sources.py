"""Image sources read from a local root in each dataset's published on-disk layout, as uint8.

Each reader returns the train and test splits as ``images (N, C, H, W)`` uint8 tensors and
``labels (N,)`` int64 tensors; :func:`load_local_source` holds out a validation share of the
training images (by reordering rows in place, without a copy) and resizes / channel-matches the
images in chunks, so a source never exists as float32 in memory. Conversion to float, the
augmentation and the normalisation happen per batch (:mod:`clarena.experiments.data.transforms`).

No reader runs anything a file names: CIFAR batches are unpickled by
:mod:`~clarena.experiments.data.cifar_pickle`, which admits only the format's own contents (a
crafted batch naming any other callable is refused before it is called); idx files are parsed
byte by byte, ``.mat`` files by SciPy's reader (plain arrays), JPEGs by Pillow.

Nothing here downloads and nothing needs torchvision: a missing or malformed root raises
:class:`~clarena.experiments.data.sources.DatasetNotFoundError` with one line naming the root,
the expected layout and where to get the files.
"""

from __future__ import annotations

import ctypes
import gzip
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from clarena.experiments.errors import DatasetNotFoundError
from clarena.experiments.running.data.cifar_pickle import RefusedPickleError, load_cifar_batch
from clarena.experiments.running.data.splits import ImageSplits

#: A split as ``(images (N, C, H, W) uint8, labels (N,) int64)``.
Split = tuple[Tensor, Tensor]

#: Expected layout under ``root`` and where to get the files, per source.
LAYOUTS: dict[str, tuple[str, str]] = {
    "mnist": (
        "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (or the four files in root)",
        "the four idx files of http://yann.lecun.com/exdb/mnist/ (or torchvision.datasets.MNIST"
        "(root, download=True) on a machine with internet)",
    ),
    "fashion_mnist": (
        "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (or the four files "
        "in root)",
        "https://github.com/zalandoresearch/fashion-mnist (data/fashion/*.gz)",
    ),
    "cifar10": (
        "cifar-10-batches-py/{data_batch_1..5,test_batch}",
        "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, extracted in root",
    ),
    "cifar100": (
        "cifar-100-python/{train,test}",
        "cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, extracted in "
        "root",
    ),
    "svhn": (
        "{train,test}_32x32.mat",
        "train_32x32.mat and test_32x32.mat (format 2) from http://ufldl.stanford.edu/housenumbers/",
    ),
    "tinyimagenet": (
        "tiny-imagenet-200/{wnids.txt,train/<wnid>/images/*.JPEG,val/images/*.JPEG,"
        "val/val_annotations.txt}",
        "tiny-imagenet-200.zip from http://cs231n.stanford.edu/tiny-imagenet-200.zip, extracted "
        "in root",
    ),
}

#: Source names accepted by :func:`load_local_source`.
LOCAL_SOURCES: tuple[str, ...] = tuple(LAYOUTS)

#: Rows moved or resized per chunk: small enough that the temporaries stay below glibc's mmap
#: threshold growth and never pile up as resident heap (4,096 CIFAR rows would be 12.6 MB).
_CHUNK = 512


def _missing(source: str, root: str | None, problem: str) -> DatasetNotFoundError:
    """One line: the problem (which names ``root``), the expected layout, where to get it."""
    layout, where = LAYOUTS[source]
    if str(root) not in problem:
        problem = f"{problem} under root '{root}'"
    return DatasetNotFoundError(
        f"Dataset '{source}': {problem}; expected <root>/{layout}; get "
        f"{where}. clarena never downloads data."
    )


def _root(source: str, root: str | None) -> Path:
    if root is None:
        raise _missing(source, root, "needs a local root, none given (set root=/path/to/data)")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise _missing(source, root, f"root '{root}' does not exist")
    return path


def _find(source: str, root: str | None, candidates: list[Path]) -> Path:
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise _missing(source, root, f"'{candidates[0].name}' is missing")


def _read_idx(source: str, root: str | None, path: Path, ndim: int) -> np.ndarray:
    """Read an idx file (MNIST format): magic ``0x00 0x00 0x08 ndim``, big-endian sizes, bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        data = file.read()
    if len(data) < 4 + 4 * ndim or data[:4] != bytes((0, 0, 8, ndim)):
        raise _missing(source, root, f"'{path.name}' is not an idx file of {ndim} dimensions")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise _missing(source, root, f"'{path.name}' is truncated")
    return body.reshape(shape)


def _read_idx_pair(source: str, root: str | None, prefix: str) -> Split:
    base = _root(source, root)
    folder = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[source]
    arrays = []
    for kind, ndim in ((f"{prefix}-images-idx3-ubyte", 3), (f"{prefix}-labels-idx1-ubyte", 1)):
        candidates = [
            directory / f"{kind}{suffix}"
            for directory in (base / folder / "raw", base)
            for suffix in ("", ".gz")
        ]
        arrays.append(_read_idx(source, root, _find(source, root, candidates), ndim))
    images, labels = arrays
    if len(images) != len(labels):
        raise _missing(source, root, f"the {prefix} images and labels differ in count")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def read_mnist(root: str | None, source: str = "mnist") -> tuple[Split, Split, int]:
    """MNIST (or Fashion-MNIST with ``source="fashion_mnist"``): 1x28x28, 10 classes."""
    return _read_idx_pair(source, root, "train"), _read_idx_pair(source, root, "t10k"), 10


def read_fashion_mnist(root: str | None) -> tuple[Split, Split, int]:
    """Fashion-MNIST: the MNIST idx format under ``FashionMNIST/raw``, 10 classes."""
    return read_mnist(root, source="fashion_mnist")


def _unpickle(source: str, root: str | None, path: Path) -> dict:
    try:
        with path.open("rb") as file:
            batch = load_cifar_batch(file)
    except RefusedPickleError as error:
        raise _missing(source, root, f"'{path.name}' is not a CIFAR pickle: {error}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise _missing(source, root, f"'{path.name}' is not a CIFAR pickle ({error})") from None
    if not isinstance(batch, dict) or b"data" not in batch:
        raise _missing(source, root, f"'{path.name}' holds no b'data' entry")
    return batch


def _cifar_split(source: str, root: str | None, paths: list[Path], label_key: bytes) -> Split:
    """Read CIFAR pickled batches of equal size into one preallocated uint8 tensor.

    One file at a time, so only one batch file is ever held twice.
    """
    images = labels = None
    for index, path in enumerate(paths):
        batch = _unpickle(source, root, path)
        data, batch_labels = batch[b"data"], batch.get(label_key)
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != 3 * 32 * 32
            or not isinstance(batch_labels, list | np.ndarray)
            or len(batch_labels) != len(data)
            or not all(isinstance(label, int | np.integer) for label in batch_labels)
        ):
            raise _missing(
                source, root, f"'{path.name}' is not a {source} batch (uint8 N x 3072, N labels)"
            )
        count = len(data)
        if images is None:
            images = torch.empty((count * len(paths), 3, 32, 32), dtype=torch.uint8)
            labels = torch.empty(count * len(paths), dtype=torch.int64)
        elif count * len(paths) != len(labels):
            raise _missing(source, root, f"'{path.name}' holds {count} images, unlike the others")
        rows = slice(index * count, (index + 1) * count)
        # Copied through NumPy: ``data`` is a read-only view of the file's bytes.
        images.numpy()[rows] = data.reshape(count, 3, 32, 32)
        labels.numpy()[rows] = np.array(batch_labels, dtype=np.int64)
        del batch, data, batch_labels
    return images, labels


def read_cifar10(root: str | None) -> tuple[Split, Split, int]:
    """CIFAR-10 python batches: 3x32x32, 10 classes."""
    folder = _root("cifar10", root) / "cifar-10-batches-py"
    train = [folder / f"data_batch_{i}" for i in range(1, 6)]
    test = [folder / "test_batch"]
    for path in [*train, *test]:
        _find("cifar10", root, [path])
    return (
        _cifar_split("cifar10", root, train, b"labels"),
        _cifar_split("cifar10", root, test, b"labels"),
        10,
    )


def read_cifar100(root: str | None) -> tuple[Split, Split, int]:
    """CIFAR-100 python files: 3x32x32, 100 fine classes."""
    folder = _root("cifar100", root) / "cifar-100-python"
    train, test = folder / "train", folder / "test"
    for path in (train, test):
        _find("cifar100", root, [path])
    return (
        _cifar_split("cifar100", root, [train], b"fine_labels"),
        _cifar_split("cifar100", root, [test], b"fine_labels"),
        100,
    )


def read_svhn(root: str | None) -> tuple[Split, Split, int]:
    """SVHN cropped digits (format 2 ``.mat``): 3x32x32, 10 classes (label 10 is digit 0)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    base = _root("svhn", root)
    splits = []
    for name in ("train", "test"):
        path = _find("svhn", root, [base / f"{name}_32x32.mat"])
        try:
            content = loadmat(path)
        except (MatReadError, ValueError, OSError, TypeError) as error:
            raise _missing("svhn", root, f"'{path.name}' is not a .mat file ({error})") from None
        images, labels = content.get("X"), content.get("y")
        if (
            not isinstance(images, np.ndarray)
            or not isinstance(labels, np.ndarray)
            or images.dtype != np.uint8
            or labels.dtype.kind not in "iu"
            or images.ndim != 4
            or images.shape[:3] != (32, 32, 3)
        ):
            raise _missing("svhn", root, f"'{path.name}' holds no X (uint8, 32x32x3xN) and y")
        tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(3, 2, 0, 1), np.uint8))
        splits.append((tensor, torch.from_numpy(labels.reshape(-1).astype(np.int64) % 10)))
    return splits[0], splits[1], 10


def _read_jpegs(root: str | None, paths: list[Path]) -> Tensor:
    from PIL import Image

    images = torch.empty((len(paths), 3, 64, 64), dtype=torch.uint8)
    for index, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.uint8)
        except (OSError, ValueError) as error:
            problem = f"'{path.name}' is not a readable image ({error})"
            raise _missing("tinyimagenet", root, problem) from None
        images[index] = torch.from_numpy(array.copy()).permute(2, 0, 1)
    return images


def read_tinyimagenet(root: str | None) -> tuple[Split, Split, int]:
    """Tiny ImageNet: 3x64x64, 200 classes; its labelled ``val`` folder serves as the test split.

    Class ``k`` is the ``k``-th wnid of ``wnids.txt``.
    """
    source = "tinyimagenet"
    base = _root(source, root) / "tiny-imagenet-200"
    wnids_path = _find(source, root, [base / "wnids.txt"])
    annotations_path = _find(source, root, [base / "val" / "val_annotations.txt"])
    wnids = [line.strip() for line in wnids_path.read_text().splitlines() if line.strip()]
    index = {wnid: k for k, wnid in enumerate(wnids)}
    train_paths, train_labels = [], []
    for wnid in wnids:
        files = sorted((base / "train" / wnid / "images").glob("*.JPEG"))
        if not files:
            raise _missing(source, root, f"no train/{wnid}/images/*.JPEG")
        train_paths += files
        train_labels += [index[wnid]] * len(files)
    test_paths, test_labels = [], []
    for line in annotations_path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise _missing(source, root, f"val_annotations.txt has a bad line {line!r}")
        path = base / "val" / "images" / fields[0]
        if not path.is_file():
            raise _missing(source, root, f"'val/images/{fields[0]}' is missing")
        test_paths.append(path)
        test_labels.append(index[fields[1]])
    return (
        (_read_jpegs(root, train_paths), torch.tensor(train_labels, dtype=torch.int64)),
        (_read_jpegs(root, test_paths), torch.tensor(test_labels, dtype=torch.int64)),
        len(wnids),
    )


#: Source name -> reader of its train and test splits ``(images uint8, labels)``, classes.
READERS: dict[str, Callable[[str | None], tuple[Split, Split, int]]] = {
    "mnist": read_mnist,
    "fashion_mnist": read_fashion_mnist,
    "cifar10": read_cifar10,
    "cifar100": read_cifar100,
    "svhn": read_svhn,
    "tinyimagenet": read_tinyimagenet,
}


def load_local_source(
    source: str,
    root: str | None,
    image_size: int | None = None,
    channels: int | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
) -> ImageSplits:
    """Read ``source`` from ``root`` as uint8 splits, resized and channel-matched.

    Args:
        source: one of :data:`LOCAL_SOURCES`.
        root: directory holding the source in its published layout (see :data:`LAYOUTS`).
        image_size: side of the square output images; ``None`` keeps the source's size.
        channels: output channels; a 1-channel source is repeated, a 3-channel one averaged to 1.
        val_fraction: share of the training images held out for validation.
        split_seed: seed of the train / validation split.

    Returns:
        :class:`ImageSplits` whose images are uint8 ``(N, C, H, W)``; the train and validation
        images are two views of one tensor (no copy).

    Raises:
        ValueError: unknown ``source`` or bad ``val_fraction``.
        DatasetNotFoundError: ``root`` is missing, or its files are missing or malformed.
    """
    if source not in READERS:
        raise ValueError(
            f"Unknown local dataset source '{source}'; expected one of {', '.join(LOCAL_SOURCES)}."
        )
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}.")
    (train_images, train_labels), (test_images, test_labels), num_classes = READERS[source](root)
    n_val = round(val_fraction * len(train_labels))
    generator = torch.Generator().manual_seed(split_seed)
    val_rows = torch.randperm(len(train_labels), generator=generator)[:n_val]
    _move_rows_to_end(train_images, train_labels, val_rows)
    train_images = reshape_uint8(train_images, image_size, channels)
    test_images = reshape_uint8(test_images, image_size, channels)
    n_train = len(train_labels) - n_val
    _release_freed_memory()
    return ImageSplits(
        train_images=train_images[:n_train],
        train_labels=train_labels[:n_train],
        val_images=train_images[n_train:],
        val_labels=train_labels[n_train:],
        test_images=test_images,
        test_labels=test_labels,
        num_classes=num_classes,
    )


def _release_freed_memory() -> None:
    """Hand the file buffers freed after reading back to the OS (glibc ``malloc_trim``).

    glibc raises its mmap threshold after the first large free, so later reading buffers land
    on the heap and would stay resident after they are freed; elsewhere this does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _move_rows_to_end(images: Tensor, labels: Tensor, rows: Tensor) -> None:
    """Reorder ``images`` and ``labels`` in place so ``rows`` end up as the last ``len(rows)``.

    Val rows among the head are swapped with train rows among the tail, a chunk at a time, so
    the split costs no second copy of the images.
    """
    total, count = len(labels), len(rows)
    is_moved = torch.zeros(total, dtype=torch.bool)
    is_moved[rows] = True
    head = torch.nonzero(is_moved[: total - count]).flatten()
    tail = torch.nonzero(~is_moved[total - count :]).flatten() + (total - count)
    for start in range(0, len(head), _CHUNK):
        a, b = head[start : start + _CHUNK], tail[start : start + _CHUNK]
        for tensor in (images, labels):
            kept = tensor[a].clone()
            tensor[a] = tensor[b]
            tensor[b] = kept


def reshape_uint8(images: Tensor, image_size: int | None, channels: int | None) -> Tensor:
    """Resize uint8 ``(N, C, H, W)`` images bilinearly and adapt channels, in chunks.

    Returns ``images`` itself when nothing changes; otherwise a new uint8 tensor (rounded).
    """
    size = images.shape[-1] if image_size is None else image_size
    out_channels = images.shape[1] if channels is None else channels
    if images.shape[1] != out_channels and images.shape[1] != 1 and out_channels != 1:
        raise ValueError(
            f"Cannot turn {images.shape[1]}-channel images into {out_channels} channels; use "
            f"channels=1 or the source's own channel count."
        )
    if tuple(images.shape[1:]) == (out_channels, size, size):
        return images
    out = torch.empty((len(images), out_channels, size, size), dtype=torch.uint8)
    for start in range(0, len(images), _CHUNK):
        chunk = images[start : start + _CHUNK].float()
        if tuple(chunk.shape[-2:]) != (size, size):
            chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False)
        if chunk.shape[1] == 1 and out_channels > 1:
            chunk = chunk.expand(-1, out_channels, -1, -1)
        elif out_channels == 1 and chunk.shape[1] > 1:
            chunk = chunk.mean(dim=1, keepdim=True)
        out[start : start + _CHUNK] = chunk.round().clamp_(0, 255).to(torch.uint8)
    return out
