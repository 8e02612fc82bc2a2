"""The ``clarena`` command: ``clarena experiment=<name> [hydra overrides]``.

Configs come from ``./configs`` when it holds ``entrance.yaml`` (the shipped tree stays on the
search path, so a user's tree can use and extend the shipped groups), else from the tree shipped
inside this package. Errors print one paragraph to stderr and exit with status 1; set
``CLARENA_FULL_ERROR=1`` for the full traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig

from clarena.experiments.errors import FULL_ERROR_ENV, explain
from clarena.experiments.run_lock import RunDirBusyError, RunDirUsedError, check_command_line
from clarena.experiments.sweep import (
    exit_status_of_jobs,
    in_sweep,
    job_objective,
    record_job_error,
)

ENTRANCE = "entrance"


def shipped_config_dir() -> Path:
    """The config tree shipped with the package.

    A wheel carries it as ``clarena/experiments/configs``; an editable install of the monorepo
    reads the repository's top-level ``configs/`` directly.
    """
    packaged = Path(__file__).parent / "configs"
    if (packaged / f"{ENTRANCE}.yaml").is_file():
        return packaged
    repository = Path(__file__).resolve().parents[5] / "configs"
    if (repository / f"{ENTRANCE}.yaml").is_file():
        return repository
    raise FileNotFoundError(
        f"clarena-experiments ships no config tree (looked in {packaged} and {repository}); "
        f"reinstall the package."
    )


def config_search(cwd: Path | None = None) -> tuple[Path, list[str]]:
    """The primary config dir and the extra search-path entries for this working dir."""
    local = (cwd or Path.cwd()) / "configs"
    shipped = shipped_config_dir()
    if (local / f"{ENTRANCE}.yaml").is_file() and local.resolve() != shipped.resolve():
        return local.resolve(), [f"file://{shipped}"]
    return shipped, []


def _task(cfg: DictConfig) -> float | None:
    from clarena.experiments.pipelines import run_pipeline

    # Lightning's per-fit INFO lines (accelerator found, tips) repeat once per task; keep warnings.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    try:
        run_pipeline(cfg)
    except Exception as error:
        if in_sweep():
            # Reported and recorded; the sweep goes on and exits 1 at its end.
            record_job_error(error)
            return None
        if os.environ.get(FULL_ERROR_ENV) == "1":
            raise
        print(explain(error), file=sys.stderr)
        raise SystemExit(1) from None
    # A sweeper that optimises (Optuna) reads each job's return value.
    return job_objective(cfg) if in_sweep() else None


#: Flags with which Hydra only prints something, needing no experiment.
INFO_FLAGS: tuple[str, ...] = (
    "--help",
    "-h",
    "--hydra-help",
    "--info",
    "-i",
    "--cfg",
    "-c",
    "--shell-completion",
    "-sc",
    "--version",
    "--resolve",
)

NO_EXPERIMENT = (
    "clarena: no experiment chosen. Run `clarena experiment=<name>`, e.g. "
    "`clarena experiment=example_clmain_train`; `clarena --help` lists the experiments and "
    "config groups. Nothing was written."
)


def _override_key(argument: str) -> str:
    return argument.partition("=")[0].lstrip("+~")


def _entrance_chooses_experiment(config_dir: Path) -> bool:
    """Whether ``entrance.yaml``'s defaults list picks a (non-null) experiment."""
    import yaml

    entrance = yaml.safe_load((config_dir / f"{ENTRANCE}.yaml").read_text()) or {}
    for entry in entrance.get("defaults") or []:
        if isinstance(entry, dict):
            for key, value in entry.items():
                if _override_key(str(key)).split("@")[0] == "experiment" and value is not None:
                    return True
    return False


def _experiment_chosen(arguments: list[str], config_dir: Path) -> bool:
    keys = {_override_key(a) for a in arguments if "=" in a}
    if keys & {"experiment", "pipeline"}:
        return True
    return _entrance_chooses_experiment(config_dir)


def _resume_arguments(arguments: list[str]) -> list[str]:
    """Overrides that make ``resume=<run dir>`` continue that run in that dir.

    The run dir is checked before Hydra starts (Hydra would create it), and the continuation's
    Hydra files go to ``.hydra/resume_<time>`` so the interrupted run's ``.hydra/`` stays as it
    was.
    """
    from clarena.experiments.pipelines.common import PipelineConfigError
    from clarena.experiments.resume import resume_file

    keys = [_override_key(a) for a in arguments]
    if "resume" not in keys:
        return []
    resume = arguments[keys.index("resume")].partition("=")[2]
    if resume in ("", "null"):
        return []
    try:
        resume_file(resume)
    except PipelineConfigError as error:
        if os.environ.get(FULL_ERROR_ENV) == "1":
            raise
        print(explain(error), file=sys.stderr)
        raise SystemExit(1) from None
    extra = []
    # DDP child processes get the parent's arguments (and their own hydra.output_subdir).
    if "hydra.output_subdir" not in keys:
        extra.append("hydra.output_subdir=.hydra/resume_${now:%Y-%m-%d_%H-%M-%S}")
    if "output_dir" not in keys:
        extra.append(f"output_dir={resume}")
    return extra


def _check_run_dir(arguments: list[str]) -> None:
    """Refuse a busy or used ``output_dir=`` before Hydra writes its ``.hydra/`` into it."""
    try:
        check_command_line(arguments)
    except (RunDirBusyError, RunDirUsedError) as error:
        if os.environ.get(FULL_ERROR_ENV) == "1":
            raise
        print(explain(error), file=sys.stderr)
        raise SystemExit(1) from None


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``clarena`` with ``argv`` (default: the command line)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    config_dir, search_path = config_search()
    # Checked before Hydra runs: Hydra creates the run dir before the job starts.
    info = any(a.partition("=")[0] in INFO_FLAGS for a in arguments)
    if not info and not _experiment_chosen(arguments, config_dir):
        print(NO_EXPERIMENT, file=sys.stderr)
        raise SystemExit(1)
    if not info:
        arguments += _resume_arguments(arguments)
        _check_run_dir(arguments)
    if search_path and not any(a.startswith("hydra.searchpath=") for a in arguments):
        arguments.append(f"hydra.searchpath=[{','.join(search_path)}]")
    saved_argv = sys.argv
    sys.argv = [saved_argv[0] if saved_argv else "clarena", *arguments]
    try:
        with exit_status_of_jobs():
            hydra.main(version_base=None, config_path=str(config_dir), config_name=ENTRANCE)(
                _task
            )()
    finally:
        sys.argv = saved_argv


if __name__ == "__main__":
    main()
