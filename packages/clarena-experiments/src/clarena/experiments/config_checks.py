"""Checks of an experiment config that need no object built: run once before anything else.

Values that belong to an object (an algorithm's hyperparameters, a dataset's split) are checked
by that object's constructor, so plain-Python users get the same errors; the pipelines build
those objects before the first ``trainer.fit``. What is left here is what no clarena object
owns: Lightning's ``trainer`` settings and the pipelines' own keys (task lists, and the boolean
keys, read by :mod:`clarena.experiments.booleans`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig
from torch import nn

from clarena.experiments.booleans import check_boolean_keys
from clarena.experiments.errors import PipelineConfigError

#: Pipelines that train (and so need a finite, positive training length).
TRAINING_PIPELINES: tuple[str, ...] = ("CL_MAIN_EXPR", "MTL_EXPR", "STL_EXPR")

#: Lightning's spellings of fp16 mixed precision (``16`` and ``"16"`` are its aliases).
FP16_MIXED: tuple[str, ...] = ("16-mixed", "16")

#: The largest seed NumPy (and so ``seed_everything``) accepts.
MAX_SEED = 2**32 - 1

#: Task-list keys each pipeline reads.
TASK_LIST_KEYS: dict[str, tuple[str, ...]] = {
    "CL_MAIN_EXPR": ("train_tasks",),
    "CL_MAIN_EVAL": ("eval_tasks",),
}


def check_experiment_config(cfg: DictConfig) -> None:
    """Refuse a config the pipeline ``cfg.pipeline`` cannot run to a meaningful end.

    Raises:
        PipelineConfigError: a bad training length, task list or boolean key (the message names
            the key).
    """
    pipeline = cfg.get("pipeline")
    check_seed_and_threads(cfg)
    check_boolean_keys(cfg)
    if cfg.get("trainer") is not None:
        check_precision(cfg.trainer)
    if pipeline in TRAINING_PIPELINES and cfg.get("trainer") is not None:
        check_training_length(cfg.trainer)
    for key in TASK_LIST_KEYS.get(pipeline, ()):
        value = cfg.get(key)
        if value is not None:
            task_list(value, None, key)


def check_seed_and_threads(cfg: DictConfig) -> None:
    """``global_seed`` an integer in NumPy's seed range, ``num_threads`` null or a count >= 1.

    Lightning's ``seed_everything`` would replace an out-of-range seed by 0 with only a warning,
    and ``torch.set_num_threads`` refuses a count < 1 with a message naming no key.

    Raises:
        PipelineConfigError: naming the key, the value given and the fix.
    """
    seed = cfg.get("global_seed", 0)
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise PipelineConfigError(
            f"global_seed must be an integer from 0 to {MAX_SEED}; got {seed!r}. Set "
            f"global_seed=1 (or another integer in that range)."
        )
    threads = cfg.get("num_threads")
    if threads is not None and (not _is_int(threads) or threads < 1):
        raise PipelineConfigError(
            f"num_threads must be null (torch's default) or a number of threads >= 1; got "
            f"{threads!r}. Set num_threads=1, or num_threads=null."
        )


def check_training_length(trainer: DictConfig) -> None:
    """``trainer.max_epochs`` a positive integer (or unset), ``trainer.max_steps`` -1 or positive.

    Lightning reads ``max_epochs=-1`` as "train forever" (a CL run would never end) and
    ``max_epochs=0`` as "train nothing" (chance results written as if trained).
    """
    max_epochs = trainer.get("max_epochs")
    if max_epochs is not None and (not _is_int(max_epochs) or max_epochs < 1):
        raise PipelineConfigError(
            f"trainer.max_epochs must be a positive number of epochs (per task in CL); got "
            f"{max_epochs!r}. "
            + (
                "-1 would train forever, so the run would never end. "
                if max_epochs == -1
                else "0 would train nothing and report untrained accuracies. "
                if max_epochs == 0
                else ""
            )
            + "Set trainer.max_epochs=5 (or any count >= 1)."
        )
    max_steps = trainer.get("max_steps")
    if max_steps is not None and (not _is_int(max_steps) or (max_steps != -1 and max_steps < 1)):
        raise PipelineConfigError(
            f"trainer.max_steps must be -1 (no step limit) or a positive number of steps; got "
            f"{max_steps!r}."
        )


def check_precision(trainer: DictConfig) -> None:
    """``trainer.precision=16-mixed`` only where Lightning runs fp16 AMP: on CUDA.

    On a CPU accelerator Lightning does not refuse 16-mixed: it warns and trains in
    ``bf16-mixed`` instead, so a run asked for fp16 would report bf16 results.
    """
    precision = trainer.get("precision")
    if str(precision) not in FP16_MIXED:
        return
    accelerator = str(trainer.get("accelerator") or "auto")
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        raise PipelineConfigError(
            f"trainer.precision={precision} (fp16 mixed precision) needs a CUDA GPU, but the "
            f"trainer runs on the CPU (trainer.accelerator={accelerator}); Lightning would "
            f"silently train in bf16-mixed instead. Use trainer.precision=bf16-mixed on the CPU, "
            f"or trainer=gpu."
        )


def check_optimizer_builds(
    optimizer: Callable[..., torch.optim.Optimizer] | None,
    lr_scheduler: Callable[..., Any] | None = None,
) -> None:
    """Build the partial ``optimizer`` (and ``lr_scheduler``) once on a stand-in parameter.

    The real optimiser is built only when a task's fit starts; a bad value (``lr=-1``, an
    unknown argument) would otherwise fail after the trainer started writing logs.

    Raises:
        PipelineConfigError: the optimiser or scheduler cannot be built from its config.
    """
    if optimizer is None:
        return
    key = "optimizer"
    try:
        built = optimizer(params=[nn.Parameter(torch.zeros(1))])
        if lr_scheduler is not None:
            key = "lr_scheduler"
            lr_scheduler(built)
    except (TypeError, ValueError) as error:
        raise PipelineConfigError(
            f"{key} cannot be built from its config: {error}. Fix that value in the {key} config "
            f"(an override such as {key}.<argument>=<value>)."
        ) from error


def task_list(value: Any, num_tasks: int | None, key: str) -> list[int]:
    """The task ids of ``train_tasks``/``eval_tasks``: an int N means tasks 1..N.

    Args:
        value: the configured value (``None``: every task).
        num_tasks: tasks of the dataset; ``None`` checks only the form of ``value``.
        key: the config key, for messages.

    Raises:
        PipelineConfigError: not a count >= 1 or a non-empty list of distinct task ids in
            ``1..num_tasks``.
    """
    if value is None:
        if num_tasks is None:
            return []
        return list(range(1, num_tasks + 1))
    if _is_int(value):
        if value < 1:
            raise PipelineConfigError(
                f"{key} must be a task count >= 1 or a list of task ids; got {value!r}, which "
                f"names no task. Set {key}=N for tasks 1..N, or {key}=[1,2] for named tasks."
            )
        tasks = list(range(1, value + 1))
    elif isinstance(value, list | tuple | ListConfig) and value and all(_is_int(t) for t in value):
        tasks = [int(t) for t in value]
    else:
        raise PipelineConfigError(
            f"{key} must be a task count >= 1 or a non-empty list of task ids (integers); got "
            f"{value!r}."
        )
    duplicates = sorted({t for t in tasks if tasks.count(t) > 1})
    if duplicates:
        raise PipelineConfigError(
            f"{key} names tasks {duplicates} more than once ({tasks}); name each task once."
        )
    low = [t for t in tasks if t < 1]
    high = [t for t in tasks if num_tasks is not None and t > num_tasks]
    if low or high:
        known = f"1..{num_tasks}" if num_tasks is not None else "numbered from 1"
        raise PipelineConfigError(
            f"{key} names tasks {low + high}, but the dataset has tasks {known}."
        )
    return tasks


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
