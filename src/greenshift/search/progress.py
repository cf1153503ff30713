"""Live progress of a search: trials done/total, running, failed, Pareto size, hypervolume, ETA."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SearchStats:
    """A snapshot of a search, shown by the progress display."""

    total: int
    done: int
    running: int
    failed: int
    pareto_size: int
    hypervolume: float | None
    epochs_spent: int


class SearchProgress(Protocol):
    """What the search tells a progress display."""

    def start(self, stats: SearchStats) -> None:
        """The search begins (or resumes) with ``stats``."""

    def update(self, stats: SearchStats) -> None:
        """Something changed."""

    def note(self, message: str) -> None:
        """A one-line message for the user (e.g. after Ctrl-C)."""

    def stop(self, stats: SearchStats, reason: str) -> None:
        """The search ended because of ``reason``."""


class NullProgress:
    """Shows nothing (library use and tests)."""

    def start(self, stats: SearchStats) -> None:
        pass

    def update(self, stats: SearchStats) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def stop(self, stats: SearchStats, reason: str) -> None:
        pass


class RichProgress:
    """A live line with a progress bar, for the command line."""

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self._progress = None
        self._task = None
        self._started = 0.0
        self._done_at_start = 0

    def start(self, stats: SearchStats) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._started = time.time()
        self._done_at_start = stats.done
        self._progress = Progress(
            TextColumn("[bold]search"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("search", total=stats.total, completed=stats.done, status="")
        self.update(stats)

    def update(self, stats: SearchStats) -> None:
        if self._progress is None:
            return
        self._progress.update(self._task, completed=min(stats.done, stats.total), status=self._status(stats))

    def note(self, message: str) -> None:
        self.console.print(f"[yellow]{message}")

    def stop(self, stats: SearchStats, reason: str) -> None:
        if self._progress is None:
            return
        self.update(stats)
        self._progress.stop()
        if reason:
            self.console.print(f"search ended: {reason}")

    def _status(self, stats: SearchStats) -> str:
        hv = "-" if stats.hypervolume is None else f"{stats.hypervolume:.3g}"
        parts = [
            f"running {stats.running}",
            f"failed {stats.failed}",
            f"front {stats.pareto_size}",
            f"HV {hv}",
            f"epochs {stats.epochs_spent}",
        ]
        new_done = stats.done - self._done_at_start
        if new_done > 0 and stats.done < stats.total:
            per_trial = (time.time() - self._started) / new_done
            parts.append(f"ETA {_duration(per_trial * (stats.total - stats.done))}")
        return " | ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
