"""Optional trackers: lightning_loggers=wandb (offline) and lightning_loggers=mlflow (local store).

Each test runs only where its tracker is installed (the extras ``[wandb]`` / ``[mlflow]``); the
missing-package message is checked everywhere.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

from clarena.experiments import loggers

SHORT_RUN = ("train_tasks=2", "trainer.max_epochs=1", "++trainer.limit_train_batches=2")


@pytest.mark.parametrize(
    ("builder", "module"), [("wandb_logger", "wandb"), ("mlflow_logger", "mlflow")]
)
def test_missing_tracker_names_the_extra(
    builder: str, module: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a)
    )
    with pytest.raises(ImportError, match=rf"pip install 'clarena-experiments\[{module}\]'"):
        getattr(loggers, builder)(str(tmp_path), "task_1")


@pytest.mark.slow
def test_wandb_offline_writes_one_run_per_task(
    run_clarena: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = run_clarena("example_clmain_train", "lightning_loggers=wandb", *SHORT_RUN)
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    assert all(list(run.glob("*.wandb")) for run in runs)


@pytest.mark.slow
def test_mlflow_logs_each_task_to_the_local_store(run_clarena: Callable[..., Path]) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run_dir = run_clarena("example_clmain_train", "lightning_loggers=mlflow", *SHORT_RUN)
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("clarena")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.info.run_name for run in runs) == ["task_1", "task_2"]
    assert all(run.data.metrics for run in runs)
