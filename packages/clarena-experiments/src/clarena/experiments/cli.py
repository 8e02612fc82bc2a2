"""The ``clarena`` command: ``clarena experiment=<name> [hydra overrides]``.

The config tree shipped with this package is the repository's top-level ``configs/``
(:func:`shipped_config_dir`: a wheel's ``clarena/experiments/configs``, the checkout's ``configs/``
in an editable install). A working dir whose ``./configs`` holds ``entrance.yaml`` makes that tree
the primary config dir; the shipped tree stays on Hydra's search path through the ``hydra_plugins.clarena_experiments`` search-path
plugin, so a user's tree can use and extend the shipped groups. Flags (``-m``, ``--cfg job``,
``--help``) may come before or after the overrides. Errors print one paragraph to stderr and exit
with status 1; set ``CLARENA_FULL_ERROR=1`` for the full traceback.

Boolean keys given on the command line (``trust_model_file``, ``overwrite``, ...) are checked
here, before Hydra creates the run dir: ``overwrite=no`` is refused, not read as true. Hydra
1.3's ``--experimental-rerun <config.pickle>`` unpickles the file, which runs whatever code a
pickle holds; clarena refuses it unless ``trust_model_file=true`` is given too, and says so
(Hydra 1.4's takes the run dir and recomposes its config from the saved overrides, no pickle).

Only Hydra's public API is used: the command line is parsed here (so flags may follow the
overrides, and tests can pass ``argv``), checked, and handed to ``hydra.main``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from hydra_plugins.clarena_experiments.searchpath import SHIPPED_CONFIGS, shipped_config_dir
from omegaconf import DictConfig, OmegaConf

from clarena.experiments.booleans import BOOLEAN_KEYS, TRUST_KEY, strict_bool
from clarena.experiments.errors import (
    FULL_ERROR_ENV,
    PipelineConfigError,
    RunDirLinkError,
    explain,
)
from clarena.experiments.runs.run_lock import RunDirBusyError, RunDirUsedError, check_command_line
from clarena.experiments.runs.sweep import (
    exit_status_of_jobs,
    in_sweep,
    job_objective,
    record_job_error,
)

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override

__all__ = ["SHIPPED_CONFIGS", "main", "primary_config_path", "shipped_config_dir"]


ENTRANCE = "entrance"


def primary_config_path(cwd: Path | None = None) -> str:
    """Hydra's primary config path for a run started in ``cwd`` (default: the working dir).

    ``<cwd>/configs`` when it holds ``entrance.yaml``, else :data:`SHIPPED_CONFIGS`.
    """
    local = (cwd or Path.cwd()) / "configs"
    if (local / f"{ENTRANCE}.yaml").is_file():
        return str(local.resolve())
    return SHIPPED_CONFIGS


def _task(cfg: DictConfig) -> float | None:
    """Hydra's task function: the composed ``cfg`` is parsed here, once, into typed values."""
    from clarena.experiments.running.pipelines import parse_experiment, run_pipeline

    # Lightning's per-fit INFO lines (accelerator found, tips) repeat once per task; keep warnings.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    config = None
    try:
        config = parse_experiment(cfg)
        run_pipeline(config)
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
    return job_objective(config) if in_sweep() and config is not None else None


#: Overrides that choose what runs: clarena's ``experiment=``, upstream CLArena's ``index=``.
CHOOSING_KEYS: tuple[str, ...] = ("experiment", "index", "pipeline")

NO_EXPERIMENT = (
    "clarena: no experiment chosen. Run `clarena experiment=<name>`, e.g. "
    "`clarena experiment=example_clmain_train`; `clarena --help` lists the experiments and "
    "config groups. Nothing was written."
)


def _prints_only(args: argparse.Namespace) -> bool:
    """Whether Hydra only prints something (help, config, info), needing no experiment."""
    return bool(args.help or args.hydra_help or args.cfg or args.info or args.shell_completion)


def _parsed(overrides: list[str]) -> dict[str, Override] | None:
    """The command-line overrides by key (Hydra's override parser); None if one is malformed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException:
        return None
    return {override.key_or_group: override for override in parsed}


def _sets(overrides: dict[str, Override], key: str) -> bool:
    override = overrides.get(key)
    return override is not None and not override.is_delete() and override.value() is not None


def _experiment_chosen(overrides: dict[str, Override], config_path: str) -> bool:
    if any(_sets(overrides, key) for key in CHOOSING_KEYS):
        return True
    if config_path == SHIPPED_CONFIGS:
        entrance = shipped_config_dir() / f"{ENTRANCE}.yaml"
    else:
        entrance = Path(config_path) / f"{ENTRANCE}.yaml"
    if not entrance.is_file():
        return True  # a config path Hydra resolves itself (--config-path): Hydra reports it
    for entry in OmegaConf.load(entrance).get("defaults") or []:
        if isinstance(entry, DictConfig):
            for key, value in entry.items():
                if str(key).lstrip("+").split("@")[0] in CHOOSING_KEYS and value is not None:
                    return True
    return False


def _resume_overrides(overrides: dict[str, Override]) -> list[str]:
    """Overrides that make ``resume=<run dir>`` continue that run in that dir.

    The run dir is checked before Hydra starts (Hydra would create it), and the continuation's
    Hydra files go to ``.hydra/resume_<time>`` so the interrupted run's ``.hydra/`` stays as it
    was.
    """
    from clarena.experiments.runs.resume import resume_file

    resume = str(overrides["resume"].value()) if _sets(overrides, "resume") else ""
    if not resume:
        return []
    try:
        resume_file(resume)
    except (PipelineConfigError, RunDirLinkError) as error:
        if os.environ.get(FULL_ERROR_ENV) == "1":
            raise
        print(explain(error), file=sys.stderr)
        raise SystemExit(1) from None
    extra = []
    # DDP child processes get the parent's arguments (and their own hydra.output_subdir).
    if "hydra.output_subdir" not in overrides:
        extra.append("hydra.output_subdir=.hydra/resume_${now:%Y-%m-%d_%H-%M-%S}")
    if "output_dir" not in overrides:
        extra.append(f"output_dir={resume}")
    return extra


def _exit_with(error: Exception) -> NoReturn:
    """Print ``error`` as one paragraph and exit 1 (re-raise with ``CLARENA_FULL_ERROR=1``)."""
    if os.environ.get(FULL_ERROR_ENV) == "1":
        raise error
    print(explain(error), file=sys.stderr)
    raise SystemExit(1) from None


def _check_booleans(overrides: dict[str, Override]) -> None:
    """Refuse a boolean key set on the command line to anything but true or false.

    A sweep over a key (``compile=true,false``) is left to each job's own check.
    """
    for key in BOOLEAN_KEYS:
        override = overrides.get(key)
        if override is None or override.is_delete() or override.is_sweep_override():
            continue
        try:
            strict_bool(override.value(), key)
        except PipelineConfigError as error:
            _exit_with(error)


def rerun_unpickles() -> bool:
    """Whether this Hydra's ``--experimental-rerun`` unpickles a file.

    Hydra 1.3 reads ``<run>/.hydra/config.pickle``; Hydra 1.4 takes the run dir and composes the
    config again from its saved ``overrides.yaml`` and ``hydra.yaml`` (no pickle).
    """
    from hydra import __version__

    major, minor = (int(part) for part in __version__.split(".")[:2])
    return (major, minor) < (1, 4)


def _check_rerun(path: str, overrides: list[str]) -> None:
    """Hydra's ``--experimental-rerun``: only with ``trust_model_file=true``, printed.

    Under Hydra 1.3 the file is a pickle (``.hydra/config.pickle``), and unpickling runs whatever
    it holds. Refused here, before Hydra reads the file; when trusted, Hydra reruns it. Hydra 1.4
    recomposes the run's config from its saved overrides instead, which this does not refuse.
    """
    if not rerun_unpickles():
        return
    parsed = _parsed(overrides) or {}
    trusted = TRUST_KEY in parsed and not parsed[TRUST_KEY].is_delete()
    if trusted:
        try:
            trusted = strict_bool(parsed[TRUST_KEY].value(), TRUST_KEY)
        except PipelineConfigError as error:
            _exit_with(error)
    if not trusted:
        print(
            f"clarena: --experimental-rerun unpickles '{path}', and a pickle can run any code it "
            f"holds, so clarena refuses it; nothing was read. Rerun the experiment with the "
            f"overrides its .hydra/overrides.yaml lists (clarena experiment=<name> <overrides>), "
            f"or, only for a pickle you wrote yourself, add {TRUST_KEY}=true.",
            file=sys.stderr,
        )
        raise SystemExit(1)
    print(
        f"clarena: {TRUST_KEY}=true: --experimental-rerun unpickles '{path}' as it stands; a "
        f"pickle can run any code it holds.",
        file=sys.stderr,
    )


def _check_run_dir(arguments: list[str]) -> None:
    """Refuse a busy, used, unwritable or linked ``output_dir=`` before Hydra writes into it."""
    try:
        check_command_line(arguments)
    except (PipelineConfigError, RunDirLinkError, RunDirBusyError, RunDirUsedError) as error:
        if os.environ.get(FULL_ERROR_ENV) == "1":
            raise
        print(explain(error), file=sys.stderr)
        raise SystemExit(1) from None


#: Hydra's command-line flags (``hydra.main``'s): (names, argparse keywords).
HYDRA_FLAGS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--help", "-h"), {"action": "store_true"}),
    (("--hydra-help",), {"action": "store_true"}),
    (("--version",), {"action": "store_true"}),
    (("--cfg", "-c"), {"choices": ["job", "hydra", "all"]}),
    (("--resolve",), {"action": "store_true"}),
    (("--package", "-p"), {}),
    (("--run", "-r"), {"action": "store_true"}),
    (("--multirun", "-m"), {"action": "store_true"}),
    (("--shell-completion", "-sc"), {"action": "store_true"}),
    (("--config-path", "-cp"), {}),
    (("--config-name", "-cn"), {}),
    (("--config-dir", "-cd"), {}),
    (("--experimental-rerun",), {}),
    (
        ("--info", "-i"),
        {
            "const": "all",
            "nargs": "?",
            "choices": ["all", "config", "defaults", "defaults-tree", "plugins", "searchpath"],
        },
    ),
)


def args_parser() -> argparse.ArgumentParser:
    """A parser of Hydra's command line (its flags and the overrides), flags anywhere."""
    parser = argparse.ArgumentParser(prog="clarena", add_help=False)
    parser.add_argument("overrides", nargs="*")
    for names, keywords in HYDRA_FLAGS:
        parser.add_argument(*names, **keywords)
    return parser


def hydra_command_line(args: argparse.Namespace) -> list[str]:
    """``args`` as the command line ``hydra.main`` parses: its flags first, then the overrides."""
    line: list[str] = []
    for names, keywords in HYDRA_FLAGS:
        value = getattr(args, names[0].lstrip("-").replace("-", "_"))
        if keywords.get("action") == "store_true":
            line += [names[0]] if value else []
        elif value is not None:
            line += [f"{names[0]}={value}"]
    return [*line, *args.overrides]


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``clarena`` with ``argv`` (default: the command line), through ``hydra.main``.

    The command line is parsed here first (flags may follow the overrides; tests pass ``argv``),
    checked (booleans, experiment chosen, run dir, ``--experimental-rerun``), and handed to
    Hydra's public ``hydra.main`` as the command line it reads.
    """
    import hydra

    args = args_parser().parse_intermixed_args(sys.argv[1:] if argv is None else list(argv))
    if args.experimental_rerun is not None:
        _check_rerun(args.experimental_rerun, args.overrides)
    config_path = args.config_path or primary_config_path()
    # Checked before Hydra runs: Hydra creates the run dir before the job starts. Overrides
    # Hydra cannot parse are left to Hydra, which reports them.
    overrides = _parsed(args.overrides)
    if args.experimental_rerun is None and not _prints_only(args) and overrides is not None:
        _check_booleans(overrides)
        if args.config_name is None and not _experiment_chosen(overrides, config_path):
            print(NO_EXPERIMENT, file=sys.stderr)
            raise SystemExit(1)
        args.overrides += _resume_overrides(overrides)
        _check_run_dir([*args.overrides, *(["-m"] if args.multirun else [])])
    command_line = sys.argv

    def task(cfg: DictConfig) -> float | None:
        # Lightning's DDP launcher starts each child process with this process's command line.
        sys.argv = command_line
        return _task(cfg)

    run = hydra.main(config_path=config_path, config_name=ENTRANCE, version_base=None)(task)
    sys.argv = [command_line[0] if command_line else "clarena", *hydra_command_line(args)]
    try:
        with exit_status_of_jobs():
            run()
    finally:
        sys.argv = command_line


if __name__ == "__main__":
    main()
