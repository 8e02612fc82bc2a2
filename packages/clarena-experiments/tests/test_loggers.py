"""Optional trackers: lightning_loggers=wandb (offline) and lightning_loggers=mlflow (local store).

Each test runs only where its tracker is installed (the extras ``[wandb]`` / ``[mlflow]``); the
missing-package message is checked everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from clarena.experiments import __version__
from clarena.experiments.running import loggers

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


def _wandb_records(path: Path) -> list[Any]:
    """The records of an offline W&B run file (``run-<id>.wandb``).

    The file is a 7-byte header, then LevelDB's log format: 32 KiB blocks of chunks, each
    ``crc32c (4) | length (2) | type (1) | data``, type 1 a whole record, 2/3/4 its first,
    middle and last parts; a block's tail shorter than a chunk header is padding. Each record
    is a ``wandb_internal_pb2.Record``.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        left = block - position % block
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if left < 7 or (length == 0 and kind == 0):
            position += left
            continue
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _wandb_config(run: Path) -> dict[str, Any]:
    (path,) = run.glob("run-*.wandb")
    config: dict[str, Any] = {}
    for record in _wandb_records(path):
        kind = record.WhichOneof("record_type")
        updates = record.config.update if kind == "config" else record.run.config.update
        if kind in ("config", "run"):
            config.update({item.key: json.loads(item.value_json) for item in updates})
    return config


def _expected_params(run_dir: Path) -> dict[str, Any]:
    """The run's config as Hydra saved it, flattened as the trackers should hold it."""
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    return loggers.flatten_config(OmegaConf.to_container(saved, resolve=True))


def _check_params(found: dict[str, Any], expected: dict[str, Any], as_text: bool) -> None:
    for key, value in expected.items():
        assert key in found, key
        assert found[key] == (str(value) if as_text else value), key
    assert found["versions.clarena-experiments"] == __version__
    assert found["versions.torch"] == torch.__version__


def test_flatten_config_gives_dotted_keys_and_json_lists() -> None:
    flat = loggers.flatten_config(
        {"backbone": {"hidden_dims": [256, 100], "bias": True}, "lr_scheduler": {}, "seed": 1}
    )
    assert flat == {
        "backbone.hidden_dims": "[256, 100]",
        "backbone.bias": True,
        "lr_scheduler": "{}",
        "seed": 1,
    }


def test_tensorboard_event_file_and_hparams_yaml_hold_the_run_config(
    run_clarena: Callable[..., Path],
) -> None:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir = run_clarena(
        "example_clmain_train", *SHORT_RUN, "callbacks=none", "optimizer.lr=0.0123"
    )
    expected = _expected_params(run_dir)
    assert expected["optimizer.lr"] == 0.0123
    for task in ("task_1", "task_2"):
        folder = run_dir / "lightning_logs" / "tensorboard" / task
        assert yaml.safe_load((folder / "hparams.yaml").read_text()) == {
            **expected,
            **loggers.versions(),
        }
        found: dict[str, Any] = {}
        for path in folder.glob("events.out.tfevents.*"):
            for event in EventFileLoader(str(path)).Load():
                for value in event.summary.value:
                    if value.tag == "_hparams_/session_start_info":
                        data = plugin_data_pb2.HParamsPluginData.FromString(
                            value.metadata.plugin_data.content
                        )
                        for key, item in data.session_start_info.hparams.items():
                            found[key] = getattr(item, item.WhichOneof("kind"))
        # TensorBoard stores numbers as floats, text as text (None as "None").
        as_stored = {
            key: float(value)
            if isinstance(value, int | float) and not isinstance(value, bool)
            else value
            if isinstance(value, str | bool)
            else str(value)
            for key, value in expected.items()
        }
        _check_params(found, as_stored, as_text=False)


@pytest.mark.slow
def test_wandb_offline_run_holds_the_run_config(
    run_clarena: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = run_clarena(
        "example_clmain_train", "lightning_loggers=wandb", *SHORT_RUN, "global_seed=7"
    )
    # The last task's run stays open until the process exits (wandb's exit hook finishes it);
    # in-process, finish it here so its file is complete.
    import wandb

    wandb.finish()
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    expected = _expected_params(run_dir)
    assert expected["global_seed"] == 7
    for run in runs:
        _check_params(_wandb_config(run), expected, as_text=False)


@pytest.mark.slow
def test_mlflow_runs_hold_the_run_config_as_params(run_clarena: Callable[..., Path]) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run_dir = run_clarena("example_clmain_train", "lightning_loggers=mlflow", *SHORT_RUN)
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("clarena")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    for run in runs:
        _check_params(run.data.params, _expected_params(run_dir), as_text=True)


def test_overwrite_deletes_what_the_trackers_left(
    run_clarena: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = run_clarena("example_clmain_train", *SHORT_RUN, "callbacks=none", output="run")
    (run_dir / "wandb" / "offline-run-1").mkdir(parents=True)
    (run_dir / "mlflow.db").write_bytes(b"old store")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_clarena("example_clmain_train", *SHORT_RUN, "callbacks=none", output="run")
    error = capsys.readouterr().err
    assert "wandb/" in error
    assert "mlflow.db" in error
    run_clarena(
        "example_clmain_train", *SHORT_RUN, "callbacks=none", "overwrite=true", output="run"
    )
    assert not (run_dir / "wandb").exists()
    assert not (run_dir / "mlflow.db").exists()
