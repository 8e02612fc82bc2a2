"""Writes stay inside the run dir: the up-front check of a run dir, and opening files without links.

A run dir may come from someone else (``resume=<dir>``, a copied or unpacked run). A symbolic
link in it (``.clarena.lock -> ~/.bashrc``, ``results -> /elsewhere``) would send clarena's
writes outside it: the lock's record, log lines, results, checkpoints, model files, Hydra's
configs. :func:`check_run_dir` walks the dir once, before anything is written into it (before
Hydra starts, and again before the run lock is taken), and refuses a link that leads out of the
dir, a hard-linked file and a special file (FIFO, socket, device). The files clarena opens in
place (the lock, the log, the result files) are then opened by :func:`open_in_run_dir`, which
follows no link, so a link made after the check fails instead of being followed.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from clarena.experiments.errors import PipelineConfigError, RunDirLinkError

_FIX = "Remove it (rm '{path}') or choose another output_dir."


def check_run_dir(run_dir: Path) -> None:
    """Refuse ``run_dir`` when a write into it could land outside it (nothing is written).

    Every entry under ``run_dir`` is looked at without following links: a symbolic link whose
    target resolves outside ``run_dir`` (or that cannot be resolved), a regular file with more
    than one name (a hard link: writing it writes the other names too) and anything that is
    neither a file nor a dir are refused. Links that stay inside (a logger's ``latest-run``) are
    kept. A missing ``run_dir`` passes.

    Raises:
        RunDirLinkError: naming the first such entry and how to remove it.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    root = run_dir.resolve()
    for current, dirs, files in os.walk(run_dir):
        for name in sorted(dirs + files):
            path = Path(current) / name
            problem = _problem(path, root)
            if problem is not None:
                raise RunDirLinkError(
                    f"The run dir '{run_dir}' holds {problem}; clarena writes only inside its run "
                    f"dir and follows no link out of it. " + _FIX.format(path=path)
                )


def _problem(path: Path, root: Path) -> str | None:
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(path)
        try:
            resolved = path.resolve(strict=False)
        except (OSError, RuntimeError):
            return f"a symbolic link that cannot be resolved, '{path}' -> '{target}'"
        if resolved.is_relative_to(root):
            return None
        return f"a symbolic link out of it, '{path}' -> '{target}'"
    if stat.S_ISREG(info.st_mode):
        if info.st_nlink > 1:
            return (
                f"a file with {info.st_nlink} hard links, '{path}' (writing it writes the others)"
            )
        return None
    if stat.S_ISDIR(info.st_mode):
        return None
    return f"a special file (not a regular file or dir), '{path}'"


def open_in_run_dir(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` of a file in a run dir that follows no link; returns the file descriptor.

    Args:
        path: the file.
        flags: ``os.O_*`` flags (``O_NOFOLLOW`` and ``O_NONBLOCK`` are added; not ``O_TRUNC``:
            truncate with ``os.ftruncate`` once the descriptor is checked).
        mode: permissions of a created file.

    Raises:
        RunDirLinkError: ``path`` is a symbolic link, a special file or a hard-linked file.
    """
    if flags & os.O_TRUNC:
        raise ValueError("open_in_run_dir: truncate with os.ftruncate after the checks")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a reader; it is refused below.
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise RunDirLinkError(
                f"'{path}' is a symbolic link; clarena writes only inside its run dir and "
                f"follows no link. " + _FIX.format(path=path)
            ) from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        what = "a special file" if not stat.S_ISREG(info.st_mode) else "a hard-linked file"
        raise RunDirLinkError(
            f"'{path}' is {what}; clarena writes only regular files of its own run dir. "
            + _FIX.format(path=path)
        )
    return fd


def create_for_write(path: Path) -> int:
    """A descriptor of ``path`` emptied for writing (created if missing; parents too), no links."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_in_run_dir(path, os.O_WRONLY | os.O_CREAT)
    os.ftruncate(fd, 0)
    return fd


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (see :func:`create_for_write`)."""
    with os.fdopen(create_for_write(path), "w") as file:
        file.write(text)


def check_output_dir(output_dir: Path) -> None:
    """Refuse an ``output_dir`` that cannot hold a run: through a file, unwritable, ``/proc``.

    Probes by creating the missing dirs (or a temporary dir inside an existing one) and removes
    what it created, so nothing is left when the run is refused later.

    Raises:
        PipelineConfigError: naming ``output_dir``, the reason and the fix.
    """
    path = Path(output_dir)
    existing, missing = path, []
    while not existing.exists() and existing != existing.parent:
        missing.append(existing)
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is" if existing == path else f"goes through '{existing}', which is"
        raise PipelineConfigError(
            f"output_dir='{output_dir}' {where} a file, not a directory. Choose an output_dir "
            f"whose parents are directories."
        )
    created: list[Path] = []
    try:
        if path.exists():
            os.rmdir(tempfile.mkdtemp(prefix=".clarena-probe-", dir=path))
            return
        for directory in reversed(missing):
            os.mkdir(directory)
            created.append(directory)
    except OSError as error:
        raise PipelineConfigError(
            f"output_dir='{output_dir}' cannot hold a run: {error.strerror} "
            f"('{error.filename}'). Choose an output_dir in a directory you can write to, e.g. "
            f"output_dir=outputs/my_run."
        ) from None
    finally:
        for made in reversed(created):
            os.rmdir(made)
