"""The splits of one image source: what every source loader returns."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class ImageSplits:
    """Images and labels of a source, split into train / validation / test.

    Attributes:
        train_images, val_images, test_images: ``(N, C, H, W)`` float tensors in ``[0, 1]``.
        train_labels, val_labels, test_labels: ``(N,)`` int64 class indices.
        num_classes: number of classes of the source.
    """

    train_images: Tensor
    train_labels: Tensor
    val_images: Tensor
    val_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int
