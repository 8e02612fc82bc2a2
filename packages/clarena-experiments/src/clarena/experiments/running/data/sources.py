"""Image sources as floats: the embedded scikit-learn digits and files from a local root.

Every source returns whole splits as tensors ``images (N, C, H, W)`` with values in ``[0, 1]``
and ``labels (N,)`` (int64), so the task sequences can permute, select and index them cheaply.
Nothing here downloads: the digits ship with scikit-learn, and MNIST / CIFAR are read from files
that must already be on disk, in their published layout (torchvision's), by the readers of
:mod:`~clarena.experiments.data.local_sources`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from clarena.experiments.running.data.local_sources import READERS
from clarena.experiments.running.data.splits import ImageSplits

__all__ = ["SOURCES", "SOURCE_NUM_CLASSES", "ImageSplits", "load_source"]

#: Source names accepted by :func:`load_source`.
SOURCES: tuple[str, ...] = ("digits", "mnist", "cifar10", "cifar100")

#: Number of classes of each source known before its files are read (TinyImageNet's come from
#: its ``wnids.txt``).
SOURCE_NUM_CLASSES: dict[str, int] = {
    "digits": 10,
    "mnist": 10,
    "fashion_mnist": 10,
    "cifar10": 10,
    "cifar100": 100,
    "svhn": 10,
}


def load_source(
    source: str,
    root: str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> ImageSplits:
    """Load ``source`` as tensors, resized to ``image_size`` and repeated to ``channels``.

    Args:
        source: one of :data:`SOURCES`. ``digits`` is scikit-learn's bundled 8x8 handwritten
            digits (1,797 images, 10 classes, offline); the others are read from their published
            files under ``root`` (see :data:`~clarena.experiments.data.local_sources.LAYOUTS`).
        root: directory holding the source's files (ignored for ``digits``).
        image_size: side of the square output images; ``None`` keeps the source size except for
            ``digits``, which is resized to 28 so the docs' ``input_dim: 784`` fits.
        channels: number of output channels; a 1-channel source is repeated to 3 when asked (for
            ResNets), a 3-channel source is averaged to 1.
        val_fraction: share of the training images held out for validation.
        test_fraction: share of the digits held out for testing (the file sources have their own
            test split).
        split_seed: seed of the random train / validation / test split.

    Raises:
        ValueError: unknown ``source`` or bad fractions.
        DatasetNotFoundError: the source's files are missing or malformed under ``root``.
    """
    if source not in SOURCES:
        raise ValueError(
            f"Unknown dataset source '{source}'; expected one of {', '.join(SOURCES)}."
        )
    if not 0 <= val_fraction < 1 or not 0 < test_fraction < 1:
        raise ValueError(
            f"val_fraction must be in [0, 1) and test_fraction in (0, 1); got {val_fraction} "
            f"and {test_fraction}."
        )
    generator = torch.Generator().manual_seed(split_seed)
    if source == "digits":
        images, labels = _load_digits()
        order = torch.randperm(len(labels), generator=generator)
        n_test = round(test_fraction * len(labels))
        test_index, rest = order[:n_test], order[n_test:]
        train_images, train_labels = images[rest], labels[rest]
        test_images, test_labels = images[test_index], labels[test_index]
        num_classes = 10
        image_size = 28 if image_size is None else image_size
    else:
        (train_images, train_labels), (test_images, test_labels), num_classes = _load_files(
            source, root
        )
    order = torch.randperm(len(train_labels), generator=generator)
    n_val = round(val_fraction * len(train_labels))
    val_index, train_index = order[:n_val], order[n_val:]

    def prepare(images: Tensor) -> Tensor:
        return _reshape(images, image_size, channels)

    return ImageSplits(
        train_images=prepare(train_images[train_index]),
        train_labels=train_labels[train_index],
        val_images=prepare(train_images[val_index]),
        val_labels=train_labels[val_index],
        test_images=prepare(test_images),
        test_labels=test_labels,
        num_classes=num_classes,
    )


def _load_digits() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    return images, labels


def _load_files(
    source: str, root: str | None
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor], int]:
    """``source``'s train and test splits read from ``root`` as floats in ``[0, 1]``.

    Read by :mod:`~clarena.experiments.data.local_sources` (the published layout, parsed without
    unpickling anything a file names).
    """
    train, test, num_classes = READERS[source](root)
    return (
        (train[0].float() / 255.0, train[1]),
        (test[0].float() / 255.0, test[1]),
        num_classes,
    )


def _reshape(images: Tensor, image_size: int | None, channels: int | None) -> Tensor:
    """Resize ``(N, C, H, W)`` images bilinearly to ``image_size`` and adapt the channels."""
    if image_size is not None and tuple(images.shape[-2:]) != (image_size, image_size):
        images = F.interpolate(
            images, size=(image_size, image_size), mode="bilinear", align_corners=False
        ).clamp_(0.0, 1.0)
    if channels is not None and channels != images.shape[1]:
        if images.shape[1] == 1:
            images = images.repeat(1, channels, 1, 1)
        elif channels == 1:
            images = images.mean(dim=1, keepdim=True)
        else:
            raise ValueError(
                f"Cannot turn {images.shape[1]}-channel images into {channels} channels; use "
                f"channels=1 or the source's own channel count."
            )
    return images.contiguous()
