"""Lightning callbacks of clarena."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override


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
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(total) + "\n")
