"""The combined table of a Hydra multirun (``clarena -m ...``): ``multirun_summary.csv``.

:class:`MultirunSummary` is a Hydra callback (set in ``entrance.yaml`` under
``hydra.callbacks``). When the sweep ends it reads every job dir of the sweep dir — the job's
overrides from ``.hydra/overrides.yaml`` and its ``results/summary.json`` — and writes one row
per job. It reads files only, so it works the same for the basic launcher and for launchers that
run the jobs elsewhere (submitit/SLURM).

A job that fails does not stop the sweep: :func:`record_job_error` (called by the ``clarena``
command for the job's error) prints the error, writes it to ``<job dir>/error.txt`` and lets
Hydra go on with the next job. The failed job's row has status ``failed`` and the error, and
the command exits with status 1 when the sweep ends (:func:`exit_status_of_jobs`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from clarena.experiments.errors import FULL_ERROR_ENV, RunDirLinkError, explain
from clarena.experiments.runs.run_lock import RunDirBusyError, RunDirUsedError

if TYPE_CHECKING:
    from clarena.experiments.experiment_config import ExperimentConfig

log = logging.getLogger(__name__)

#: The combined table's file name, in the sweep dir.
SUMMARY_FILE = "multirun_summary.csv"

#: summary.json entries copied into the table, in this order.
RESULT_KEYS: tuple[str, ...] = ("average_accuracy", "backward_transfer", "forgetting")

#: The summary.json entry a sweep job returns to Hydra's sweeper: the objective an optimising
#: sweeper (``hydra/sweeper=optuna`` with ``hydra.sweeper.direction=maximize``) works on.
OBJECTIVE_KEY = "average_accuracy"

#: A failed job's error, in its job dir.
ERROR_FILE = "error.txt"

#: Dirs of the jobs of the current sweep that failed (this process's jobs and, once the summary
#: is written, every job with an :data:`ERROR_FILE`).
_failed_jobs: set[str] = set()


def in_sweep() -> bool:
    """Whether the running Hydra job is one job of a multirun (``-m``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_job_error(error: BaseException) -> None:
    """Report the error that ended a sweep job, so that the sweep goes on.

    Prints it to stderr (one paragraph; the traceback with ``CLARENA_FULL_ERROR=1``), logs it
    to the job's log and writes the paragraph to ``<job dir>/error.txt`` (unless the error is
    that the dir belongs to another run).
    """
    message = explain(error)
    if os.environ.get(FULL_ERROR_ENV) == "1":
        traceback.print_exception(error, file=sys.stderr)
    else:
        print(message, file=sys.stderr)
    log.error("%s", message.splitlines()[0])
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    _failed_jobs.add(str(job_dir.resolve()))
    if isinstance(error, RunDirBusyError | RunDirUsedError | RunDirLinkError):
        return  # the dir is another run's, or error.txt could lead out of it: leave it as it is
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / ERROR_FILE).write_text(message.splitlines()[0] + "\n")


@contextlib.contextmanager
def exit_status_of_jobs() -> Iterator[None]:
    """Exit with status 1 after the body (a Hydra run or sweep) when a sweep job failed."""
    _failed_jobs.clear()
    try:
        yield
        if _failed_jobs:
            jobs = sorted(_failed_jobs)
            print(
                f"clarena: {len(jobs)} sweep job(s) failed ({', '.join(jobs)}); each has its "
                f"error in {ERROR_FILE} and in the {SUMMARY_FILE} row.",
                file=sys.stderr,
            )
            raise SystemExit(1)
    finally:
        _failed_jobs.clear()


def job_objective(config: ExperimentConfig) -> float | None:
    """The finished job's :data:`OBJECTIVE_KEY` from its summary.json (``None`` if it has none).

    Returned by the ``clarena`` task function in a sweep, so that Hydra's Optuna sweeper gets
    each trial's value; the same number is the trial's row in :data:`SUMMARY_FILE`.
    """
    from clarena.experiments.running.pipelines.common import output_dir

    path = output_dir(config) / (config.metrics.summary or "results/summary.json")
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get(OBJECTIVE_KEY)
    return None if value is None else float(value)


def _job_dirs(sweep_dir: Path) -> list[Path]:
    dirs = [path.parent.parent for path in sweep_dir.glob("*/.hydra/overrides.yaml")]
    return sorted(
        dirs,
        key=lambda path: (
            not path.name.isdigit(),
            int(path.name) if path.name.isdigit() else 0,
            path.name,
        ),
    )


def _overrides(job_dir: Path) -> dict[str, str]:
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    pairs = {}
    for override in overrides:
        key, _, value = str(override).partition("=")
        pairs[key.lstrip("+~")] = value
    return pairs


def write_multirun_summary(sweep_dir: Path, metrics_summary: str = "results/summary.json") -> Path:
    """Write ``<sweep_dir>/multirun_summary.csv``: one row per job dir; returns its path.

    Columns: ``job``, every override key any job used, the :data:`RESULT_KEYS`, ``status``
    (``ok``, ``failed`` when the job left an :data:`ERROR_FILE`, else ``no results``),
    ``error`` and ``output_dir``.
    """
    jobs = _job_dirs(sweep_dir)
    overrides = [_overrides(job) for job in jobs]
    keys = list(dict.fromkeys(key for pairs in overrides for key in pairs))
    path = sweep_dir / SUMMARY_FILE
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["job", *keys, *RESULT_KEYS, "status", "error", "output_dir"])
        for job, pairs in zip(jobs, overrides, strict=True):
            summary_path = job / metrics_summary
            summary: dict[str, Any] = (
                json.loads(summary_path.read_text()) if summary_path.is_file() else {}
            )
            error_path = job / ERROR_FILE
            error = error_path.read_text().strip() if error_path.is_file() else ""
            if error:
                _failed_jobs.add(str(job.resolve()))
            status = "failed" if error else "ok" if summary else "no results"
            writer.writerow(
                [
                    job.name,
                    *[pairs.get(key, "") for key in keys],
                    *[
                        "" if summary.get(key) is None else repr(summary[key])
                        for key in RESULT_KEYS
                    ],
                    status,
                    error,
                    str(job),
                ]
            )
    return path


class MultirunSummary(Callback):
    """Hydra callback writing :data:`SUMMARY_FILE` in the sweep dir when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        metrics = config.get("metrics") or {}
        path = write_multirun_summary(sweep_dir, metrics.get("summary") or "results/summary.json")
        print(f"clarena: multirun summary in {path}")
