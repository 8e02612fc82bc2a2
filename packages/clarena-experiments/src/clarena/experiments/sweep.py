"""The combined table of a Hydra multirun (``clarena -m ...``): ``multirun_summary.csv``.

:class:`MultirunSummary` is a Hydra callback (set in ``entrance.yaml`` under
``hydra.callbacks``). When the sweep ends it reads every job dir of the sweep dir — the job's
overrides from ``.hydra/overrides.yaml`` and its ``results/summary.json`` — and writes one row
per job. It reads files only, so it works the same for the basic launcher and for launchers that
run the jobs elsewhere (submitit/SLURM), and a job that failed still gets a row (status
``no results``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

#: The combined table's file name, in the sweep dir.
SUMMARY_FILE = "multirun_summary.csv"

#: summary.json entries copied into the table, in this order.
RESULT_KEYS: tuple[str, ...] = ("average_accuracy", "backward_transfer", "forgetting")


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
    (``ok`` or ``no results``) and ``output_dir``.
    """
    jobs = _job_dirs(sweep_dir)
    overrides = [_overrides(job) for job in jobs]
    keys = list(dict.fromkeys(key for pairs in overrides for key in pairs))
    path = sweep_dir / SUMMARY_FILE
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["job", *keys, *RESULT_KEYS, "status", "output_dir"])
        for job, pairs in zip(jobs, overrides, strict=True):
            summary_path = job / metrics_summary
            summary: dict[str, Any] = (
                json.loads(summary_path.read_text()) if summary_path.is_file() else {}
            )
            writer.writerow(
                [
                    job.name,
                    *[pairs.get(key, "") for key in keys],
                    *[
                        "" if summary.get(key) is None else repr(summary[key])
                        for key in RESULT_KEYS
                    ],
                    "ok" if summary else "no results",
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
