"""Per-batch image conversion: uint8 to float, augmentation, normalisation.

Sources hold images as uint8 (a quarter of float32's memory); :class:`BatchTransform` is the
loaders' ``collate_fn``, so each batch is stacked, scaled to ``[0, 1]``, augmented (training
loaders only) and normalised where it is loaded, in the main process or a worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import default_collate


class BatchTransform:
    """Collate samples ``(image, label[, task_id])`` and transform the stacked images.

    Args:
        mean: per-channel mean subtracted after scaling to ``[0, 1]`` (``None``: none).
        std: per-channel standard deviation divided by (``None``: none).
        crop_padding: pad each image by this many zero pixels per side and crop it back at a
            random offset (0: no random crop).
        horizontal_flip: flip each image left-right with probability 0.5.

    Images ``(B, C, H, W)`` come out as float32; uint8 images are divided by 255 first, float
    images are taken as already in ``[0, 1]``.
    """

    def __init__(
        self,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        crop_padding: int = 0,
        horizontal_flip: bool = False,
    ) -> None:
        if (mean is None) != (std is None):
            raise ValueError(f"Give both normalisation mean and std or neither; got {mean}, {std}.")
        if std is not None and any(value <= 0 for value in std):
            raise ValueError(f"Normalisation std must be positive; got {list(std)}.")
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0; got {crop_padding}.")
        self.mean = None if mean is None else torch.tensor(list(mean)).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(list(std)).view(1, -1, 1, 1)
        self.crop_padding = crop_padding
        self.horizontal_flip = horizontal_flip

    def __call__(self, samples: list[Any]) -> Any:
        batch = default_collate(samples)
        return [self.images(batch[0]), *batch[1:]]

    def images(self, images: Tensor) -> Tensor:
        """Turn a batch ``(B, C, H, W)`` of uint8 or float images into transformed float32."""
        images = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        if self.crop_padding:
            images = random_crop(images, self.crop_padding)
        if self.horizontal_flip:
            flip = torch.rand(len(images)) < 0.5
            images[flip] = images[flip].flip(-1)
        if self.mean is not None and self.std is not None:
            if self.mean.numel() not in (1, images.shape[1]):
                raise ValueError(
                    f"Normalisation has {self.mean.numel()} channel values for "
                    f"{images.shape[1]}-channel images."
                )
            images = (images - self.mean) / self.std
        return images


def random_crop(images: Tensor, padding: int) -> Tensor:
    """Zero-pad ``(B, C, H, W)`` images by ``padding`` and crop each at its own random offset."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (batch, 1))
    left = torch.randint(0, 2 * padding + 1, (batch, 1))
    rows = (top + torch.arange(height)).unsqueeze(2)
    cols = (left + torch.arange(width)).unsqueeze(1)
    # Advanced indexing gives (B, H, W, C); move channels back.
    cropped = padded.permute(0, 2, 3, 1)[torch.arange(batch).view(-1, 1, 1), rows, cols]
    return cropped.permute(0, 3, 1, 2).contiguous()
