"""Lightning callbacks of clarena."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import (
    BatchesProcessedColumn,
    CustomBarColumn,
)
from rich.progress import TextColumn
from typing_extensions import override

from clarena.experiments.runs.run_dir import write_text


class StepTimer(Callback):
    """Measure the wall time spent inside training steps (forward, backward, optimiser step).

    The running total over every fit of the run (one per task) is kept in
    ``<default_root_dir>/results/step_time.json`` as ``{"training_step_seconds": ...,
    "training_steps": ...}``, so a benchmark can compare it with the run's wall time.
    """

    def __init__(self) -> None:
        self._start = 0.0
        self.seconds = 0.0
        self.steps = 0

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._start = time.perf_counter()

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.seconds += time.perf_counter() - self._start
        self.steps += 1

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        path = Path(trainer.default_root_dir) / "results" / "step_time.json"
        total = {"training_step_seconds": 0.0, "training_steps": 0}
        if path.is_file():
            total = json.loads(path.read_text())
        total["training_step_seconds"] += self.seconds
        total["training_steps"] += self.steps
        write_text(path, json.dumps(total) + "\n")


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar in 80 columns: ``Task 2 epoch 3/5``, a short bar, batches
    done, then ``loss``, ``acc`` and ``val_acc`` (no logger version ``v_num``).

    Epochs count from 1 to ``max_epochs`` (Lightning's own bar shows the 0-based epoch index
    against ``max_epochs - 1``).

    Logged names such as ``task_2/train/loss`` are shown by their last parts (``loss``,
    ``val_acc``); the full names stay in the loggers.
    """

    @override
    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return {short_metric_name(name): value for name, value in metrics.items()}

    @override
    def _get_train_description(self, current_epoch: int) -> str:
        description = f"epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            description += f"/{self.trainer.max_epochs}"
        task_id = getattr(self.trainer.lightning_module, "task_id", None)
        if isinstance(task_id, int):
            return f"Task {task_id} {description}"
        return description[0].upper() + description[1:]

    @override
    def configure_columns(self, trainer: Trainer) -> list:
        return [
            TextColumn("[progress.description]{task.description}"),
            CustomBarColumn(
                bar_width=10,
                complete_style=self.theme.progress_bar,
                finished_style=self.theme.progress_bar_finished,
                pulse_style=self.theme.progress_bar_pulse,
            ),
            BatchesProcessedColumn(style=self.theme.batch_progress),
        ]


def short_metric_name(name: str) -> str:
    """``task_2/train/loss`` -> ``loss``, ``task_2/val/acc`` -> ``val_acc``, ``val/acc`` -> ``val_acc``."""
    parts = [
        part
        for part in name.split("/")
        if part != "train" and not (part.startswith("task_") and part[5:].isdigit())
    ]
    return "_".join(parts) or name
