"""Save the first training batch of each task as an image grid (upstream's SaveFirstBatchImages)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override


class SaveFirstBatchImages(Callback):
    """Write ``<save_dir>/task_<id>.png``: the first training batch of each fit, as fed.

    The images are the batch the model sees (after clarena's per-batch conversion and
    normalisation), each min-max scaled for display, with their labels as titles.

    Args:
        save_dir: folder of the PNG files (created when needed).
        max_images: at most this many images of the batch are drawn.
    """

    def __init__(self, save_dir: str, max_images: int = 32) -> None:
        self.save_dir = Path(save_dir)
        self.max_images = max_images
        self._saved: set[str] = set()

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        task = str(getattr(pl_module, "task_id", None) or "all")
        if batch_idx != 0 or task in self._saved or not trainer.is_global_zero:
            return
        self._saved.add(task)
        images, labels = batch[0][: self.max_images], batch[1][: self.max_images]
        self.save_dir.mkdir(parents=True, exist_ok=True)
        columns = min(8, len(images))
        rows = -(-len(images) // columns)
        figure, axes = plt.subplots(rows, columns, figsize=(columns, rows * 1.15), squeeze=False)
        for index, axis in enumerate(axes.flat):
            axis.axis("off")
            if index >= len(images):
                continue
            image = images[index].detach().float().cpu()
            image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-12)
            shown = image[0] if image.shape[0] == 1 else torch.movedim(image, 0, -1)
            axis.imshow(shown.numpy(), cmap="gray" if image.shape[0] == 1 else None)
            axis.set_title(str(int(labels[index])), fontsize=7)
        figure.tight_layout()
        figure.savefig(self.save_dir / f"task_{task}.png", dpi=80)
        plt.close(figure)
