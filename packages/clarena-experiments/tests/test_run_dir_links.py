"""A run dir is untrusted input: no write follows a link out of it.

Each attack is a crafted run dir holding one symbolic link to a victim outside it. The command
must exit 1 with one line naming the link and the fix, before anything is written anywhere: the
victim keeps its bytes and no file appears inside or outside the run dir. The writers' own
refusal (no-follow opens) is tested separately, for a link made after the up-front check.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from clarena.experiments import cli
from clarena.experiments.errors import RunDirLinkError
from clarena.experiments.experiment_config import ExperimentConfig
from clarena.experiments.running import results
from clarena.experiments.runs.run_dir import check_run_dir, open_in_run_dir
from clarena.experiments.runs.run_lock import LOCK_FILE, RunLock, claim_run_dir
from clarena.experiments.runs.run_log import RunLogHandler
from clarena.experiments.testing import quick_run_overrides

VICTIM = b"the victim's own bytes\n"

TINY = quick_run_overrides(1)

#: Paths in a run dir that clarena (or Hydra) writes, and whether the link points at a dir.
WRITTEN_PATHS: list[tuple[str, bool]] = [
    (LOCK_FILE, False),
    ("clarena.log", False),
    ("results", True),
    ("results/acc.csv", False),
    (".hydra", True),
    ("checkpoints", True),
    ("checkpoints/resume_state.pt", False),
    ("saved_model.pt", False),
    ("lightning_logs", True),
]


def tree(root: Path) -> dict[str, object]:
    """Everything under ``root`` without following links: file bytes, link targets, dirs."""
    found: dict[str, object] = {}
    for current, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(current) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                found[key] = ("link", os.readlink(path))
            elif path.is_dir():
                found[key] = "dir"
            else:
                found[key] = path.read_bytes()
    return found


def crafted_run_dir(tmp_path: Path, link: str, to_dir: bool) -> tuple[Path, Path]:
    """``run/`` of a finished-looking run (junk resume state) with ``link`` -> ``outside/``."""
    run, outside = tmp_path / "run", tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(VICTIM)
    (outside / "resume_state.pt").write_bytes(b"junk")
    (run / "checkpoints").mkdir(parents=True)
    (run / "results").mkdir()
    if not link.startswith("checkpoints"):
        (run / "checkpoints" / "resume_state.pt").write_bytes(b"junk")
    if link == "results":
        (run / "results").rmdir()
    if link == "checkpoints":
        (run / "checkpoints").rmdir()
    target = outside if to_dir else outside / "victim"
    (run / link).symlink_to(target)
    return run, target


@pytest.mark.parametrize("mode", ["resume", "overwrite"])
@pytest.mark.parametrize(("link", "to_dir"), WRITTEN_PATHS, ids=[p for p, _ in WRITTEN_PATHS])
def test_a_link_out_of_the_run_dir_is_refused_before_anything_is_written(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    link: str,
    to_dir: bool,
    mode: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    run, target = crafted_run_dir(tmp_path, link, to_dir)
    before = tree(tmp_path)
    where = [f"resume={run}"] if mode == "resume" else [f"output_dir={run}", "overwrite=true"]
    with pytest.raises(SystemExit) as exited:
        cli.main(["experiment=example_clmain_train", *TINY, *where])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == (
        f"clarena: RunDirLinkError: The run dir '{run}' holds a symbolic link out of it, "
        f"'{run / link}' -> '{target}'; clarena writes only inside its run dir and follows no "
        f"link out of it. Remove it (rm '{run / link}') or choose another output_dir."
    )
    assert tree(tmp_path) == before
    assert (tmp_path / "outside" / "victim").read_bytes() == VICTIM


def test_a_link_in_a_sweep_dir_is_refused_before_any_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    sweep, outside = tmp_path / "sweep", tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(VICTIM)
    sweep.mkdir()
    (sweep / "multirun_summary.csv").symlink_to(outside / "victim")
    before = tree(tmp_path)
    with pytest.raises(SystemExit) as exited:
        cli.main(["-m", "experiment=example_clmain_train", *TINY, f"hydra.sweep.dir={sweep}"])
    assert exited.value.code == 1
    assert (
        "holds a symbolic link out of it, '" + str(sweep / "multirun_summary.csv")
        in (capsys.readouterr().err.splitlines()[0])
    )
    assert tree(tmp_path) == before


def test_links_that_stay_inside_the_run_dir_are_kept(tmp_path: Path) -> None:
    """A logger's ``wandb/latest-run -> run-1`` link (relative, inside) is not refused."""
    (tmp_path / "wandb" / "run-1").mkdir(parents=True)
    (tmp_path / "wandb" / "latest-run").symlink_to("run-1")
    check_run_dir(tmp_path)
    (tmp_path / "wandb" / "up").symlink_to("../..")
    with pytest.raises(RunDirLinkError, match=r"a symbolic link out of it, '.*up' -> '\.\./\.\.'"):
        check_run_dir(tmp_path)


def test_a_hard_linked_file_and_a_fifo_are_refused(tmp_path: Path) -> None:
    run, outside = tmp_path / "run", tmp_path / "outside"
    run.mkdir()
    outside.mkdir()
    (outside / "victim").write_bytes(VICTIM)
    os.link(outside / "victim", run / "clarena.log")
    with pytest.raises(RunDirLinkError) as error:
        check_run_dir(run)
    assert f"holds a file with 2 hard links, '{run / 'clarena.log'}'" in str(error.value)
    (run / "clarena.log").unlink()
    os.mkfifo(run / LOCK_FILE)
    with pytest.raises(RunDirLinkError, match=r"holds a special file"):
        check_run_dir(run)
    # The writers refuse it too, without blocking on the FIFO.
    with pytest.raises(RunDirLinkError, match=r"is a special file"):
        RunLock(run).acquire()
    assert (outside / "victim").read_bytes() == VICTIM


@pytest.fixture
def linked(tmp_path: Path) -> Path:
    """A run dir whose every written file is a link to the victim (made after any check)."""
    run, outside = tmp_path / "run", tmp_path / "outside"
    (run / "results").mkdir(parents=True)
    outside.mkdir()
    (outside / "victim").write_bytes(VICTIM)
    for name in (LOCK_FILE, "clarena.log", "results/acc.csv", "results/summary.json", "a.png"):
        (run / name).symlink_to(outside / "victim")
    return run


def test_the_lock_follows_no_link(linked: Path) -> None:
    with pytest.raises(RunDirLinkError, match=rf"'{linked / LOCK_FILE}' is a symbolic link"):
        RunLock(linked).acquire()
    assert (linked.parent / "outside" / "victim").read_bytes() == VICTIM


def test_the_run_log_follows_no_link(linked: Path) -> None:
    with pytest.raises(RunDirLinkError, match=r"clarena.log' is a symbolic link"):
        RunLogHandler(str(linked / "clarena.log"))
    assert (linked.parent / "outside" / "victim").read_bytes() == VICTIM


def test_the_run_log_appends_to_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "clarena.log").write_text("first\n")
    handler = RunLogHandler(str(tmp_path / "clarena.log"))
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.emit(logging.makeLogRecord({"msg": "second"}))
    handler.close()
    assert (tmp_path / "clarena.log").read_text() == "first\nsecond\n"


def test_result_writers_follow_no_link(linked: Path) -> None:
    rows = {1: {1: 0.5}}
    with pytest.raises(RunDirLinkError):
        results.write_accuracy_csv(linked / "results" / "acc.csv", rows, [1])
    with pytest.raises(RunDirLinkError):
        results.write_task_accuracy_csv(linked / "results" / "acc.csv", {1: 0.5})
    with pytest.raises(RunDirLinkError):
        results.write_json(linked / "results" / "summary.json", {"a": 1})
    with pytest.raises(RunDirLinkError):
        results.plot_average_accuracy(linked / "a.png", rows)
    assert (linked.parent / "outside" / "victim").read_bytes() == VICTIM


def test_result_writers_replace_a_regular_files_contents(tmp_path: Path) -> None:
    path = tmp_path / "results" / "acc.csv"
    results.write_accuracy_csv(path, {1: {1: 0.25}, 2: {1: 0.5, 2: 1.0}}, [1, 2])
    longer = path.read_bytes()
    results.write_accuracy_csv(path, {1: {1: 0.25}}, [1])
    assert path.read_bytes() == (
        b"after_training_task,average_accuracy,test_on_task_1\r\n1,0.25,0.25\r\n"
    )
    assert len(longer) > len(path.read_bytes())
    results.plot_average_accuracy(tmp_path / "plot.png", {1: {1: 0.5}})
    assert (tmp_path / "plot.png").read_bytes().startswith(b"\x89PNG")


def test_the_pipeline_checks_the_run_dir_before_taking_the_lock(tmp_path: Path) -> None:
    run, outside = tmp_path / "run", tmp_path / "outside"
    run.mkdir()
    outside.mkdir()
    (run / "results").symlink_to(outside)
    with (
        pytest.raises(RunDirLinkError, match=r"holds a symbolic link out of it"),
        claim_run_dir(
            run, ExperimentConfig.parse(OmegaConf.create({"resume": None}), strict=False)
        ),
    ):
        pass
    assert sorted(p.name for p in run.iterdir()) == ["results"]
    assert list(outside.iterdir()) == []


def test_open_in_run_dir_refuses_truncating_on_open(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ftruncate"):
        open_in_run_dir(tmp_path / "f", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    assert not (tmp_path / "f").exists()
