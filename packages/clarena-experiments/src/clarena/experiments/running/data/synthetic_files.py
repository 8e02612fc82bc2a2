"""Write random images in a source's real on-disk format, to smoke-test configs and readers.

``write_synthetic_files("cifar100", root, train_count=200)`` lays out ``root`` exactly as the
published files would (idx files for MNIST, pickled batches for CIFAR, ``.mat`` for SVHN, the
JPEG folder tree for Tiny ImageNet), so a config can run end to end before the real files are
at hand. The images are noise: accuracies mean nothing.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from clarena.experiments.running.data.local_sources import LOCAL_SOURCES

#: Classes, channels and image side of each source.
SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (10, 1, 28),
    "fashion_mnist": (10, 1, 28),
    "cifar10": (10, 3, 32),
    "cifar100": (100, 3, 32),
    "svhn": (10, 3, 32),
    "tinyimagenet": (200, 3, 64),
}


def write_synthetic_files(
    source: str,
    root: str | Path,
    train_count: int = 100,
    test_count: int = 50,
    seed: int = 0,
    num_classes: int | None = None,
) -> Path:
    """Write ``train_count`` / ``test_count`` random images of ``source`` under ``root``.

    Labels cycle through the classes, so every class appears once the counts reach
    ``num_classes`` (default: the source's). Tiny ImageNet writes ``train_count`` images per
    class. Returns ``root``.
    """
    if source not in SHAPES:
        raise ValueError(f"Unknown source '{source}'; expected one of {', '.join(LOCAL_SOURCES)}.")
    classes, channels, side = SHAPES[source]
    classes = classes if num_classes is None else num_classes
    rng = np.random.default_rng(seed)
    root = Path(root)

    def images(count: int) -> np.ndarray:
        return rng.integers(0, 256, size=(count, channels, side, side), dtype=np.uint8)

    def labels(count: int) -> np.ndarray:
        return np.arange(count) % classes

    if source in ("mnist", "fashion_mnist"):
        raw = root / ("MNIST" if source == "mnist" else "FashionMNIST") / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for prefix, count in (("train", train_count), ("t10k", test_count)):
            _write_idx(raw / f"{prefix}-images-idx3-ubyte", images(count)[:, 0])
            _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels(count).astype(np.uint8))
    elif source == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        per_batch = -(-train_count // 5)
        for index in range(1, 6):
            _write_cifar(folder / f"data_batch_{index}", images(per_batch), labels(per_batch))
        _write_cifar(folder / "test_batch", images(test_count), labels(test_count))
    elif source == "cifar100":
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for name, count in (("train", train_count), ("test", test_count)):
            _write_cifar(folder / name, images(count), labels(count), b"fine_labels")
    elif source == "svhn":
        from scipy.io import savemat

        root.mkdir(parents=True, exist_ok=True)
        for name, count in (("train", train_count), ("test", test_count)):
            digits = labels(count)
            savemat(
                root / f"{name}_32x32.mat",
                {
                    "X": images(count).transpose(2, 3, 1, 0),
                    "y": np.where(digits == 0, 10, digits).reshape(-1, 1).astype(np.uint8),
                },
            )
    else:
        _write_tinyimagenet(root / "tiny-imagenet-200", classes, train_count, test_count, images)
    return root


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes((0, 0, 8, array.ndim)) + b"".join(
        int(size).to_bytes(4, "big") for size in array.shape
    )
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _write_cifar(
    path: Path, images: np.ndarray, labels: np.ndarray, label_key: bytes = b"labels"
) -> None:
    # Protocol 2 with bytes keys, like the published Python-2 pickles.
    batch = {b"data": images.reshape(len(images), -1), label_key: labels.tolist()}
    with path.open("wb") as file:
        pickle.dump(batch, file, protocol=2)


def _write_tinyimagenet(folder: Path, classes: int, per_class: int, test_count: int, images):
    from PIL import Image

    wnids = [f"n{index:08d}" for index in range(classes)]
    (folder / "val" / "images").mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(f"{wnid}\n" for wnid in wnids))

    def save(array: np.ndarray, path: Path) -> None:
        Image.fromarray(array.transpose(1, 2, 0)).save(path, format="JPEG", quality=95)

    for wnid in wnids:
        directory = folder / "train" / wnid / "images"
        directory.mkdir(parents=True, exist_ok=True)
        for index, array in enumerate(images(per_class)):
            save(array, directory / f"{wnid}_{index}.JPEG")
    lines = []
    for index, array in enumerate(images(test_count)):
        name = f"val_{index}.JPEG"
        save(array, folder / "val" / "images" / name)
        lines.append(f"{name}\t{wnids[index % classes]}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
