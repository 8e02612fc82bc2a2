"""Command-line overrides that turn any experiment into a quick smoke run, for tests.

Tests of your own algorithm, data module or config group can run a whole experiment in seconds::

    from clarena.experiments import cli
    from clarena.experiments.testing import quick_run_overrides

    cli.main(["experiment=my_experiment", *quick_run_overrides(train_tasks=2)])
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Trainer

#: Overrides that turn off everything an experiment writes besides its results.
QUIET_OUTPUT_OVERRIDES: tuple[str, ...] = (
    "lightning_loggers=none",
    "callbacks=none",
    "metrics.accuracy_matrix_plot=null",
    "metrics.average_accuracy_plot=null",
)


def quick_run_overrides(
    train_tasks: int | None = None,
    *,
    max_epochs: int | None = 1,
    train_batches: int | None = 3,
    val_batches: int | None = 1,
    save_model: bool | None = False,
) -> tuple[str, ...]:
    """Hydra overrides for a quick run: few tasks, epochs and batches, no loggers or plots.

    Args:
        train_tasks: how many tasks to train (first in the tuple, so ``overrides[1:]`` drops it);
            ``None`` keeps the experiment's own.
        max_epochs: epochs per task; ``None`` keeps the experiment's own.
        train_batches: training batches per epoch (``trainer.limit_train_batches``); ``None``
            trains on every batch.
        val_batches: validation batches per epoch; ``None`` validates on every batch.
        save_model: ``save_model=`` of the run; ``None`` keeps the experiment's own.

    Returns:
        The overrides, to pass after ``experiment=...`` on the command line or to
        :func:`clarena.experiments.cli.main`.
    """
    overrides: list[str] = []
    if train_tasks is not None:
        overrides.append(f"train_tasks={train_tasks}")
    if max_epochs is not None:
        overrides.append(f"trainer.max_epochs={max_epochs}")
    if train_batches is not None:
        overrides.append(f"+trainer.limit_train_batches={train_batches}")
    if val_batches is not None:
        overrides.append(f"+trainer.limit_val_batches={val_batches}")
    overrides.extend(QUIET_OUTPUT_OVERRIDES[:2])
    if save_model is not None:
        overrides.append(f"save_model={str(save_model).lower()}")
    overrides.extend(QUIET_OUTPUT_OVERRIDES[2:])
    return tuple(overrides)


def quiet_trainer(**options: Any) -> Trainer:
    """A Lightning ``Trainer`` that writes and prints nothing, for fitting algorithms in tests.

    Defaults: one CPU device, no logger, checkpoints, progress bar, model summary or sanity
    validation; ``options`` (any ``Trainer`` argument) override them.
    """
    settings: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    return Trainer(**(settings | options))
