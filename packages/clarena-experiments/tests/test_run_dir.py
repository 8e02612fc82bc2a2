"""One run per output dir: the run lock, refusing a finished run's dir, and the run's log."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from clarena.experiments import cli
from clarena.experiments.experiment_config import ExperimentConfig
from clarena.experiments.runs.run_lock import (
    LOCK_FILE,
    RunDirBusyError,
    RunLock,
    claim_run_dir,
    is_global_zero,
)
from clarena.experiments.runs.run_log import warnings_to_log
from clarena.experiments.runs.sweep import SUMMARY_FILE
from clarena.experiments.testing import quick_run_overrides

Run = Callable[..., Path]

TINY = quick_run_overrides(2, save_model=None)


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file under ``run_dir`` (but the lock) and its bytes."""
    return {
        str(path.relative_to(run_dir)): path.read_bytes()
        for path in sorted(run_dir.rglob("*"))
        if path.is_file() and path.name != LOCK_FILE
    }


def test_second_run_into_a_locked_dir_fails_naming_the_first(
    run_clarena: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = run_clarena("example_clmain_train", *TINY, "save_model=true")
    before = snapshot(run_dir)
    assert {"results/acc.csv", "saved_model.pt", "checkpoints/resume_state.pt"} <= set(before)
    capsys.readouterr()
    lock = RunLock(run_dir, command="clarena experiment=first_run")
    lock.acquire()
    try:
        # Neither starting clean nor continuing gets past a live run's lock.
        for extra in (["overwrite=true"], [f"resume={run_dir}"]):
            with pytest.raises(SystemExit) as exited:
                run_clarena("example_clmain_train", *TINY, *extra)
            assert exited.value.code == 1
            error = capsys.readouterr().err
            assert "RunDirBusyError" in error
            assert f"Another run is writing into the output dir '{run_dir}'" in error
            assert f"pid {os.getpid()}" in error
            assert "clarena experiment=first_run" in error
            assert snapshot(run_dir) == before
    finally:
        lock.release()
    assert not (run_dir / LOCK_FILE).exists()


def test_the_pipeline_takes_the_lock_too(tmp_path: Path) -> None:
    """The lock the pipeline holds (also for dirs only Hydra resolves, e.g. the default one)."""
    cfg = OmegaConf.create({"output_dir": str(tmp_path), "resume": None})
    with claim_run_dir(tmp_path, ExperimentConfig.parse(cfg, strict=False)):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(RunDirBusyError, match=f"pid {os.getpid()} on "):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_FILE).exists()
    RunLock(tmp_path).acquire()


HOLD = """
import sys, time
from pathlib import Path
from clarena.experiments.runs.run_lock import RunLock
RunLock(Path(sys.argv[1]), command="holder").acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_lock_of_another_process_and_its_stale_file_once_it_is_killed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(RunDirBusyError, match=f"pid {holder.pid} on .*: holder"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    # Killed: its lock file stays, the kernel dropped its lock; the next run takes it over.
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid
    cfg = OmegaConf.create({"resume": None})
    with claim_run_dir(tmp_path, ExperimentConfig.parse(cfg, strict=False)):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    notice = capsys.readouterr().err
    assert f"took over the lock of {tmp_path} from a run that ended without releasing it" in notice
    assert f"(pid {holder.pid} on " in notice


def test_ddp_ranks_other_than_zero_take_no_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert is_global_zero()
    lock = RunLock(tmp_path)
    lock.acquire()
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not is_global_zero()
    # Rank 1 of the run that holds the lock goes on.
    with claim_run_dir(
        tmp_path, ExperimentConfig.parse(OmegaConf.create({"resume": None}), strict=False)
    ):
        pass
    lock.release()


def test_new_run_into_a_finished_runs_dir_is_refused_unless_overwrite(
    run_clarena: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = run_clarena("example_clmain_hat", *TINY, "save_model=true", output="run")
    before = snapshot(run_dir)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run_clarena("example_clmain_train", *TINY, "save_model=false", output="run")
    assert exited.value.code == 1
    error = capsys.readouterr().err
    assert "RunDirUsedError" in error
    assert f"The output dir '{run_dir}' holds a previous run's files (" in error
    assert "results/" in error
    assert "saved_model.pt" in error
    assert "pass overwrite=true to delete them and start clean" in error
    # Refused before Hydra wrote anything: the HAT run's .hydra/ is its own still.
    assert snapshot(run_dir) == before

    run_clarena("example_clmain_train", *TINY, "save_model=false", "overwrite=true", output="run")
    # No HAT model beside Finetuning's results, and the log is the new run's only.
    assert not (run_dir / "saved_model.pt").exists()
    summary = json.loads((run_dir / "results" / "summary.json").read_text())
    assert summary["algorithm"] == "Finetuning"
    assert "capacity_per_task" not in summary
    log = (run_dir / "clarena.log").read_text()
    assert "clarena.experiments.algorithms.HAT" not in log
    assert "overwrite=true: deleted the previous run's" in log
    assert "cl_algorithm: clarena.experiments.algorithms.Finetuning" in log


def test_sweep_runs_every_job_and_lists_the_failed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep"
    arguments = [
        "-m",
        "experiment=example_clmain_train",
        "cl_algorithm=finetuning,independent",
        # Task 6 does not exist: those jobs fail at run time.
        "train_tasks=1,6",
        "save_model=false",
        *TINY[1:],
        f"hydra.sweep.dir={sweep}",
    ]
    with pytest.raises(SystemExit) as exited:
        cli.main(arguments)
    assert exited.value.code == 1
    with (sweep / SUMMARY_FILE).open(newline="") as file:
        rows = list(csv.DictReader(file))
    expected_error = (
        "clarena: PipelineConfigError: train_tasks names tasks [6], but the dataset has tasks 1..5."
    )
    assert [(r["job"], r["cl_algorithm"], r["train_tasks"], r["status"]) for r in rows] == [
        ("0", "finetuning", "1", "ok"),
        ("1", "finetuning", "6", "failed"),
        ("2", "independent", "1", "ok"),
        ("3", "independent", "6", "failed"),
    ]
    assert [r["error"] for r in rows] == ["", expected_error, "", expected_error]
    for row in rows:
        has_results = (Path(row["output_dir"]) / "results" / "acc.csv").is_file()
        assert has_results == (row["status"] == "ok")
    err = capsys.readouterr().err
    assert err.count(expected_error) == 2
    assert "clarena: 2 sweep job(s) failed" in err
    # The same sweep again into the same dir is refused before any job starts.
    before = snapshot(sweep)
    with pytest.raises(SystemExit) as exited:
        cli.main(arguments)
    assert exited.value.code == 1
    assert f"RunDirUsedError: The output dir '{sweep / '0'}' holds a previous run's files" in (
        capsys.readouterr().err
    )
    assert snapshot(sweep) == before


def test_clarena_log_holds_the_config_and_each_tasks_accuracies(run_clarena: Run) -> None:
    run_dir = run_clarena("example_clmain_train", *TINY, "save_model=true")
    log = (run_dir / "clarena.log").read_text()
    with (run_dir / "results" / "acc.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert "cl_algorithm: clarena.experiments.algorithms.Finetuning" in log
    assert "train_tasks: 2" in log
    for row in rows:
        task = int(row["after_training_task"])
        tested = [f"task {t} {float(row[f'test_on_task_{t}']):.4f}" for t in range(1, task + 1)]
        average = float(row["average_accuracy"])
        assert (
            f"after training task {task}: test accuracy {', '.join(tested)}; "
            f"average {average:.4f}" in log
        )
    assert f"saved the model to {run_dir / 'saved_model.pt'}" in log
    run_clarena("example_clmain_train", *TINY, f"resume={run_dir}")
    log = (run_dir / "clarena.log").read_text()
    assert "resumed: tasks [1, 2] trained before; nothing left to train" in log


def test_warnings_go_to_the_log_and_still_show(caplog: pytest.LogCaptureFixture) -> None:
    shown = []
    original = warnings.showwarning
    warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
    try:
        with warnings_to_log(), warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("checkpoint is old", UserWarning, stacklevel=1)
    finally:
        warnings.showwarning = original
    assert shown == ["checkpoint is old"]
    assert [(r.name, r.levelname) for r in caplog.records] == [("py.warnings", "WARNING")]
    assert "UserWarning: checkpoint is old" in caplog.records[0].getMessage()
