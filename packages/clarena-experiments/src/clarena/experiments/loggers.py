"""Optional experiment trackers as Lightning loggers: Weights & Biases (offline) and MLflow.

The pipelines build every ``lightning_loggers`` entry with ``save_dir=<output dir>`` and
``version=task_<N>`` (one log per fit). These builders map that onto each tracker, keep
everything on local disk (nothing is sent anywhere), and say how to install a missing tracker:

- :func:`wandb_logger`: an offline W&B run per task under ``<output dir>/wandb``, grouped by the
  output dir's name; ``wandb sync <output dir>/wandb/offline-run-*`` uploads them later.
- :func:`mlflow_logger`: an MLflow run per task in the local SQLite store
  ``<output dir>/mlflow.db`` (``mlflow ui --backend-store-uri sqlite:///<output dir>/mlflow.db``);
  MLflow 3 refuses its old ``mlruns/`` file store, so the store is one SQLite file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger


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
