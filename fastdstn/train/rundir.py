"""One owner per run directory, and no run silently replaced.

A run holds an exclusive lock on OUT/.lock (flock) for its whole life: a second process that wants to write the
directory — another run with the same --out, or a --resume while the first still trains — is refused with the
holder's pid. The kernel drops the lock when the holder exits, however it exits (SIGKILL included), so a stale
lock never blocks a resume. Under the lock a directory is prepared for a new run (refused when it already holds
files, unless asked to overwrite them) or for a resume, and the temporary files of a killed writer are removed.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import socket
from typing import List, Optional

from .files import remove_temporaries

LOCK = ".lock"
# What a run writes; --overwrite removes these and nothing else.
RUN_FILES = ("config.yaml", "metrics.csv", "schedule.csv", "summary.json", "schedule.png", "checkpoints",
             "tensorboard", "replay")


class RunDirectoryError(RuntimeError):
    """A run directory that this run cannot use: in use by another process, holding another run, or damaged."""


class RunDirectory:
    """The lock on one run directory: `with RunDirectory(path) as d: d.prepare(resume, overwrite) ...`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: Optional[int] = None

    def __enter__(self) -> "RunDirectory":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        os.makedirs(self.path, exist_ok=True)
        fd = os.open(os.path.join(self.path, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunDirectoryError(f"run directory {self.path} is in use by {holder}: wait for it to finish (or "
                                    f"stop it), or choose another --out") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def contents(self) -> List[str]:
        return sorted(name for name in os.listdir(self.path) if name != LOCK)

    def prepare(self, resume: bool, overwrite: bool) -> List[str]:
        """Make the directory ready (the lock must be held): a new run needs it empty, or `overwrite` to delete
        the previous run's files (RUN_FILES; anything else is left alone). Returns the temporary files of a
        killed writer that were removed."""
        if resume and overwrite:
            raise RunDirectoryError("--resume continues the run in the directory, --overwrite replaces it: "
                                    "pass one of them")
        if not resume:
            present = self.contents()
            if present and not overwrite:
                shown = ", ".join(present[:6]) + (", …" if len(present) > 6 else "")
                raise RunDirectoryError(f"run directory {self.path} is not empty ({shown}): pass --resume to continue "
                                        f"the run there, --overwrite to replace it, or choose another --out")
            if overwrite:
                for name in RUN_FILES:
                    _delete(os.path.join(self.path, name))
        removed = remove_temporaries(self.path)
        if os.path.isdir(os.path.join(self.path, "checkpoints")):
            removed += remove_temporaries(os.path.join(self.path, "checkpoints"))
        return removed


def _delete(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
