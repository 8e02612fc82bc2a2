"""What a run reports to its log, ``<run dir>/clarena.log``.

Hydra's job logging (``hydra.job_logging`` in ``entrance.yaml``) sends the root logger's records
to that file through :class:`RunLogHandler`, which opens it without following a link; every
clarena module logs through ``logging.getLogger(__name__)``. This module adds the config summary
at the start of a run and routes Python warnings into the log too.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from typing_extensions import override

from clarena.experiments.runs.run_dir import open_in_run_dir

if TYPE_CHECKING:
    from clarena.experiments.experiment_config import ExperimentConfig

log = logging.getLogger(__name__)

#: Config keys whose value (or ``_target_``) the config summary names, when set.
SUMMARY_KEYS: tuple[str, ...] = (
    "cl_paradigm",
    "cl_dataset",
    "mtl_dataset",
    "stl_dataset",
    "backbone",
    "cl_algorithm",
    "mtl_algorithm",
    "stl_algorithm",
    "optimizer",
    "lr_scheduler",
    "train_tasks",
    "eval_tasks",
    "global_seed",
    "model_path",
    "resume",
)


def _describe(value: Any) -> str:
    if isinstance(value, DictConfig):
        target = value.get("_target_")
        if target is not None:
            return str(target)
        return str(OmegaConf.to_container(value, resolve=True))
    return (
        repr(OmegaConf.to_container(value, resolve=True))
        if OmegaConf.is_config(value)
        else repr(value)
    )


def log_config_summary(config: ExperimentConfig, run_dir: Path) -> None:
    """Log the pipeline, the run dir, the command-line overrides and the :data:`SUMMARY_KEYS`."""
    from hydra.core.hydra_config import HydraConfig

    log.info("%s in %s", config.pipeline, run_dir)
    if HydraConfig.initialized():
        overrides = list(HydraConfig.get().overrides.task)
        log.info("overrides: %s", " ".join(overrides) or "(none)")
    for key in SUMMARY_KEYS:
        value = getattr(config.components, key, None) or getattr(config, key, None)
        if value is not None and not (OmegaConf.is_config(value) and not value):
            log.info("%s: %s", key, _describe(value))


@contextlib.contextmanager
def warnings_to_log() -> Iterator[None]:
    """Send Python warnings to the ``py.warnings`` logger as well as showing them as before."""
    show = warnings.showwarning
    logger = logging.getLogger("py.warnings")

    def show_and_log(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        logger.warning(
            "%s", warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        )
        show(message, category, filename, lineno, file, line)

    warnings.showwarning = show_and_log
    try:
        yield
    finally:
        warnings.showwarning = show


class RunLogHandler(logging.FileHandler):
    """``logging.FileHandler`` appending to the run's log, which follows no link out of the dir.

    Raises:
        RunDirLinkError: on opening, the log file is a link, a special file or hard-linked.
    """

    @override
    def _open(self) -> io.TextIOWrapper:
        fd = open_in_run_dir(Path(self.baseFilename), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)
