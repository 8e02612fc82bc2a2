"""Determinism (same seed, same acc.csv bytes) and resuming an interrupted CL experiment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch import Callback

from clarena.experiments import cli
from clarena.experiments.running.pipelines import cl
from clarena.experiments.runs.resume import RESUME_FILE
from clarena.experiments.testing import quick_run_overrides

Run = Callable[..., Path]

#: 4 short tasks: one epoch of 3 batches each, no logs or plots.
TINY = quick_run_overrides(4)

#: Full epochs (2 of them) per task, so that a task lasts long enough to be killed in.
FULL_EPOCH = quick_run_overrides(max_epochs=2, train_batches=None, val_batches=None)


class Interrupted(BaseException):
    """Stands in for a kill: not an Exception, so nothing on the way catches it."""


def acc_bytes(run_dir: Path) -> bytes:
    return (run_dir / "results" / "acc.csv").read_bytes()


def interrupt_after_task(monkeypatch: pytest.MonkeyPatch, task: int) -> None:
    """Raise :class:`Interrupted` right after the resume state of ``task`` is written."""
    original = cl.save_resume_state

    def save_then_stop(run_dir: Path, cfg: Any, **state: Any) -> Path:
        path = original(run_dir, cfg, **state)
        if state["trained_tasks"][-1] == task:
            raise Interrupted
        return path

    monkeypatch.setattr(cl, "save_resume_state", save_then_stop)


class StopInTask(Callback):
    """Raise :class:`Interrupted` in the middle of a fit (after its second training batch)."""

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if args[-1] == 1:
            raise Interrupted


def interrupt_during_task(monkeypatch: pytest.MonkeyPatch, task: int) -> None:
    original = cl.make_trainer

    def make(cfg: Any, run_dir: Path, version: str | None) -> Any:
        trainer = original(cfg, run_dir, version)
        if version == f"task_{task}":
            trainer.callbacks.append(StopInTask())
        return trainer

    monkeypatch.setattr(cl, "make_trainer", make)


def test_same_seed_gives_identical_acc_csv(run_clarena: Run) -> None:
    first = run_clarena("example_clmain_train", *TINY, output="first")
    second = run_clarena("example_clmain_train", *TINY, output="second")
    assert acc_bytes(first) == acc_bytes(second)
    assert acc_bytes(first).count(b"\n") == 5


@pytest.mark.parametrize(
    ("experiment", "interrupt"),
    [
        ("example_clmain_train", "between"),
        ("example_clmain_hat", "during"),
        ("example_clmain_wsn", "between"),
        # FG-AdaHAT's per-task importance buffers grow with the tasks.
        ("example_clmain_fgadahat", "between"),
        ("example_clmain_dil", "between"),
    ],
)
def test_resume_after_interruption_ends_with_the_uninterrupted_acc_csv(
    run_clarena: Run, monkeypatch: pytest.MonkeyPatch, experiment: str, interrupt: str
) -> None:
    reference = run_clarena(experiment, *TINY, output="reference")
    with monkeypatch.context() as patch:
        if interrupt == "between":
            interrupt_after_task(patch, 2)
        else:
            interrupt_during_task(patch, 3)
        with pytest.raises(Interrupted):
            run_clarena(experiment, *TINY, output="interrupted")
    interrupted = reference.parent / "interrupted"
    # Rows of tasks 1 and 2 are on disk; the resume state holds tasks 1 and 2.
    assert acc_bytes(interrupted).count(b"\n") == 3
    assert (interrupted / RESUME_FILE).is_file()
    cli.main([f"experiment={experiment}", *TINY, f"resume={interrupted}"])
    assert acc_bytes(interrupted) == acc_bytes(reference)
    assert (interrupted / "results" / "summary.json").read_text() == (
        reference / "results" / "summary.json"
    ).read_text()


def files(run_dir: Path) -> dict[str, bytes]:
    """Every file under ``run_dir`` and its bytes."""
    return {
        str(path.relative_to(run_dir)): path.read_bytes()
        for path in sorted(run_dir.rglob("*"))
        if path.is_file()
    }


def test_resume_of_a_finished_run_rewrites_nothing_and_says_so(
    run_clarena: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = ["train_tasks=2", *TINY[1:], "save_model=true"]
    run_dir = run_clarena("example_clmain_train", *overrides)
    before = files(run_dir)
    assert {"results/acc.csv", "results/summary.json", "saved_model.pt"} <= set(before)
    capsys.readouterr()
    # Returns: exit status 0.
    cli.main(["experiment=example_clmain_train", *overrides, f"resume={run_dir}"])
    assert capsys.readouterr().out == (
        f"clarena: The run in '{run_dir}' already trained every task of train_tasks [1, 2] and "
        f"wrote its results: nothing was trained or rewritten. To train more tasks, resume it "
        f"with a longer train_tasks.\n"
    )
    after = files(run_dir)
    # Only the log grew, by the continuation's lines; no .hydra/resume_<time>, no logs.
    log_before = before.pop("clarena.log")
    log_after = after.pop("clarena.log")
    assert after == before
    assert log_after.startswith(log_before)
    assert b"already trained every task of train_tasks [1, 2]" in log_after[len(log_before) :]


def test_resume_after_the_last_task_writes_the_missing_results(run_clarena: Run) -> None:
    """Killed between the last resume state and the summary: the resume writes what is missing."""
    overrides = ["train_tasks=2", *TINY[1:], "save_model=true"]
    run_dir = run_clarena("example_clmain_train", *overrides)
    before = files(run_dir)
    (run_dir / "results" / "summary.json").unlink()
    (run_dir / "saved_model.pt").unlink()
    cli.main(["experiment=example_clmain_train", *overrides, f"resume={run_dir}"])
    after = files(run_dir)
    assert after["results/summary.json"] == before["results/summary.json"]
    assert after["results/acc.csv"] == before["results/acc.csv"]
    assert "saved_model.pt" in after


@pytest.mark.parametrize(
    ("make_dir", "overrides", "expected"),
    [
        (False, [], "is not a directory. Pass the output dir of the interrupted run"),
        (True, [], "holds no checkpoints/resume_state.pt"),
    ],
)
def test_bad_resume_path_is_a_clear_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make_dir: bool,
    overrides: list[str],
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "old_run"
    if make_dir:
        target.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["experiment=example_clmain_train", *TINY, f"resume={target}", *overrides])
    assert exit_info.value.code == 1
    assert expected in capsys.readouterr().err
    # Nothing was created: no run dir, no stray outputs/.
    assert sorted(p.name for p in tmp_path.iterdir()) == (["old_run"] if make_dir else [])
    assert not make_dir or list(target.iterdir()) == []


def test_resume_with_a_different_config_is_refused(
    run_clarena: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = run_clarena("example_clmain_train", "train_tasks=1", *TINY[1:])
    before = acc_bytes(run_dir)
    config = (run_dir / ".hydra" / "config.yaml").read_bytes()
    overrides = ["train_tasks=1", *TINY[1:], "global_seed=7", f"resume={run_dir}"]
    with pytest.raises(SystemExit):
        cli.main(["experiment=example_clmain_train", *overrides])
    err = capsys.readouterr().err
    assert "the config differs from the interrupted run's in global_seed" in err
    assert "saved 1, now 7" in err
    assert acc_bytes(run_dir) == before
    # The interrupted run's Hydra files stay; the refused continuation leaves no
    # .hydra/resume_<time>.
    assert (run_dir / ".hydra" / "config.yaml").read_bytes() == config
    assert not list((run_dir / ".hydra").glob("resume_*"))


def test_resume_with_more_train_tasks_extends_the_run(run_clarena: Run) -> None:
    rest = TINY[1:]
    reference = run_clarena("example_clmain_train", "train_tasks=3", *rest, output="reference")
    run_dir = run_clarena("example_clmain_train", "train_tasks=2", *rest, output="extended")
    cli.main(["experiment=example_clmain_train", "train_tasks=3", *rest, f"resume={run_dir}"])
    assert acc_bytes(run_dir) == acc_bytes(reference)


@pytest.mark.slow
def test_sigkill_during_a_run_then_resume_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    """A real kill (SIGKILL of the ``clarena`` process) once task 2's row is on disk."""
    clarena = Path(sys.executable).parent / "clarena"
    common = [str(clarena), "experiment=example_clmain_hat", "train_tasks=4", *FULL_EPOCH]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*extra: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*common, *extra], cwd=tmp_path, env=environment, capture_output=True, timeout=300
        )

    reference = tmp_path / "reference"
    assert run(f"output_dir={reference}").returncode == 0
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [*common, f"output_dir={killed}"],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while b"\n2," not in _read(killed / "results" / "acc.csv") and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert acc_bytes(killed).count(b"\n") < 5
    assert run(f"resume={killed}").returncode == 0
    assert acc_bytes(killed) == acc_bytes(reference)


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.is_file() else b""
