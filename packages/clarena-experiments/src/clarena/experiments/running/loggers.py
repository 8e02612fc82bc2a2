"""Optional experiment trackers as Lightning loggers: Weights & Biases (offline) and MLflow.

The pipelines build every ``lightning_loggers`` entry with ``save_dir=<output dir>`` and
``version=task_<N>`` (one log per fit). These builders map that onto each tracker, keep
everything on local disk (nothing is sent anywhere), and say how to install a missing tracker:

- :func:`wandb_logger`: an offline W&B run per task under ``<output dir>/wandb``, grouped by the
  output dir's name; ``wandb sync <output dir>/wandb/offline-run-*`` uploads them later.
- :func:`mlflow_logger`: an MLflow run per task in the local SQLite store
  ``<output dir>/mlflow.db`` (``mlflow ui --backend-store-uri sqlite:///<output dir>/mlflow.db``);
  MLflow 3 refuses its old ``mlruns/`` file store, so the store is one SQLite file.

Every logger of a fit also records the run's hyperparameters (:func:`log_run_config`): the
resolved config flattened to dotted keys (``optimizer.lr``, ``backbone.hidden_dims``), plus the
versions of clarena's distributions and of torch and Lightning under ``versions.<name>``. W&B
keeps them as the run's config, MLflow as the run's params, TensorBoard in its event file (the
HPARAMS tab) and its ``hparams.yaml``, the CSV logger in its ``hparams.yaml``.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

#: Where the trackers write inside the run dir (``overwrite=true`` deletes them with the rest).
TRACKER_OUTPUTS: tuple[str, ...] = ("wandb", "mlflow.db")

#: Distributions whose versions every run records.
VERSIONED: tuple[str, ...] = (
    "clarena-backbones-core",
    "clarena-backbones-cl",
    "clarena-hat",
    "clarena-wsn",
    "clarena-experiments",
    "torch",
    "lightning",
)


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": 1, "c": "[1, 2]"}``.

    Nested mappings become dotted keys; lists become their JSON text (every tracker takes
    strings and numbers, not all take lists); numbers, strings, booleans and ``None`` stay.
    An empty mapping (a config group set to none) stays as ``{}`` text, so its key is recorded.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, f"{name}."))
        elif isinstance(value, Mapping | list | tuple):
            flat[name] = json.dumps(value, default=str)
        else:
            flat[name] = value
    return flat


def versions() -> dict[str, str]:
    """``versions.<distribution>``: the installed version of each of :data:`VERSIONED` (torch's
    as ``torch.__version__`` reports it)."""
    # torch's own string keeps the build's local tag (``2.14.1+cu130``: which CUDA).
    found = {"versions.torch": str(torch.__version__)}
    for name in VERSIONED:
        if name == "torch":
            continue
        try:
            found[f"versions.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def run_hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The run's hyperparameters as the trackers record them: the resolved ``cfg`` flattened
    (:func:`flatten_config`) plus :func:`versions`."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return {**flatten_config({str(key): value for key, value in container.items()}), **versions()}


def log_run_config(loggers: Iterable[Logger], cfg: DictConfig) -> None:
    """Record :func:`run_hyperparameters` with every logger of a fit.

    TensorBoard writes hyperparameters to its event file only together with metrics; here they
    are written with none, so its HPARAMS tab lists every run's config.
    """
    params = run_hyperparameters(cfg)
    for logger in loggers:
        logger.log_hyperparams(params)
        if isinstance(logger, TensorBoardLogger):
            _write_tensorboard_hparams(logger, params)


@rank_zero_only
def _write_tensorboard_hparams(logger: TensorBoardLogger, params: dict[str, Any]) -> None:
    from torch.utils.tensorboard.summary import hparams

    values = {
        key: value if isinstance(value, int | float | str | bool) else str(value)
        for key, value in params.items()
    }
    writer = logger.experiment._get_file_writer()
    for summary in hparams(values, {}):
        writer.add_summary(summary)


def _require(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ImportError(
            f"lightning_loggers={extra} needs the '{module}' package, which is not installed: "
            f"pip install 'clarena-experiments[{extra}]' (or choose lightning_loggers=default)."
        )


def wandb_logger(
    save_dir: str, version: str | None = None, project: str = "clarena", **kwargs: Any
) -> Logger:
    """An offline :class:`~lightning.pytorch.loggers.WandbLogger` for one fit.

    Args:
        save_dir: the run's output dir; W&B writes under ``<save_dir>/wandb``.
        version: the fit's name (``task_<N>``); the W&B run is named ``<output dir name>/<version>``
            and grouped by the output dir's name (its id stays W&B's own, so runs never clash).
        project: the W&B project the runs belong to when synced.
        **kwargs: further :class:`WandbLogger` arguments (``offline`` defaults to true).
    """
    _require("wandb", "wandb")
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    # Lightning's logger leaves its run open; the previous task's run ends here, or this task's
    # logger would keep writing into it.
    if wandb.run is not None:
        wandb.finish()

    run = Path(save_dir).name
    kwargs.setdefault("offline", True)
    kwargs.setdefault("group", run)
    name = run if version is None else f"{run}/{version}"
    return WandbLogger(name=name, save_dir=save_dir, project=project, **kwargs)


def mlflow_logger(
    save_dir: str, version: str | None = None, experiment_name: str = "clarena", **kwargs: Any
) -> Logger:
    """A :class:`~lightning.pytorch.loggers.MLFlowLogger` writing to a local SQLite store.

    Args:
        save_dir: the run's output dir; the store is ``<save_dir>/mlflow.db``.
        version: the fit's name (``task_<N>``), used as the MLflow run name.
        experiment_name: the MLflow experiment the runs belong to.
        **kwargs: further :class:`MLFlowLogger` arguments (a ``tracking_uri`` replaces the store).
    """
    _require("mlflow", "mlflow")
    from lightning.pytorch.loggers import MLFlowLogger

    kwargs.setdefault("tracking_uri", f"sqlite:///{Path(save_dir).resolve() / 'mlflow.db'}")
    return MLFlowLogger(experiment_name=experiment_name, run_name=version, **kwargs)
