"""The run store: create/resume/archive semantics, trials, state, concurrency, crashes, schema versions."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import pickle
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from greenshift.errors import StoreError
from greenshift.store import RunStore, TrialStatus
from greenshift.store.records import all_finite, config_key
from greenshift.store.sqlite import MIGRATIONS

IDENTITY = {"dataset": "cifar10", "model": "resnet20", "objectives": ["error", "energy_model_j"], "seed": 0}
CONFIG = {"lr": 0.1, "optimizer": "sgd", "weight_bits": 5}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def store(tmp_path: Path):
    with RunStore.create(tmp_path / "run", identity=IDENTITY, info={"host": "h1"}) as s:
        yield s


# -- spawned workers (module level so that spawn can import them) ------------------------------------


def _add_trials(store: RunStore, tag: str, count: int, close: bool = True) -> None:
    for i in range(count):
        trial_id = store.start_trial({"worker": tag, "i": i}, 1.0, i, worker=tag)
        store.finish_trial(trial_id, TrialStatus.OK, objectives={"error": i / 100}, metrics={"tag": tag})
    if close:
        store.close()


def _write_forever(run_dir: str) -> None:
    store = RunStore.open(run_dir)
    i = 0
    while True:
        trial_id = store.start_trial({"i": i}, 2.0, i)
        # a large metrics payload makes a torn write visible if a transaction were not atomic
        store.finish_trial(
            trial_id,
            TrialStatus.OK,
            objectives={"error": float(i)},
            metrics={"curve": [float(i)] * 500, "n": 500},
        )
        i += 1


# -- config keys and JSON --------------------------------------------------------------------------


def test_config_key_is_stable_and_order_independent() -> None:
    assert config_key(CONFIG) == "424904148fb58377"  # pinned: resumes depend on it across versions
    assert config_key(dict(reversed(list(CONFIG.items())))) == config_key(CONFIG)
    assert config_key({**CONFIG, "lr": 0.2}) != config_key(CONFIG)
    assert config_key({"lr": np.float64(0.1), "optimizer": "sgd", "weight_bits": np.int64(5)}) == config_key(
        CONFIG
    )
    with pytest.raises(StoreError, match="JSON"):
        config_key({"x": object()})


def test_all_finite() -> None:
    assert all_finite({"a": 1.0, "b": -2.0})
    assert not all_finite({"a": 1.0, "b": math.nan})
    assert not all_finite({"a": math.inf})


# -- create / open / resume ------------------------------------------------------------------------


def test_create_new_run_and_reopen(tmp_path: Path) -> None:
    run = tmp_path / "a" / "run"
    with RunStore.create(run, identity=IDENTITY, info={"version": "0.1"}) as s:
        assert (run / RunStore.DB_NAME).is_file()
        assert s.identity == IDENTITY
        assert s.info == {"version": "0.1"}
        s.start_trial(CONFIG, 1, 0)
        assert not s.checkpoint_dir.exists()  # created lazily
    with RunStore.open(run) as s:
        assert s.identity == IDENTITY
        assert [t.trial_id for t in s.trials()] == [1]
        mode = sqlite3.connect(run / RunStore.DB_NAME).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        version = sqlite3.connect(run / RunStore.DB_NAME).execute("PRAGMA user_version").fetchone()[0]
        assert version == RunStore.SCHEMA_VERSION == len(MIGRATIONS)


def test_resume_with_equal_identity_keeps_trials_and_merges_info(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunStore.create(run, identity=IDENTITY, info={"host": "h1", "started": 1}) as s:
        s.start_trial(CONFIG, 1, 0)
    # key order and tuples vs lists do not matter; list order does
    same = {"seed": 0, "objectives": ("error", "energy_model_j"), "model": "resnet20", "dataset": "cifar10"}
    with RunStore.create(run, identity=same, info={"started": 2}) as s:
        assert len(s.trials()) == 1
        assert s.info == {"host": "h1", "started": 2}
    with RunStore.open(run) as s:
        assert s.info == {"host": "h1", "started": 2}


def test_identity_mismatch_names_keys_and_leaves_files_untouched(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunStore.create(run, identity=IDENTITY) as s:
        s.start_trial(CONFIG, 1, 0)
    (run / "notes.txt").write_text("keep me")
    before = _snapshot(run)
    changed = {**IDENTITY, "dataset": "mnist", "objectives": ["energy_model_j", "error"], "extra": 1}
    with pytest.raises(StoreError) as info:
        RunStore.create(run, identity=changed)
    message = str(info.value)
    assert 'dataset: "cifar10" -> "mnist"' in message
    assert "objectives:" in message
    assert "extra: (absent) -> 1" in message
    assert "seed: " not in message and " model: " not in message and "(model: " not in message
    assert "--force-new" in message
    assert "\n" not in message
    assert _snapshot(run) == before


def test_identity_mismatch_shows_nested_keys(tmp_path: Path) -> None:
    run = tmp_path / "run"
    RunStore.create(run, identity={"space": {"lr": [0.001, 0.1], "bits": [2, 8]}}).close()
    with pytest.raises(StoreError, match=r"space\.lr: \[0\.001,0\.1\] -> \[0\.01,0\.1\]"):
        RunStore.create(run, identity={"space": {"lr": [0.01, 0.1], "bits": [2, 8]}})


def test_force_new_archives_the_old_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunStore.create(run, identity=IDENTITY) as s:
        trial_id = s.start_trial(CONFIG, 1, 0)
        s.checkpoint_path(trial_id).write_bytes(b"weights")
    (run / "notes.txt").write_text("old")
    with RunStore.create(run, identity={**IDENTITY, "dataset": "mnist"}, force_new=True) as s:
        assert s.trials() == []
        assert s.identity["dataset"] == "mnist"
    archives = sorted(p for p in run.iterdir() if p.name.startswith("previous-"))
    assert len(archives) == 1
    archive = archives[0]
    assert (archive / "notes.txt").read_text() == "old"
    assert (archive / "checkpoints" / "trial-000001.pt").read_bytes() == b"weights"
    assert not (run / "notes.txt").exists()
    with RunStore.open(archive) as old:
        assert old.identity == IDENTITY
        assert len(old.trials()) == 1
    # a second archive sits next to the first, which is not moved into it
    RunStore.create(run, identity=IDENTITY, force_new=True).close()
    archives = sorted(p for p in run.iterdir() if p.name.startswith("previous-"))
    assert len(archives) == 2
    assert (archive / RunStore.DB_NAME).is_file()


def test_force_new_on_a_fresh_directory_just_creates(tmp_path: Path) -> None:
    with RunStore.create(tmp_path / "run", identity=IDENTITY, force_new=True) as s:
        assert s.trials() == []
    assert not any(p.name.startswith("previous-") for p in (tmp_path / "run").iterdir())


def test_open_rejects_non_runs(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"is not a greenshift run directory \(no run\.sqlite\)"):
        RunStore.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="is not a greenshift run directory"):
        RunStore.open(tmp_path / "empty")
    other = tmp_path / "other"
    other.mkdir()
    sqlite3.connect(other / RunStore.DB_NAME).execute("CREATE TABLE x (y)").connection.close()
    with pytest.raises(StoreError, match="holds no run"):
        RunStore.open(other)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        RunStore.create(tmp_path / "file", identity=IDENTITY)


def test_corrupt_database_is_a_store_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / RunStore.DB_NAME).write_bytes(b"this is not an sqlite database at all" * 200)
    with pytest.raises(StoreError, match="corrupt"):
        RunStore.open(run)
    with pytest.raises(StoreError, match="corrupt"):
        RunStore.create(run, identity=IDENTITY)
    # --force-new still gets the user out of it
    with RunStore.create(run, identity=IDENTITY, force_new=True) as s:
        assert s.trials() == []


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    RunStore.create(run, identity=IDENTITY).close()
    conn = sqlite3.connect(run / RunStore.DB_NAME)
    conn.execute(f"PRAGMA user_version = {RunStore.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match=r"newer greenshift.*upgrade greenshift"):
        RunStore.open(run)
    with pytest.raises(StoreError, match="upgrade greenshift"):
        RunStore.create(run, identity=IDENTITY)


def _make_v0_run(run: Path, identity: dict[str, Any]) -> None:
    """A database in the version-0 layout: no worker/checkpoint columns, no state table, no WAL."""
    run.mkdir()
    conn = sqlite3.connect(run / RunStore.DB_NAME)
    conn.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE trials (
            trial_id INTEGER PRIMARY KEY AUTOINCREMENT, config TEXT NOT NULL, config_key TEXT NOT NULL,
            budget_epochs REAL NOT NULL, seed INTEGER NOT NULL, status TEXT NOT NULL,
            objectives TEXT NOT NULL DEFAULT '{}', metrics TEXT NOT NULL DEFAULT '{}', error TEXT,
            is_default INTEGER NOT NULL DEFAULT 0, started_at REAL NOT NULL, finished_at REAL,
            duration_s REAL);
        """
    )
    conn.execute("INSERT INTO meta VALUES ('identity', ?)", (json.dumps(identity),))
    conn.execute(
        "INSERT INTO trials (config, config_key, budget_epochs, seed, status, objectives, started_at) "
        "VALUES (?, ?, 3.0, 1, 'ok', '{\"error\":0.25}', 100.0)",
        ('{"lr":0.1,"optimizer":"sgd","weight_bits":5}', config_key(CONFIG)),
    )
    conn.commit()
    conn.close()


def test_older_schema_is_migrated_on_open(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _make_v0_run(run, IDENTITY)
    with RunStore.open(run) as s:
        (old,) = s.trials()
        assert old.config == CONFIG
        assert old.objectives == {"error": 0.25}
        assert old.worker is None and old.checkpoint is None
        assert s.info == {}
        assert s.find(CONFIG, 3, 1) == old
        # the new columns and the state table work
        new_id = s.start_trial(CONFIG, 9, 1, worker="w1")
        assert s.trial(new_id).worker == "w1"
        s.set_state("budget", 1.5)
        assert s.get_state("budget") == 1.5
    conn = sqlite3.connect(run / RunStore.DB_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == RunStore.SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_older_schema_with_other_identity_is_left_alone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _make_v0_run(run, IDENTITY)
    before = _snapshot(run)
    with pytest.raises(StoreError, match="different settings"):
        RunStore.create(run, identity={**IDENTITY, "model": "mobilenetv2"})
    assert _snapshot(run) == before  # not migrated, not switched to WAL
    with RunStore.create(run, identity=IDENTITY) as s:  # equal identity: resumed and migrated
        assert len(s.trials()) == 1


# -- trials ----------------------------------------------------------------------------------------


def test_start_finish_list_and_find(store: RunStore) -> None:
    a = store.start_trial(CONFIG, 1, 0, is_default=True, worker="main")
    b = store.start_trial(CONFIG, 3, 0)
    c = store.start_trial({**CONFIG, "lr": 0.01}, 1, 0)
    assert (a, b, c) == (1, 2, 3)
    record = store.trial(a)
    assert record.status is TrialStatus.RUNNING and not record.finished
    assert record.is_default and record.worker == "main"
    assert record.objectives == {} and record.finished_at is None
    assert record.config_key == config_key(CONFIG)

    assert store.trial(np.int64(a)).trial_id == a
    store.finish_trial(
        np.int64(a), TrialStatus.OK, objectives={"error": 0.3}, metrics={"acc": [0.5, 0.7]}, duration_s=4.0
    )
    store.finish_trial(b, TrialStatus.CRASHED, error="CUDA out of memory")
    record = store.trial(a)
    assert record.status is TrialStatus.OK and record.finished
    assert record.objectives == {"error": 0.3}
    assert record.metrics == {"acc": [0.5, 0.7]}
    assert record.duration_s == 4.0
    assert record.finished_at is not None and record.finished_at >= record.started_at
    crashed = store.trial(b)
    assert crashed.error == "CUDA out of memory" and crashed.objectives == {}
    assert crashed.duration_s is not None and crashed.duration_s >= 0  # defaults to wall time

    assert [t.trial_id for t in store.trials()] == [1, 2, 3]
    assert [t.trial_id for t in store.trials(TrialStatus.OK)] == [1]
    assert [t.trial_id for t in store.trials(TrialStatus.RUNNING)] == [3]
    assert store.trials(TrialStatus.TIMEOUT) == []

    assert store.find(CONFIG, 1.0, 0).trial_id == a
    assert store.find(dict(reversed(list(CONFIG.items()))), 3, 0).trial_id == b
    assert store.find(CONFIG, 1, 1) is None
    assert store.find(CONFIG, 2, 0) is None
    retry = store.start_trial(CONFIG, 3, 0)  # the latest record wins
    assert store.find(CONFIG, 3, 0).trial_id == retry


@pytest.mark.parametrize(
    "status", [TrialStatus.CRASHED, TrialStatus.DIVERGED, TrialStatus.TIMEOUT, TrialStatus.INTERRUPTED]
)
def test_every_final_status_is_stored(store: RunStore, status: TrialStatus) -> None:
    trial_id = store.start_trial(CONFIG, 1, 0)
    store.finish_trial(trial_id, status.value, metrics={"why": str(status)})
    assert store.trial(trial_id).status is status
    assert store.trial(trial_id).metrics == {"why": status.value}


def test_finish_errors(store: RunStore) -> None:
    trial_id = store.start_trial(CONFIG, 1, 0)
    with pytest.raises(StoreError, match="no trial 99"):
        store.finish_trial(99, TrialStatus.OK)
    with pytest.raises(StoreError, match="cannot be finished with status running"):
        store.finish_trial(trial_id, TrialStatus.RUNNING)
    with pytest.raises(StoreError, match="only OK trials have objectives"):
        store.finish_trial(trial_id, TrialStatus.CRASHED, objectives={"error": 1.0})
    with pytest.raises(StoreError, match="not a number"):
        store.finish_trial(trial_id, TrialStatus.OK, objectives={"error": "high"})
    with pytest.raises(StoreError, match="JSON"):
        store.finish_trial(trial_id, TrialStatus.OK, metrics={"x": object()})
    assert store.trial(trial_id).status is TrialStatus.RUNNING  # failed calls changed nothing
    store.finish_trial(trial_id, TrialStatus.OK, objectives={"error": 0.5})
    with pytest.raises(StoreError, match="already finished"):
        store.finish_trial(trial_id, TrialStatus.CRASHED)
    assert store.trial(trial_id).objectives == {"error": 0.5}
    with pytest.raises(StoreError, match="no trial 42"):
        store.trial(42)
    with pytest.raises(StoreError, match="budget"):
        store.start_trial(CONFIG, 0, 0)
    with pytest.raises(StoreError, match="budget"):
        store.start_trial(CONFIG, math.nan, 0)


def test_interrupt_running(store: RunStore) -> None:
    a = store.start_trial(CONFIG, 1, 0)
    b = store.start_trial(CONFIG, 1, 1)
    c = store.start_trial(CONFIG, 1, 2)
    store.finish_trial(b, TrialStatus.OK, objectives={"error": 0.1})
    assert store.interrupt_running() == [a, c]
    assert store.trial(a).status is TrialStatus.INTERRUPTED
    assert store.trial(a).error
    assert store.trial(b).status is TrialStatus.OK
    assert store.interrupt_running() == []
    with pytest.raises(StoreError, match="already finished"):
        store.finish_trial(a, TrialStatus.OK)


def test_non_finite_values_round_trip(store: RunStore, tmp_path: Path) -> None:
    trial_id = store.start_trial(CONFIG, 1, 0)
    objectives = {"error": math.nan, "energy_model_j": math.inf, "latency_ms": -math.inf}
    metrics = {"curve": [0.1, math.nan, math.inf], "spread": {"energy": -math.inf}, "n": np.int64(3)}
    store.finish_trial(trial_id, TrialStatus.OK, objectives=objectives, metrics=metrics)
    store.set_state("best", math.nan)
    store.close()
    with RunStore.open(store.run_dir) as s:
        record = s.trial(trial_id)
        assert math.isnan(record.objectives["error"])
        assert record.objectives["energy_model_j"] == math.inf
        assert record.objectives["latency_ms"] == -math.inf
        assert not all_finite(record.objectives)
        assert record.metrics["curve"][0] == 0.1 and math.isnan(record.metrics["curve"][1])
        assert record.metrics["curve"][2] == math.inf
        assert record.metrics["spread"] == {"energy": -math.inf}
        assert record.metrics["n"] == 3
        assert math.isnan(s.get_state("best"))


def test_state_values(store: RunStore) -> None:
    assert store.get_state("consumed") is None
    assert store.get_state("consumed", 0.0) == 0.0
    store.set_state("consumed", 12.5)
    store.set_state("consumed", 13.5)
    store.set_state("facade", {"name": "smac", "epochs": [1, 3, 9]})
    assert store.get_state("consumed") == 13.5
    assert store.get_state("facade") == {"name": "smac", "epochs": [1, 3, 9]}
    with pytest.raises(StoreError, match="JSON"):
        store.set_state("bad", object())


def test_checkpoints(store: RunStore, tmp_path: Path) -> None:
    trial_id = store.start_trial(CONFIG, 1, 0)
    path = store.checkpoint_path(trial_id)
    assert path.parent == store.checkpoint_dir and store.checkpoint_dir.is_dir()
    path.write_bytes(b"weights")
    store.finish_trial(trial_id, TrialStatus.OK, objectives={"error": 0.1}, checkpoint=path)
    record = store.trial(trial_id)
    assert record.checkpoint == "checkpoints/trial-000001.pt"
    assert (store.run_dir / record.checkpoint).read_bytes() == b"weights"
    store.remove_checkpoint(trial_id)
    assert not path.exists()
    assert store.trial(trial_id).checkpoint is None
    store.remove_checkpoint(trial_id)  # nothing left to remove

    other = store.start_trial(CONFIG, 1, 1)
    with pytest.raises(StoreError, match="outside the run directory"):
        store.finish_trial(other, TrialStatus.OK, checkpoint=tmp_path / "elsewhere.pt")
    store.finish_trial(other, TrialStatus.OK, checkpoint="checkpoints/x.pt")
    assert store.trial(other).checkpoint == "checkpoints/x.pt"
    store.remove_checkpoint(other)  # the file never existed: still cleared
    assert store.trial(other).checkpoint is None


def test_closed_store_refuses_use(store: RunStore) -> None:
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.trials()


def test_pickled_store_reconnects(store: RunStore) -> None:
    store.start_trial(CONFIG, 1, 0)
    copy = pickle.loads(pickle.dumps(store))
    try:
        assert copy.identity == store.identity
        copy.start_trial(CONFIG, 1, 1)
        assert [t.trial_id for t in store.trials()] == [1, 2]
    finally:
        copy.close()


# -- concurrency and crashes -----------------------------------------------------------------------


def test_threads_share_one_store(store: RunStore) -> None:
    errors: list[BaseException] = []

    def work(tag: str) -> None:
        try:
            for i in range(10):
                trial_id = store.start_trial({"t": tag}, 1, i)
                store.finish_trial(trial_id, TrialStatus.OK, objectives={"error": 0.0})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    trials = store.trials(TrialStatus.OK)
    assert len({t.trial_id for t in trials}) == 40


def test_trial_list_is_fresh_after_every_kind_of_write(store: RunStore) -> None:
    def count() -> int:
        return len(store.trials())

    _add_trials(store, "own", 1, close=False)
    assert count() == 1 and count() == 1  # the second call is served from the cache
    with RunStore.open(store.run_dir) as other:  # another connection in this process
        _add_trials(other, "other", 1)
    assert count() == 2
    thread = threading.Thread(target=_add_trials, args=(store, "thread", 1, False))  # another thread
    thread.start()
    thread.join()
    assert count() == 3
    child = mp.get_context("spawn").Process(target=_add_trials, args=(store, "process", 1, False))
    child.start()
    child.join(timeout=50)
    assert child.exitcode == 0 and count() == 4
    store.finish_trial(store.start_trial({"late": 1}, 1.0, 0), TrialStatus.CRASHED, error="boom")
    assert count() == 5 and [t.status for t in store.trials(TrialStatus.CRASHED)] == [TrialStatus.CRASHED]
    with RunStore.open(store.run_dir) as other:
        _add_trials(other, "before-fork", 1)
    # A forked child inherits this thread's cache; its own new connection must not trust it.
    pid = os.fork()
    if pid == 0:
        os._exit(count())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 6


def test_concurrent_processes_write_one_store(store: RunStore) -> None:
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=_add_trials, args=(store, f"w{n}", 20)) for n in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=50)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    trials = store.trials()
    assert len(trials) == 60
    assert len({t.trial_id for t in trials}) == 60
    assert all(t.status is TrialStatus.OK for t in trials)
    for n in range(3):
        mine = [t for t in trials if t.worker == f"w{n}"]
        assert sorted(t.config["i"] for t in mine) == list(range(20))
        assert all(t.metrics == {"tag": f"w{n}"} for t in mine)


def test_killed_writer_leaves_only_complete_transactions(store: RunStore) -> None:
    ctx = mp.get_context("spawn")
    writer = ctx.Process(target=_write_forever, args=(str(store.run_dir),))
    writer.start()
    try:
        deadline = time.monotonic() + 40
        while len(store.trials()) < 30:
            assert writer.is_alive(), "the writer died on its own"
            assert time.monotonic() < deadline, "the writer made no progress"
            time.sleep(0.02)
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(timeout=10)
    assert writer.exitcode == -signal.SIGKILL
    store.close()

    with RunStore.open(store.run_dir) as s:
        conn = sqlite3.connect(s.db_path)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
        trials = s.trials()
        assert len(trials) >= 30
        assert [t.trial_id for t in trials] == list(range(1, len(trials) + 1))
        running = [t for t in trials if t.status is TrialStatus.RUNNING]
        assert len(running) <= 1  # at most the one in flight when the writer was killed
        for t in trials:
            i = t.config["i"]
            if t.status is TrialStatus.OK:
                assert t.objectives == {"error": float(i)}
                assert t.metrics == {"curve": [float(i)] * 500, "n": 500}
            else:
                assert t.status is TrialStatus.RUNNING
                assert t.objectives == {} and t.metrics == {} and t.finished_at is None
        assert s.interrupt_running() == [t.trial_id for t in running]
        assert s.start_trial(CONFIG, 1, 0) == len(trials) + 1


# -- the run directory's layout -----------------------------------------------------------------


def test_layout_names_every_file_of_a_run_and_the_store_uses_it(tmp_path: Path) -> None:
    from greenshift.store import RunLayout
    from greenshift.store.layout import REPORT_FILES, continuation_key
    from greenshift.store.lock import WriterLock

    layout = RunLayout(tmp_path)
    store = RunStore.create(tmp_path, identity={"a": 1})
    try:
        assert store.db_path == layout.db and layout.db.is_file()
        assert store.checkpoint_dir == layout.checkpoints
        assert (
            store.checkpoint_path(7)
            == layout.trial_checkpoint(7)
            == tmp_path / "checkpoints" / "trial-000007.pt"
        )
    finally:
        store.close()
    assert WriterLock(tmp_path).path == layout.lock == tmp_path / "writer.lock"
    assert layout.smac == tmp_path / "smac"
    assert layout.crosscheck_cache == tmp_path / "report" / "energy_crosscheck.json"
    assert layout.report_files()["html"] == tmp_path / "report.html" and set(layout.report_files()) == set(
        REPORT_FILES
    )
    assert layout.model_checkpoint("abc", 2, 9).name == "model-abc-s2-e9.pt"
    continuation = layout.continuation_checkpoint("0f3a-s1x", 12)
    assert continuation.name == "continue-0f3a-s1x-s12.pt"
    assert continuation_key(continuation) == "0f3a-s1x"
    assert continuation_key("model-abc-s2-e9.pt") is None and continuation_key("continue-x.pt") is None
    assert layout.continuation_checkpoints() == []
    continuation.write_bytes(b"state")
    (layout.checkpoints / "notes.txt").write_text("not a checkpoint")
    assert layout.continuation_checkpoints() == [continuation]


def test_kept_models_round_trip_and_foreign_files_are_refused(tmp_path: Path) -> None:
    import torch

    from greenshift.config import DSNNConfig
    from greenshift.store import RunLayout, load_trial_model
    from greenshift.store.kept_models import save_trial_model
    from greenshift.train import build_model

    config = DSNNConfig()
    model = build_model(config, "tiny_cnn", 3, 1)
    path = RunLayout(tmp_path).model_checkpoint("k", 0, 3)
    fields = {"backbone": "tiny_cnn", "dataset": "toy", "budget_epochs": 3, "seed": 0}
    save_trial_model(path, model, config=config.to_dict(), objectives={"loss": 0.5}, **fields)
    loaded = load_trial_model(path, num_classes=3, in_channels=1, config=config, backbone="tiny_cnn")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(StoreError, match="another configuration"):
        load_trial_model(path, num_classes=3, in_channels=1, config=config.replace(weight_bits=3))
    path.write_bytes(b"not a model")
    with pytest.raises(StoreError, match="unreadable"):
        load_trial_model(path, num_classes=3, in_channels=1)
