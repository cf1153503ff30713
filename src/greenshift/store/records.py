"""What the run database holds about one trial, and the JSON conventions it is stored with.

All JSON written by the store is *canonical*: sorted keys, no whitespace, non-ASCII kept as is,
and non-finite floats written as ``NaN``/``Infinity``/``-Infinity`` (Python's ``allow_nan``
dialect), so that a diverged loss or an infinite energy reading survives a round trip exactly.
NumPy scalars and arrays are converted to plain Python values first, so a configuration sampled by
any library hashes the same as the equivalent literal.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from greenshift.errors import StoreError


class TrialStatus(str, enum.Enum):
    """The life cycle of a trial.

    ``RUNNING`` is the only unfinished state. ``INTERRUPTED`` marks a trial that was running
    when its process died; the store sets it on resume and the search runs that trial again.
    """

    RUNNING = "running"
    OK = "ok"
    CRASHED = "crashed"
    DIVERGED = "diverged"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:  # str-mixin enums print as "TrialStatus.OK" otherwise
        return self.value


@dataclass(frozen=True)
class TrialRecord:
    """One evaluation of one configuration at one budget and seed, as stored in the run database.

    ``objectives`` is filled only for ``OK`` trials (empty otherwise); ``metrics`` holds everything
    else worth keeping (accuracy, per-epoch curves, meter details, spreads). ``checkpoint`` is a
    path relative to the run directory. ``config_key`` groups the budgets of one configuration.
    """

    trial_id: int
    config: dict[str, Any]
    budget_epochs: float
    seed: int
    status: TrialStatus
    objectives: dict[str, float]
    metrics: dict[str, Any]
    error: str | None
    is_default: bool
    started_at: float
    finished_at: float | None
    duration_s: float | None
    worker: str | None
    checkpoint: str | None
    config_key: str

    @property
    def finished(self) -> bool:
        """Whether the trial has left the ``RUNNING`` state."""
        return self.status is not TrialStatus.RUNNING

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-ready values (the status as its string value)."""
        return {
            "trial_id": self.trial_id,
            "config": self.config,
            "budget_epochs": self.budget_epochs,
            "seed": self.seed,
            "status": self.status.value,
            "objectives": self.objectives,
            "metrics": self.metrics,
            "error": self.error,
            "is_default": self.is_default,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "worker": self.worker,
            "checkpoint": self.checkpoint,
            "config_key": self.config_key,
        }


#: Statuses of trials that finished without objectives.
FAILED_STATUSES = (TrialStatus.CRASHED, TrialStatus.DIVERGED, TrialStatus.TIMEOUT, TrialStatus.INTERRUPTED)


@dataclass(frozen=True)
class FailureGroup:
    """Failed trials that share one error message (its first line): how many, which, with what status."""

    error: str
    count: int
    statuses: tuple[str, ...]
    trial_ids: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return {
            "error": self.error,
            "count": self.count,
            "statuses": list(self.statuses),
            "trial_ids": list(self.trial_ids),
        }


def error_headline(error: str | None) -> str | None:
    """The line of a trial's error text that says what went wrong; ``None`` for no text."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    if not lines:
        return None
    # Tracebacks end with the exception line; other messages start with what happened.
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


def failure_groups(records: Iterable[TrialRecord]) -> list[FailureGroup]:
    """The failed trials grouped by the first line of their error, the most frequent error first.

    A trial that failed without a message is grouped under its status, so that every failure is counted.
    """
    groups: dict[str, list[TrialRecord]] = {}
    for record in records:
        if TrialStatus(record.status) not in FAILED_STATUSES:
            continue
        message = (
            error_headline(record.error) or f"{TrialStatus(record.status).value} without an error message"
        )
        groups.setdefault(message, []).append(record)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), min(r.trial_id for r in item[1])))
    return [
        FailureGroup(
            error=message,
            count=len(members),
            statuses=tuple(sorted({TrialStatus(r.status).value for r in members})),
            trial_ids=tuple(sorted(int(r.trial_id) for r in members)),
        )
        for message, members in ordered
    ]


def _plain(value: Any) -> Any:
    """``json`` fallback: turn NumPy values, paths, enums and sets into plain JSON values."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, PurePath):
        return value.as_posix()
    # NumPy (and torch) scalars and arrays, without importing either library here
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def canonical_json(value: Any, *, what: str = "value") -> str:
    """Encode ``value`` as canonical JSON (see the module docstring).

    Raises :class:`StoreError` naming ``what`` when the value cannot be encoded.
    """
    try:
        return json.dumps(
            value,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=True,
            default=_plain,
        )
    except (TypeError, ValueError) as exc:
        raise StoreError(f"cannot store {what} as JSON: {exc}") from exc


def load_json(text: str) -> Any:
    """Decode JSON written by :func:`canonical_json` (non-finite floats included)."""
    return json.loads(text)


def normalise(value: Any, *, what: str = "value") -> Any:
    """``value`` as it reads back from the store: tuples become lists, NumPy values plain, keys strings."""
    return load_json(canonical_json(value, what=what))


def config_key(config: dict[str, Any]) -> str:
    """A stable 16-hex-digit hash of a configuration, independent of key order.

    It is computed from canonical JSON, not Python's ``hash``, so it is the same in every process
    and every Python version.
    """
    if not isinstance(config, dict):
        raise StoreError(f"a configuration must be a dict, got {type(config).__name__}")
    text = canonical_json(config, what="the configuration")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def coerce_objectives(objectives: dict[str, Any] | None) -> dict[str, float]:
    """Objective values as floats (non-finite ones kept); :class:`StoreError` for non-numbers."""
    if not objectives:
        return {}
    result: dict[str, float] = {}
    for name, value in objectives.items():
        try:
            result[str(name)] = float(value)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"objective {name!r} is not a number: {value!r}") from exc
    return result


def all_finite(values: dict[str, float]) -> bool:
    """Whether every value is a finite float (callers use it before recording a trial as OK)."""
    return all(math.isfinite(v) for v in values.values())
