"""The run directory and its SQLite database.

The run directory's files are named in :mod:`greenshift.store.layout`.

Every path the database holds is relative to the run directory and is resolved through
:meth:`RunStore.resolve`, which refuses anything that would lead outside it: a crafted or damaged
``run.sqlite`` cannot make greenshift read or delete a file elsewhere.

Concurrency: the database is in WAL mode and every state change is one ``BEGIN IMMEDIATE``
transaction with a busy timeout, so the main process and Dask workers on the same machine can
write at once. Connections are opened lazily, one per process and thread, and never shared.

Schema versions (``PRAGMA user_version``):

* 0 - pre-release layout: ``meta`` and ``trials`` without the ``worker`` and ``checkpoint``
  columns, no ``state`` table, rollback journal.
* 1 - current layout (see ``_SCHEMA``).

A database of an older version is migrated on open; one of a newer version is refused.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from greenshift.errors import StoreError
from greenshift.store.layout import ARCHIVE_PREFIX, DB_NAME, LOCK_NAME, RunLayout
from greenshift.store.records import (
    TrialRecord,
    TrialStatus,
    canonical_json,
    coerce_objectives,
    config_key,
    load_json,
    normalise,
)

BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE trials (
    trial_id INTEGER PRIMARY KEY AUTOINCREMENT,
    config TEXT NOT NULL,
    config_key TEXT NOT NULL,
    budget_epochs REAL NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    objectives TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    is_default INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL,
    finished_at REAL,
    duration_s REAL,
    worker TEXT,
    checkpoint TEXT
);
CREATE INDEX trials_lookup ON trials (config_key, budget_epochs, seed);
CREATE INDEX trials_status ON trials (status);
"""

_COLUMNS = (
    "trial_id, config, config_key, budget_epochs, seed, status, objectives, metrics, error, "
    "is_default, started_at, finished_at, duration_s, worker, checkpoint"
)

# Connections inherited through fork() must never be closed (or finalised) in the child, because
# closing one can checkpoint or unlock the parent's database; the child keeps them referenced here.
_INHERITED: list[sqlite3.Connection] = []


def _migrate_0_to_1(conn: sqlite3.Connection) -> None:
    """Add the worker/checkpoint columns, the state table and the indexes."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(trials)")}
    for name in ("worker", "checkpoint"):
        if name not in columns:
            conn.execute(f"ALTER TABLE trials ADD COLUMN {name} TEXT")
    conn.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("CREATE INDEX IF NOT EXISTS trials_lookup ON trials (config_key, budget_epochs, seed)")
    conn.execute("CREATE INDEX IF NOT EXISTS trials_status ON trials (status)")


# MIGRATIONS[v] turns a database of schema version v into version v + 1.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migrate_0_to_1,)


def _short(value: Any, limit: int = 40) -> str:
    text = canonical_json(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable ``key: old -> new`` lines, nested dicts as dotted keys."""
    lines: list[str] = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        if key not in old:
            lines.append(f"{path}: (absent) -> {_short(new[key])}")
        elif key not in new:
            lines.append(f"{path}: {_short(old[key])} -> (absent)")
        elif isinstance(old[key], dict) and isinstance(new[key], dict):
            lines.extend(_differences(old[key], new[key], f"{path}."))
        # compare encodings, not values, so that NaN equals NaN
        elif canonical_json(old[key]) != canonical_json(new[key]):
            lines.append(f"{path}: {_short(old[key])} -> {_short(new[key])}")
    return lines


def _archive_name(run_dir: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = RunLayout(run_dir).archive(stamp)
    suffix = 1
    while target.exists():  # two force-new runs within one second
        target = RunLayout(run_dir).archive(f"{stamp}-{suffix}")
        suffix += 1
    return target


def _flush_wal(db: Path) -> None:
    """Fold the WAL into the database file so that moving the files moves every committed trial."""
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    except sqlite3.Error:
        pass  # a corrupt database is archived as it is


def _archive(run_dir: Path) -> Path:
    """Move everything of the current run (earlier archives excepted) into a new archive folder."""
    _flush_wal(run_dir / RunStore.DB_NAME)
    target = _archive_name(run_dir)
    # The writer lock stays: the search that archives holds it and goes on in this directory.
    entries = [p for p in run_dir.iterdir() if not p.name.startswith(ARCHIVE_PREFIX) and p.name != LOCK_NAME]
    target.mkdir()
    for entry in entries:
        shutil.move(str(entry), str(target / entry.name))
    return target


@contextlib.contextmanager
def _translated(db: Path) -> Iterator[None]:
    """Turn SQLite errors into :class:`StoreError` with a message a user can act on."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreError(
                f"{db} stayed locked by another process for more than {BUSY_TIMEOUT_S:.0f} s"
            ) from exc
        raise StoreError(f"cannot use {db}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{db} is not a readable greenshift database ({exc}); it may be corrupt") from exc


class RunStore:
    """The database of one run directory: identity, info, trials and small state values.

    Create or resume with :meth:`create`, reopen an existing run with :meth:`open`. A store may be
    used from several threads and pickled to other processes (it reconnects there).
    """

    DB_NAME = DB_NAME
    SCHEMA_VERSION = len(MIGRATIONS)

    def __init__(self, run_dir: Path, identity: dict[str, Any], info: dict[str, Any]) -> None:
        """Wrap an already validated run directory; use :meth:`create` or :meth:`open` instead."""
        self.run_dir = Path(run_dir)
        self.identity = identity
        self.info = info
        self._setup()

    def _setup(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[tuple[int, sqlite3.Connection]] = []
        self._closed = False
        # Counts this object's write transactions; with SQLite's data_version (which changes only for
        # other connections' commits) it tells when a cached trial list is stale.
        self._writes = 0

    # -- construction ---------------------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        """The SQLite database file."""
        return self.run_dir / self.DB_NAME

    @property
    def checkpoint_dir(self) -> Path:
        """Where checkpoints go; created by :meth:`checkpoint_path` when first needed."""
        return RunLayout(self.run_dir).checkpoints

    @classmethod
    def create(
        cls,
        run_dir: str | os.PathLike[str],
        *,
        identity: dict[str, Any],
        info: dict[str, Any] | None = None,
        force_new: bool = False,
    ) -> RunStore:
        """Start a new run in ``run_dir`` or resume the run already there.

        ``identity`` holds everything that must match for a resume (data set, space, objectives,
        ...); ``info`` is descriptive (versions, host, start time) and is merged into the stored
        info on resume. A run with another identity is refused without touching its files, unless
        ``force_new`` moves it into ``run_dir/previous-<UTC time>/`` first.
        """
        run_dir = Path(run_dir)
        identity = normalise(identity, what="the run identity")
        info = normalise(info or {}, what="the run info")
        if not isinstance(identity, dict) or not isinstance(info, dict):
            raise StoreError("the run identity and info must be dicts")
        if run_dir.exists() and not run_dir.is_dir():
            raise StoreError(f"run directory {run_dir} exists and is not a directory")
        db = run_dir / cls.DB_NAME
        if force_new and db.exists():
            _archive(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create run directory {run_dir}: {exc}") from exc

        store = cls(run_dir, identity, info)
        try:
            with _translated(db):
                store._resume_or_initialise(identity, info)
        except BaseException:
            store.close()
            raise
        return store

    def _resume_or_initialise(self, identity: dict[str, Any], info: dict[str, Any]) -> None:
        conn = self._connection(create=True)
        fresh = self._read_version(conn) == 0 and not self._has_meta(conn)
        if fresh and self._initialise(conn, identity, info):
            return
        stored_identity, stored_info = self._read_meta(conn)
        if stored_identity != identity:
            run_dir = self.run_dir
            diffs = _differences(stored_identity, identity)
            shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
            raise StoreError(
                f"{run_dir} holds a run with different settings ({shown}); "
                "use another run directory, or --force-new to move the old run into "
                f"{run_dir / (ARCHIVE_PREFIX + '<time>')} and start afresh"
            )
        self._migrate(conn)
        merged = {**stored_info, **info}
        if merged != stored_info:
            with self._transaction() as tx:
                tx.execute("UPDATE meta SET value = ? WHERE key = 'info'", (canonical_json(merged),))
        self.info = merged

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str]) -> RunStore:
        """Open the existing run in ``run_dir`` (migrating an older database)."""
        run_dir = Path(run_dir)
        db = run_dir / cls.DB_NAME
        if not db.is_file():
            raise StoreError(f"{run_dir} is not a greenshift run directory (no {cls.DB_NAME})")
        store = cls(run_dir, {}, {})
        try:
            with _translated(db):
                conn = store._connection()
                store._read_version(conn)
                if not store._has_meta(conn):
                    raise StoreError(
                        f"{run_dir} is not a greenshift run directory ({cls.DB_NAME} holds no run)"
                    )
                store.identity, store.info = store._read_meta(conn)
                store._migrate(conn)
        except BaseException:
            store.close()
            raise
        return store

    def _read_version(self, conn: sqlite3.Connection) -> int:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > self.SCHEMA_VERSION:
            raise StoreError(
                f"{self.db_path} was written by a newer greenshift (schema version {version}, this one "
                f"reads up to {self.SCHEMA_VERSION}); upgrade greenshift to use this run"
            )
        return int(version)

    @staticmethod
    def _has_meta(conn: sqlite3.Connection) -> bool:
        row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        return row is not None

    def _read_meta(self, conn: sqlite3.Connection) -> tuple[dict[str, Any], dict[str, Any]]:
        values = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if "identity" not in values:
            raise StoreError(f"{self.db_path} holds no run identity; it is not a greenshift run")
        try:
            identity, info = load_json(values["identity"]), load_json(values.get("info", "{}"))
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{self.db_path} holds a damaged run identity or info ({exc})") from None
        if not isinstance(identity, dict) or not isinstance(info, dict):
            raise StoreError(f"{self.db_path} holds a damaged run identity or info (not JSON objects)")
        return identity, info

    def _initialise(self, conn: sqlite3.Connection, identity: dict[str, Any], info: dict[str, Any]) -> bool:
        """Create the schema of a fresh database; False if another process got there first."""
        conn.execute("PRAGMA journal_mode=WAL")
        with self._transaction() as tx:
            if self._has_meta(tx):
                return False
            # statement by statement: executescript() would commit the open transaction first
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    tx.execute(statement)
            tx.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("identity", canonical_json(identity)), ("info", canonical_json(info))],
            )
            tx.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")
        return True

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA user_version").fetchone()[0] >= self.SCHEMA_VERSION:
            return
        conn.execute("PRAGMA journal_mode=WAL")  # older layouts used a rollback journal
        with self._transaction() as tx:
            # re-read inside the write lock: another process may have migrated meanwhile
            version = tx.execute("PRAGMA user_version").fetchone()[0]
            for step in MIGRATIONS[version:]:
                step(tx)
            tx.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")

    # -- connections ----------------------------------------------------------------------------

    def _connection(self, *, create: bool = False) -> sqlite3.Connection:
        """This thread's connection in this process, opened on first use."""
        if self._closed:
            raise StoreError(f"the run store of {self.run_dir} is closed")
        pid = os.getpid()
        held = getattr(self._local, "held", None)
        if held is not None:
            if held[0] == pid:
                return held[1]
            _INHERITED.append(held[1])
        mode = "rwc" if create else "rw"
        try:
            # autocommit mode: transactions are explicit BEGIN IMMEDIATE ... COMMIT blocks;
            # check_same_thread=False only lets close() reach the other threads' connections
            conn = sqlite3.connect(
                f"{self.db_path.resolve().as_uri()}?mode={mode}",
                uri=True,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.db_path}: {exc}") from exc
        self._local.held = (pid, conn)
        with self._lock:
            self._connections.append((pid, conn))
        return conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; the write lock is taken at BEGIN so the busy timeout applies."""
        conn = self._connection()
        with _translated(self.db_path):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # also after a failed COMMIT, so the connection never stays inside a transaction
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                with self._lock:
                    self._writes += 1

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self._connection()
        with _translated(self.db_path):
            return conn.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close this process's connections; the store cannot be used afterwards."""
        pid = os.getpid()
        with self._lock:
            for owner, conn in self._connections:
                if owner == pid:
                    conn.close()
            self._connections = []
            self._closed = True

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # connections stay behind; the receiving process opens its own
        return {"run_dir": self.run_dir, "identity": self.identity, "info": self.info}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.run_dir = state["run_dir"]
        self.identity = state["identity"]
        self.info = state["info"]
        self._setup()

    def __repr__(self) -> str:
        return f"RunStore({str(self.run_dir)!r})"

    # -- trials ---------------------------------------------------------------------------------

    def start_trial(
        self,
        config: dict[str, Any],
        budget_epochs: float,
        seed: int,
        *,
        is_default: bool = False,
        worker: str | None = None,
    ) -> int:
        """Record a trial as RUNNING and return its id."""
        key = config_key(config)
        budget = float(budget_epochs)
        if not budget > 0 or budget == float("inf"):
            raise StoreError(f"a trial budget must be a positive number of epochs, got {budget_epochs!r}")
        with self._transaction() as tx:
            cursor = tx.execute(
                "INSERT INTO trials (config, config_key, budget_epochs, seed, status, is_default, "
                "started_at, worker) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    canonical_json(config, what="the configuration"),
                    key,
                    budget,
                    int(seed),
                    TrialStatus.RUNNING.value,
                    int(bool(is_default)),
                    time.time(),
                    worker,
                ),
            )
            trial_id = cursor.lastrowid
        assert trial_id is not None  # an INSERT into a rowid table always sets it
        return int(trial_id)

    def finish_trial(
        self,
        trial_id: int,
        status: TrialStatus,
        *,
        objectives: dict[str, float] | None = None,
        metrics: dict[str, Any] | None = None,
        error: str | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        duration_s: float | None = None,
    ) -> None:
        """Record the outcome of a RUNNING trial in one transaction.

        ``objectives`` are allowed for OK trials only. ``duration_s`` defaults to the wall time
        since :meth:`start_trial`. ``checkpoint`` may be relative to the run directory or an
        absolute path inside it.
        """
        trial_id = int(trial_id)  # NumPy integers cannot be bound as SQL parameters
        status = TrialStatus(status)
        if status is TrialStatus.RUNNING:
            raise StoreError(f"trial {trial_id} cannot be finished with status {status}")
        values = coerce_objectives(objectives)
        if values and status is not TrialStatus.OK:
            raise StoreError(f"trial {trial_id} finished {status}: only OK trials have objectives")
        metrics_text = canonical_json(metrics or {}, what=f"the metrics of trial {trial_id}")
        objectives_text = canonical_json(values)
        relative = self._relative_checkpoint(checkpoint)
        now = time.time()
        with self._transaction() as tx:
            row = tx.execute(
                "SELECT status, started_at FROM trials WHERE trial_id = ?", (trial_id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"no trial {trial_id} in {self.db_path}")
            if row[0] != TrialStatus.RUNNING.value:
                raise StoreError(f"trial {trial_id} is already finished (status {row[0]})")
            tx.execute(
                "UPDATE trials SET status = ?, objectives = ?, metrics = ?, error = ?, finished_at = ?, "
                "duration_s = ?, checkpoint = ? WHERE trial_id = ?",
                (
                    status.value,
                    objectives_text,
                    metrics_text,
                    error,
                    now,
                    float(duration_s) if duration_s is not None else now - row[1],
                    relative,
                    trial_id,
                ),
            )

    def _relative_checkpoint(self, checkpoint: str | os.PathLike[str] | None) -> str | None:
        if checkpoint is None:
            return None
        path = Path(checkpoint)
        if path.is_absolute():
            try:
                path = path.resolve().relative_to(self.run_dir.resolve())
            except ValueError as exc:
                raise StoreError(f"checkpoint {path} lies outside the run directory {self.run_dir}") from exc
        self.resolve(path.as_posix(), what="checkpoint")  # a relative ../x is refused too
        return path.as_posix()

    def resolve(self, stored: str, *, what: str = "path") -> Path:
        """The file a path read from the database names, checked to lie inside the run directory.

        The database is input like any file: a relative ``../x``, an absolute path (which ``/`` would
        put in place of the run directory) or a symbolic link that leads out is a :class:`StoreError`.
        """
        if not isinstance(stored, str) or not stored or "\x00" in stored:
            raise StoreError(f"{what} {stored!r} in {self.db_path} is not a usable path")
        relative = Path(stored)
        root = self.run_dir.resolve()
        if relative.is_absolute() or ".." in relative.parts:
            raise StoreError(f"{what} {stored!r} in {self.db_path} lies outside the run directory {root}")
        target = (root / relative).resolve()
        if target != root and root not in target.parents:
            raise StoreError(f"{what} {stored!r} in {self.db_path} leads outside the run directory {root}")
        return target

    def checkpoint_file(self, record: TrialRecord) -> Path | None:
        """The kept model file of ``record`` (None if it kept none); see :meth:`resolve`."""
        if record.checkpoint is None:
            return None
        return self.resolve(record.checkpoint, what=f"the checkpoint of trial {record.trial_id}")

    def trials(self, status: TrialStatus | None = None) -> list[TrialRecord]:
        """All trials (or those with ``status``) ordered by id.

        Records are shared between calls and decoded again only when their row changed (treat them
        as read-only): a search asks for them several times per trial, and decoding every row's JSON
        each time was a measurable part of its own overhead (bench/search_overhead.py).
        """
        records = self._all_trials()
        if status is None:
            return list(records)
        wanted = TrialStatus(status)
        return [r for r in records if r.status is wanted]

    def _all_trials(self) -> tuple[TrialRecord, ...]:
        """Every trial; read again only after a commit, and only changed rows are decoded again."""
        conn = self._connection()
        with _translated(self.db_path):
            # The version is read before the rows: a commit in between only makes the next call
            # read again, never keeps stale rows under a newer version. The connection is part of
            # the key: a forked child opens its own, whose counter is unrelated.
            version = (conn, conn.execute("PRAGMA data_version").fetchone()[0], self._writes)
            cached = getattr(self._local, "trials", None)
            if cached is not None and cached[0][0] is conn and cached[0][1:] == version[1:]:
                return cached[1]
            rows = conn.execute(f"SELECT {_COLUMNS} FROM trials ORDER BY trial_id").fetchall()
        decoded: dict[int, tuple[tuple[Any, ...], TrialRecord]] = getattr(self._local, "decoded", {})
        fresh = {}
        for row in rows:
            known = decoded.get(row[0])
            fresh[row[0]] = known if known is not None and known[0] == row else (row, _record(row))
        self._local.decoded = fresh
        records = tuple(record for _, record in fresh.values())
        self._local.trials = (version, records)
        return records

    def trial(self, trial_id: int) -> TrialRecord:
        """The trial with this id; :class:`StoreError` if there is none."""
        rows = self._query(f"SELECT {_COLUMNS} FROM trials WHERE trial_id = ?", (int(trial_id),))
        if not rows:
            raise StoreError(f"no trial {trial_id} in {self.db_path}")
        return _record(rows[0])

    def find(self, config: dict[str, Any], budget_epochs: float, seed: int) -> TrialRecord | None:
        """The latest trial of this configuration, budget and seed, or None."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM trials WHERE config_key = ? AND budget_epochs = ? AND seed = ? "
            "AND config = ? ORDER BY trial_id DESC LIMIT 1",
            (
                config_key(config),
                float(budget_epochs),
                int(seed),
                canonical_json(config, what="the configuration"),
            ),
        )
        return _record(rows[0]) if rows else None

    def interrupt_running(self) -> list[int]:
        """Mark every RUNNING trial INTERRUPTED (call when resuming); return their ids."""
        with self._transaction() as tx:
            ids = [
                row[0]
                for row in tx.execute(
                    "SELECT trial_id FROM trials WHERE status = ? ORDER BY trial_id",
                    (TrialStatus.RUNNING.value,),
                )
            ]
            tx.execute(
                "UPDATE trials SET status = ?, error = ? WHERE status = ?",
                (
                    TrialStatus.INTERRUPTED.value,
                    "the process running this trial ended before it finished",
                    TrialStatus.RUNNING.value,
                ),
            )
        return ids

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoint_path(self, trial_id: int) -> Path:
        """Where the checkpoint of ``trial_id`` should be written (creates the checkpoint folder)."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        return RunLayout(self.run_dir).trial_checkpoint(trial_id)

    def remove_checkpoint(self, trial_id: int) -> None:
        """Delete the trial's checkpoint file (if any) and clear its ``checkpoint`` field."""
        record = self.trial(trial_id)
        path = self.checkpoint_file(record)
        if path is None:
            return
        path.unlink(missing_ok=True)
        with self._transaction() as tx:
            tx.execute("UPDATE trials SET checkpoint = NULL WHERE trial_id = ?", (record.trial_id,))

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files of atomic writes that a kill cut short; return what was deleted.

        Only the run's writer may call this (it holds the writer lock, and no trial runs yet): the
        temporary file of a live write looks the same. Covers the run directory and its checkpoints.
        """
        removed = []
        for folder in (self.run_dir, self.checkpoint_dir):
            for path in folder.glob(".*.tmp") if folder.is_dir() else []:
                if path.is_file() and not path.is_symlink():
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed

    # -- state ----------------------------------------------------------------------------------

    def set_state(self, key: str, value: Any) -> None:
        """Store a small JSON value under ``key`` (replacing any earlier one)."""
        text = canonical_json(value, what=f"state {key!r}")
        with self._transaction() as tx:
            tx.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, text))

    def get_state(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default``."""
        rows = self._query("SELECT value FROM state WHERE key = ?", (key,))
        if not rows:
            return default
        try:
            return load_json(rows[0][0])
        except (TypeError, ValueError) as exc:
            raise StoreError(f"state {key!r} in {self.db_path} is damaged ({exc})") from None


def _record(row: tuple[Any, ...]) -> TrialRecord:
    """Decode one row; a damaged value (bad JSON, unknown status, wrong type) is a StoreError naming the trial."""
    try:
        return _decode(row)
    except (StoreError, TypeError, ValueError, AttributeError) as exc:
        raise StoreError(
            f"trial {row[0]} in the run database is damaged ({type(exc).__name__}: {exc}); "
            "restore run.sqlite from a copy, or start a new run directory"
        ) from None


def _decode(row: tuple[Any, ...]) -> TrialRecord:
    (
        trial_id,
        config,
        key,
        budget,
        seed,
        status,
        objectives,
        metrics,
        error,
        is_default,
        started_at,
        finished_at,
        duration_s,
        worker,
        checkpoint,
    ) = row
    values = {"config": load_json(config), "objectives": load_json(objectives), "metrics": load_json(metrics)}
    for name, value in values.items():
        if not isinstance(value, dict):
            raise ValueError(f"{name} is not a JSON object")
    if checkpoint is not None and not isinstance(checkpoint, str):
        raise ValueError("checkpoint is not text")
    return TrialRecord(
        trial_id=int(trial_id),
        config=values["config"],
        budget_epochs=float(budget),
        seed=int(seed),
        status=TrialStatus(status),
        objectives=coerce_objectives(values["objectives"]),
        metrics=values["metrics"],
        error=error,
        is_default=bool(is_default),
        started_at=float(started_at),
        finished_at=finished_at,
        duration_s=duration_s,
        worker=worker,
        checkpoint=checkpoint,
        config_key=key,
    )
