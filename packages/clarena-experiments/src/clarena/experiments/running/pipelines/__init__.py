"""Experiment pipelines, chosen by the ``pipeline:`` key of the experiment config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from clarena.experiments.experiment_config import ExperimentConfig, announce_without_effect
from clarena.experiments.running.pipelines.cl import run_cl_main_evaluation, run_cl_main_experiment
from clarena.experiments.running.pipelines.common import PipelineConfigError, output_dir
from clarena.experiments.running.pipelines.supervised import (
    run_mtl_evaluation,
    run_mtl_experiment,
    run_stl_evaluation,
    run_stl_experiment,
)
from clarena.experiments.running.quiet import silence_known_warnings
from clarena.experiments.runs.run_lock import claim_run_dir
from clarena.experiments.runs.run_log import log_config_summary, warnings_to_log
from clarena.experiments.upstream.adapter import adapt_config

#: Pipeline name (the ``pipeline:`` config key) -> function running it.
PIPELINES: dict[str, Callable[[ExperimentConfig], Any]] = {
    "CL_MAIN_EXPR": run_cl_main_experiment,
    "CL_MAIN_EVAL": run_cl_main_evaluation,
    "MTL_EXPR": run_mtl_experiment,
    "MTL_EVAL": run_mtl_evaluation,
    "STL_EXPR": run_stl_experiment,
    "STL_EVAL": run_stl_evaluation,
}


def parse_experiment(cfg: DictConfig) -> ExperimentConfig:
    """The composed config ``cfg`` read once into the typed :class:`ExperimentConfig`.

    A config in upstream CLArena's forms is read as clarena's first (see
    :func:`~clarena.experiments.upstream.adapter.adapt_config`); then the pipeline name, every
    key (unknown ones refused with the nearest valid name) and every value the pipelines read
    are checked, before anything is built or written.

    Raises:
        PipelineConfigError: ``pipeline`` is missing or unknown, an unknown key, a bad value, or
            the config names an upstream CLArena class or key clarena does not implement.
    """
    announce_without_effect(cfg)
    cfg = adapt_config(cfg)
    name = cfg.get("pipeline")
    if name not in PIPELINES:
        raise PipelineConfigError(
            f"pipeline must be one of {', '.join(PIPELINES)}; got {name!r}. Choose an experiment "
            f"with experiment=<name> (e.g. experiment=example_clmain_train)."
        )
    return ExperimentConfig.parse(cfg)


def run_pipeline(config: ExperimentConfig | DictConfig) -> Any:
    """Run the pipeline ``config`` names, holding its output dir's lock.

    ``config`` is the typed config, or the composed ``DictConfig`` (read with
    :func:`parse_experiment`). The config summary and every warning go to the run's log.

    Raises:
        PipelineConfigError: see :func:`parse_experiment`.
        RunDirBusyError: another run is writing into the output dir.
        RunDirUsedError: the output dir holds a previous run's files and ``overwrite`` is false.
    """
    if not isinstance(config, ExperimentConfig):
        config = parse_experiment(config)
    silence_known_warnings()
    run_dir = output_dir(config)
    with claim_run_dir(run_dir, config), warnings_to_log():
        log_config_summary(config, run_dir)
        return PIPELINES[str(config.pipeline)](config)


__all__ = [
    "PIPELINES",
    "ExperimentConfig",
    "PipelineConfigError",
    "parse_experiment",
    "run_pipeline",
]
