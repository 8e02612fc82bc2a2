"""Experiment pipelines, chosen by the ``pipeline:`` key of the experiment config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from clarena.experiments.booleans import check_boolean_keys
from clarena.experiments.pipelines.cl import run_cl_main_evaluation, run_cl_main_experiment
from clarena.experiments.pipelines.common import PipelineConfigError, output_dir
from clarena.experiments.pipelines.supervised import (
    run_mtl_evaluation,
    run_mtl_experiment,
    run_stl_evaluation,
    run_stl_experiment,
)
from clarena.experiments.quiet import silence_known_warnings
from clarena.experiments.run_lock import claim_run_dir
from clarena.experiments.run_log import log_config_summary, warnings_to_log
from clarena.experiments.upstream.adapter import adapt_config

#: Pipeline name (the ``pipeline:`` config key) -> function running it.
PIPELINES: dict[str, Callable[[DictConfig], Any]] = {
    "CL_MAIN_EXPR": run_cl_main_experiment,
    "CL_MAIN_EVAL": run_cl_main_evaluation,
    "MTL_EXPR": run_mtl_experiment,
    "MTL_EVAL": run_mtl_evaluation,
    "STL_EXPR": run_stl_experiment,
    "STL_EVAL": run_stl_evaluation,
}


def run_pipeline(cfg: DictConfig) -> Any:
    """Run the pipeline named by ``cfg.pipeline``, holding its output dir's lock.

    The config summary and every warning go to the run's log.

    A config in upstream CLArena's forms is read as clarena's first (see
    :func:`~clarena.experiments.upstream.adapter.adapt_config`).

    Raises:
        PipelineConfigError: ``pipeline`` is missing or unknown, a boolean key is not true or
            false, or the config names an upstream CLArena class or key clarena does not implement.
        RunDirBusyError: another run is writing into the output dir.
        RunDirUsedError: the output dir holds a previous run's files and ``overwrite`` is false.
    """
    cfg = adapt_config(cfg)
    name = cfg.get("pipeline")
    if name not in PIPELINES:
        raise PipelineConfigError(
            f"pipeline must be one of {', '.join(PIPELINES)}; got {name!r}. Choose an experiment "
            f"with experiment=<name> (e.g. experiment=example_clmain_train)."
        )
    # Before the run dir is claimed: ``overwrite=no`` must not delete a previous run's files.
    check_boolean_keys(cfg)
    silence_known_warnings()
    run_dir = output_dir(cfg)
    with claim_run_dir(run_dir, cfg), warnings_to_log():
        log_config_summary(cfg, run_dir)
        return PIPELINES[name](cfg)


__all__ = ["PIPELINES", "PipelineConfigError", "run_pipeline"]
