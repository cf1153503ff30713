"""One writer per run directory: an advisory lock held for the life of a search.

The lock is ``fcntl.flock`` on ``run_dir/writer.lock``. The kernel releases it when the holding
process ends, however it ends, so a SIGKILL never leaves a stale lock that a user must delete by
hand. The file itself stays; its contents (pid, host, start time) only name the holder in the
error a second writer gets. ``flock`` belongs to the open file description, and Python opens files
close-on-exec, so trial processes and Dask workers started by the search never hold it.

Readers (``report``, ``pick``, ``export``) never take the lock: the database is in WAL mode and a
reader sees every committed trial of a live run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from greenshift.errors import StoreError
from greenshift.store.layout import RunLayout

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; one writer is then the user's duty
    fcntl = None  # type: ignore[assignment]


def lock_holder(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What the lock file says about its last holder (pid, host, started); empty if unreadable."""
    try:
        data = json.loads(RunLayout(run_dir).lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class WriterLock:
    """The exclusive writer lock of one run directory; use as a context manager or call :meth:`release`.

    :meth:`acquire` never waits: a run directory with a live writer is refused at once with a
    :class:`StoreError` naming the holder's pid and host.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        """Prepare the lock of ``run_dir`` (nothing is opened until :meth:`acquire`)."""
        self.run_dir = Path(run_dir)
        self.path = RunLayout(self.run_dir).lock
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> WriterLock:
        """Take the lock (creating the run directory); :class:`StoreError` if another process holds it."""
        if self._fd is not None:
            return self
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create the writer lock {self.path}: {exc}") from exc
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise StoreError(f"cannot lock {self.path}: {exc}") from exc
                holder = lock_holder(self.run_dir)
                who = (
                    f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}"
                    if holder
                    else "another process"
                )
                raise StoreError(
                    f"{self.run_dir} is in use by a running search ({who}); wait for it to finish, "
                    "or use another run directory (report, pick and export work on a live run)"
                ) from None
        self._fd = fd
        # Written after the lock is ours, so a refused writer never overwrites the holder's name.
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
        except OSError:
            pass  # the name is only informative; the lock itself is held
        return self

    def release(self) -> None:
        """Give the lock up (closing the file releases it)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
