"""A run folder: what a run writes into it, and which process holds it.

A run writes only into a folder that is empty or holds nothing but a run's own files, and holds it
while it runs: an OS lock (flock) on `.lock` in the folder, taken before anything is written. A
second run or resume of the same folder is refused at once instead of interleaving its files with
the first; the lock dies with its process, however that process ends, so a folder whose lock is
free and that has no metrics belongs to a run that crashed (`mnist37-report` says so).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from fnmatch import fnmatch
from pathlib import Path

from mnist37.errors import BadInputError

LOCK_NAME = ".lock"
RUN_FILES = ("model.pt", "last.pt", "metrics.json")  # a folder holding one of these holds a run
# Everything a run (or Hydra, for it) writes into its folder.
OWN_FILES = (*RUN_FILES, LOCK_NAME, ".hydra", "*.log", ".*.partial", "events.out.tfevents.*", "metrics.csv")
# What a sweep folder holds besides its job folders.
SWEEP_FILES = (LOCK_NAME, "multirun.yaml", "optimization_results.yaml", ".submitit")

_held: dict[Path, int] = {}  # folder -> the open lock file of this process


def holds_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in RUN_FILES)


def read_regular(path: Path) -> str | None:
    """The text of `path` if it is a regular file; None otherwise (missing, a folder, or a FIFO or
    device that would block or never end)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return None
        return path.read_text(errors="replace")
    except OSError:
        return None


def read_metrics(folder: Path) -> dict | None:
    """The folder's metrics.json as a dict; None when there is none, or it is not yet whole."""
    try:
        metrics = json.loads(read_regular(folder / "metrics.json") or "")
    except ValueError:  # not written yet, or caught mid-write
        return None
    return metrics if isinstance(metrics, dict) else None


def completed_metrics(folder: str | Path) -> dict | None:
    """The metrics.json of the completed run (one that wrote its model.pt) in `folder`, or None."""
    folder = Path(folder)
    metrics = read_metrics(folder)
    done = metrics is not None and metrics.get("status") == "completed" and (folder / "model.pt").is_file()
    return metrics if done else None


def foreign_files(folder: Path, own=OWN_FILES) -> list[str]:
    """Names in `folder` that a run did not write (empty when the folder doesn't exist)."""
    try:
        names = sorted(entry.name for entry in os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [name for name in names if not any(fnmatch(name, pattern) for pattern in own)]


def hold(folder: Path) -> bool:
    """Take `folder` for this process; BadInputError if another process has it. Returns False when
    this process held it already."""
    folder = folder.resolve()
    if folder in _held:
        return False
    descriptor = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(descriptor, 32).decode(errors="replace").strip() or "?"
        os.close(descriptor)
        raise BadInputError(f"{folder} is in use by another run (process {holder}): wait for it to end, "
                            "or choose another folder") from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    _held[folder] = descriptor
    return True


@contextlib.contextmanager
def held(folder: Path):
    """Hold `folder` while the block runs (made if need be); let go after, unless held before."""
    folder.mkdir(parents=True, exist_ok=True)
    taken = hold(folder)
    try:
        yield
    finally:
        if taken:
            os.close(_held.pop(folder.resolve()))  # closing the file lets go of the lock


def is_held(folder: Path) -> bool:
    """Whether some process holds `folder` now (a lock file nobody holds, or none, says no)."""
    try:
        descriptor = os.open(folder / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
