"""One run per output dir: the run lock, and the refusal to mix a new run with a previous one's files.

A run holds ``<run dir>/.clarena.lock`` while it works: an exclusive ``flock`` on the file, which
records the holder's pid, host, start time and command. A second run into the same dir fails at
once with a message naming the first. The kernel drops the ``flock`` when its process ends, however
it ends, so a lock file left by a killed run is taken over (with a notice); a clean end removes it.

Only global rank 0 takes the lock: under DDP the other ranks of the same run run the same
command in the same dir (Lightning starts them with ``LOCAL_RANK`` etc. set) and write nothing
there but their own log.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import shlex
import shutil
import socket
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clarena.experiments.errors import RunDirBusyError, RunDirUsedError
from clarena.experiments.runs.run_dir import check_output_dir, check_run_dir, open_in_run_dir

if TYPE_CHECKING:
    from clarena.experiments.experiment_config import ExperimentConfig

log = logging.getLogger(__name__)

#: The lock file, in the run dir.
LOCK_FILE = ".clarena.lock"

#: Files and folders of a run, relative to its dir, besides the configured metric files and the
#: model file: a new run into a dir holding any of them would mix its results with the old ones.
RUN_OUTPUTS: tuple[str, ...] = (
    "results",
    "checkpoints",
    "lightning_logs",
    "rank_check",
    "error.txt",
    # What lightning_loggers=wandb / mlflow write (clarena.experiments.loggers.TRACKER_OUTPUTS).
    "wandb",
    "mlflow.db",
)

#: Environment variables through which launchers (Lightning DDP, torchrun, SLURM, LSF) give a
#: process its rank; a process with any of them non-zero is not global rank 0.
RANK_VARIABLES: tuple[str, ...] = (
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "SLURM_PROCID",
    "JSM_NAMESPACE_RANK",
)


def is_global_zero() -> bool:
    """Whether this process is global rank 0 (or not part of a multi-process run)."""
    return all(os.environ.get(name, "0").strip() in ("", "0") for name in RANK_VARIABLES)


def _busy(run_dir: Path, holder: dict[str, Any]) -> RunDirBusyError:
    """The error for ``run_dir`` locked by ``holder`` (what its lock file says, if readable)."""
    return RunDirBusyError(
        f"Another run is writing into the output dir '{run_dir}' ({_holder_text(holder)}). Wait "
        f"for it to end or choose another output_dir; two runs in one dir would overwrite each "
        f"other's results, model and resume state."
    )


def _holder_text(holder: dict[str, Any]) -> str:
    return (
        f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started "
        f"{holder.get('started', '?')}: {holder.get('command', '?')}"
    )


def _read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 1 << 16).decode(errors="replace")
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


class RunLock:
    """The exclusive lock of one run dir (:data:`LOCK_FILE`).

    Args:
        run_dir: the run's output dir (created if missing).
        command: the command line recorded for whoever finds the dir locked.
    """

    def __init__(self, run_dir: Path, command: str | None = None) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.command = command if command is not None else shlex.join(sys.argv)
        self._fd: int | None = None

    def acquire(self) -> dict[str, Any] | None:
        """Take the lock; returns the record of a previous holder that died holding it, if any.

        Raises:
            RunDirBusyError: a live process holds it.
            RunDirLinkError: the lock file is a link or special file (nothing is written).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = open_in_run_dir(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                holder = _read_holder(fd)
                os.close(fd)
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise _busy(self.path.parent, holder) from None
            # The holder may have released (and removed the file) between our open and flock:
            # then we hold a lock on a file no one else will open; start over.
            try:
                same = os.path.samestat(os.fstat(fd), os.lstat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = _read_holder(fd) or None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": self.command,
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)
        self._fd = fd
        return stale

    def release(self) -> None:
        """Remove the lock file and drop the lock (removed first, so no one locks a dead file)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def previous_run_files(run_dir: Path, extra: Iterable[str] = ()) -> list[Path]:
    """The files and folders of a previous run in ``run_dir``: :data:`RUN_OUTPUTS` and ``extra``.

    ``extra`` holds paths relative to ``run_dir`` (the model file, the metric files).
    """
    names = dict.fromkeys([*RUN_OUTPUTS, *extra])
    found = [run_dir / name for name in names if (run_dir / name).exists()]
    found += sorted((run_dir / ".hydra").glob("resume_*"))
    # A metric file inside results/ is listed (and deleted) with results/.
    return [path for path in found if not any(other in path.parents for other in found)]


def run_files(config: ExperimentConfig) -> list[str]:
    """The model file and the metric files ``config`` writes, relative to the run dir."""
    return [config.model_file, *config.metrics.paths()]


def _listing(run_dir: Path, paths: list[Path]) -> str:
    return ", ".join(f"{path.relative_to(run_dir)}{'/' if path.is_dir() else ''}" for path in paths)


def check_previous_run(run_dir: Path, extra: Iterable[str], overwrite: bool) -> list[Path]:
    """Refuse ``run_dir`` when it holds a previous run's files, or delete them with ``overwrite``.

    Deletes exactly :func:`previous_run_files` (results, checkpoints with the resume state,
    Lightning logs, rank checks, the model file, metric files, earlier continuations' Hydra
    configs) and truncates ``clarena.log``; anything else in the dir stays.

    Returns:
        The deleted paths (empty when the dir held no previous run).

    Raises:
        RunDirUsedError: the dir holds them and ``overwrite`` is false.
    """
    found = previous_run_files(run_dir, extra)
    if not found:
        return []
    listing = _listing(run_dir, found)
    if not overwrite:
        raise RunDirUsedError(
            f"The output dir '{run_dir}' holds a previous run's files ({listing}); a new run "
            f"there would mix its files with them. Choose another output_dir, continue that run "
            f"with resume={run_dir}, or pass overwrite=true to delete them and start clean."
        )
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    log_file = run_dir / "clarena.log"
    if log_file.is_file():
        fd = open_in_run_dir(log_file, os.O_WRONLY)
        os.ftruncate(fd, 0)
        os.close(fd)
    log.warning("overwrite=true: deleted the previous run's %s in %s", listing, run_dir)
    return found


def check_free(run_dir: Path) -> None:
    """Raise :class:`RunDirBusyError` when a live run holds ``run_dir``'s lock (taking nothing)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = open_in_run_dir(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        raise _busy(run_dir, _read_holder(fd)) from None
    finally:
        os.close(fd)


def check_command_line(arguments: list[str]) -> None:
    """Check the run dirs named on the command line before Hydra writes its ``.hydra/`` there.

    A single run whose ``output_dir=`` is a plain path must be a dir clarena can create and
    write; it, and each existing job dir of a sweep (``-m``) whose ``hydra.sweep.dir=`` is one,
    must hold no link out of it (the whole sweep dir is checked), must not be locked by a live
    run, and, unless ``resume=`` or ``overwrite=true`` is given, must not hold a previous run's
    files. The pipeline repeats the last three checks, the lock's under the lock.

    Raises:
        PipelineConfigError: ``output_dir`` cannot be created or written.
        RunDirLinkError: see :func:`clarena.experiments.run_dir.check_run_dir`.
        RunDirBusyError: see :func:`check_free`.
        RunDirUsedError: see :func:`check_previous_run`.
    """
    if not is_global_zero():
        return
    values = {a.partition("=")[0].lstrip("+~"): a.partition("=")[2] for a in arguments}
    if any(a in ("-m", "--multirun") for a in arguments):
        sweep_dir = values.get("hydra.sweep.dir")
        if not sweep_dir or "${" in sweep_dir or not Path(sweep_dir).is_dir():
            return
        check_run_dir(Path(sweep_dir))
        run_dirs = sorted(path for path in Path(sweep_dir).iterdir() if path.is_dir())
    else:
        output = values.get("output_dir")
        if not output or "${" in output:
            return
        check_output_dir(Path(output))
        check_run_dir(Path(output))
        run_dirs = [Path(output)]
    resuming = values.get("resume") not in (None, "", "null")
    overwrite = values.get("overwrite", "").lower() == "true"
    model_file = values.get("model_file") or "saved_model.pt"
    for run_dir in run_dirs:
        check_free(run_dir)
        if not (resuming or overwrite):
            check_previous_run(run_dir, [model_file], overwrite=False)


@contextlib.contextmanager
def claim_run_dir(run_dir: Path, config: ExperimentConfig) -> Iterator[None]:
    """Hold ``run_dir``'s lock while the body runs, after checking it for a previous run.

    A continuation (``resume`` set) takes the lock but keeps the previous files: they are
    its own. Processes other than global rank 0 do nothing here.

    Raises:
        RunDirLinkError: see :func:`clarena.experiments.run_dir.check_run_dir` (checked before
            the lock is taken).
        RunDirBusyError: another run holds the dir.
        RunDirUsedError: see :func:`check_previous_run`.
    """
    if not is_global_zero():
        yield
        return
    check_run_dir(run_dir)
    lock = RunLock(run_dir)
    stale = lock.acquire()
    try:
        if stale is not None:
            notice = (
                f"clarena: took over the lock of {run_dir} from a run that ended without "
                f"releasing it ({_holder_text(stale)})"
            )
            print(notice, file=sys.stderr)
            log.warning(notice)
        if config.resume is None:
            check_previous_run(run_dir, run_files(config), config.overwrite)
        yield
    finally:
        lock.release()
