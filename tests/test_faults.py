"""Faults and guarantees (docs/search.md): one writer per run, trials that cannot hang or crash the
search, epochs charged whatever the outcome, a run directory nothing can escape, damaged files, and
SIGKILLs of the search at random moments."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from greenshift.errors import StoreError
from greenshift.search import DSNNSearch, SearchSettings
from greenshift.search.facade import FINAL_STATUSES
from greenshift.search.isolation import (
    FIRST_TRIAL_TIMEOUT_S,
    MIN_TIMEOUT_S,
    SLACK,
    IsolatedTrial,
    trial_timeout,
)
from greenshift.search.trial import TrialSettings, run_trial
from greenshift.store import RunStore, TrialStatus
from greenshift.store.lock import WriterLock
from greenshift.testing import FaultyTrial, SyntheticTrial

IDENTITY = {"dataset": "digits", "seed": 0}


def trial_settings(tmp_path: Path, **overrides) -> TrialSettings:
    values = dict(
        dataset="digits",
        backbone="tiny_cnn",
        objectives=("loss", "energy_model_j"),
        max_epochs=3,
        run_dir=str(tmp_path),
        device="cpu",
        keep_models="none",
    )
    values.update(overrides)
    return TrialSettings(**values)


def finished_rows(out: Path) -> list[tuple]:
    """(config key, budget, seed, status, objectives) of every finished trial, in the order they finished."""
    with RunStore.open(out) as store:
        return [
            (r.config_key, r.budget_epochs, r.seed, r.status.value, json.dumps(r.objectives, sort_keys=True))
            for r in store.trials()
            if r.status in FINAL_STATUSES
        ]


def trial_ids(out: Path, where: str) -> set[int]:
    """The ids of the trials matching ``where`` (none before the database exists)."""
    try:
        with sqlite3.connect(out / "run.sqlite", timeout=5) as con:
            return {row[0] for row in con.execute(f"select trial_id from trials where {where}")}
    except sqlite3.Error:
        return set()


def count_rows(out: Path, where: str) -> int:
    try:
        with sqlite3.connect(out / "run.sqlite", timeout=5) as con:
            return con.execute(f"select count(*) from trials where {where}").fetchone()[0]
    except sqlite3.Error:
        return 0


# -- trial processes: hangs, segfaults, epochs charged -----------------------------------------------


def test_default_trial_timeout_follows_the_epoch_times_seen():
    assert trial_timeout(9, explicit_s=None, per_epoch_s=None, walltime_s=None)[0] == FIRST_TRIAL_TIMEOUT_S
    assert trial_timeout(9, explicit_s=None, per_epoch_s=None, walltime_s=600)[0] == 600
    assert trial_timeout(9, explicit_s=None, per_epoch_s=2.0, walltime_s=None)[0] == SLACK * 2.0 * 9
    assert trial_timeout(1, explicit_s=None, per_epoch_s=0.01, walltime_s=None)[0] == MIN_TIMEOUT_S
    limit, reason = trial_timeout(9, explicit_s=10.0, per_epoch_s=2.0, walltime_s=None)
    assert 10.0 < limit <= 12.0 and "--trial-timeout 10" in reason


@pytest.mark.slow
def test_a_hung_or_segfaulting_trial_is_killed_charged_and_the_next_one_runs(tmp_path):
    settings = trial_settings(tmp_path)
    trial = FaultyTrial(fault="hang", fault_when={"lr": 0.5}, fault_after_epochs=2, epoch_s=0.05)
    isolated = IsolatedTrial(trial, trial_timeout_s=1.0)
    try:
        start = time.time()
        hung = isolated(settings, {"lr": 0.5}, 9, 0, "k1")
        assert hung["status"] == "timeout" and "--trial-timeout 1 s" in hung["error"]
        assert time.time() - start < 30
        assert hung["epochs_trained"] == 3  # two completed, the third begun
        assert not hung["worker"].endswith(":None")
        first_pid = isolated.process(settings).pid
        fine = isolated(settings, {"lr": 0.01}, 3, 0, "k2")
        assert fine["status"] == "ok" and fine["epochs_trained"] == 3
        assert isolated.process(settings).pid != first_pid  # a fresh trial process after the kill
    finally:
        isolated.close()

    crashing = IsolatedTrial(FaultyTrial(fault="segfault", fault_when={"lr": 0.5}, fault_after_epochs=1))
    try:
        crashed = crashing(settings, {"lr": 0.5}, 3, 0, "k3")
        assert crashed["status"] == "crashed" and "SIGSEGV" in crashed["error"], crashed["error"]
        assert crashed["epochs_trained"] == 2
        assert crashing(settings, {"lr": 0.01}, 1, 0, "k4")["status"] == "ok"
    finally:
        crashing.close()


@pytest.mark.slow
def test_a_search_survives_a_hung_trial(tmp_path):
    # The default configuration (lr exactly 0.1, which random search also asks first) hangs in its
    # fourth epoch: it used to hang the search for good.
    trial = FaultyTrial(fault="hang", fault_when={"lr": 0.1}, fault_after_epochs=3)
    settings = SearchSettings(
        dataset="digits",
        backbone="tiny_cnn",
        out=str(tmp_path / "run"),
        optimizer="random",
        trials=4,
        max_epochs=9,
        trial_timeout_s=1.5,
        max_total_epochs=100,
    )
    result = DSNNSearch(settings, trial_function=trial).run()
    hung = [t for t in result.trials if t.config["lr"] == 0.1]
    assert hung and any(t.is_default for t in hung)
    assert all(t.status == TrialStatus.TIMEOUT and t.metrics["epochs_trained"] == 4 for t in hung)
    assert len(result.completed) == 4
    assert all(t.status == TrialStatus.OK for t in result.trials if t.config["lr"] != 0.1)


def test_a_real_trial_that_fails_mid_training_is_charged_its_epochs(tmp_path, monkeypatch):
    # Disk full while the second epoch's checkpoint is written: the trial crashes with the cause,
    # leaves no temporary file, and is charged the two epochs it trained (it was charged 0).
    import greenshift.fileio as fileio

    writes = []
    real_fsync = fileio.os.fsync

    def fsync(fd):
        writes.append(fd)
        if len(writes) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    settings = trial_settings(tmp_path, continue_promoted=True, max_epochs=3)
    values = {"batch_size": 256, "shift_depth": 1, "optimizer": "sgd", "lr": 0.05}
    outcome = run_trial(settings, values, 3, 0, "cfg")
    assert outcome["status"] == "crashed" and "No space left" in outcome["error"]
    assert outcome["epochs_trained"] == 2
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.endswith(".tmp")]


# -- one writer per run ----------------------------------------------------------------------------

_HOLD_LOCK = """
import sys, time
from greenshift.store.lock import WriterLock
WriterLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    import socket

    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match=rf"process {holder.pid} on host {socket.gethostname()}"):
            WriterLock(run_dir).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with WriterLock(run_dir) as lock:  # the kernel released the killed holder's lock
        assert lock.held


def _search_script(out: Path, *, trials: int, seed: int, sleep_s: float, extra: str = "") -> str:
    return textwrap.dedent(
        f"""
        from greenshift.search import DSNNSearch, SearchSettings
        from greenshift.testing import SyntheticTrial
        settings = SearchSettings(dataset="digits", backbone="resnet20", out={str(out)!r}, trials={trials},
                                  min_epochs=1, max_epochs=9, seed={seed}{extra})
        result = DSNNSearch(settings, trial_function=SyntheticTrial(sleep_s={sleep_s})).run()
        print("FINISHED", len(result.completed), flush=True)
        """
    )


@pytest.mark.slow
def test_a_second_search_is_refused_while_the_first_finishes_and_readers_keep_working(
    tmp_path, capsys, monkeypatch
):
    from greenshift.cli import main

    out = tmp_path / "run"
    first = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _search_script(out, trials=10, seed=2, sleep_s=0.1, extra=", isolate_trials=False"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while count_rows(out, "status = 'running'") == 0 and time.time() < deadline:
        time.sleep(0.02)
    assert first.poll() is None, "the first search must still be running"
    # Python API: refused with the holder named, nothing written
    with pytest.raises(StoreError, match=rf"in use by a running search \(process {first.pid} on host"):
        DSNNSearch(
            SearchSettings(dataset="digits", backbone="resnet20", out=str(out), trials=10, seed=2),
            trial_function=SyntheticTrial(),
        ).run()
    # command line, --force-new included: one line, exit 2, the live run is not moved away
    argv = ["search", "--dataset", "digits", "--backbone", "resnet20", "--out", str(out), "--seed", "2"]
    for extra in ([], ["--force-new"]):
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"process {first.pid}" in err[0]
    assert not any(p.name.startswith("previous-") for p in out.iterdir())
    # readers work on the live run
    assert main(["pick", str(out), "--knee", "--json"]) in (0, 2)
    with RunStore.open(out) as store:
        assert store.trials()
    stdout, _ = first.communicate(timeout=120)
    assert first.returncode == 0 and "FINISHED 10" in stdout
    with RunStore.open(out) as store:
        statuses = [r.status for r in store.trials()]
    assert statuses.count(TrialStatus.OK) == 10 and TrialStatus.INTERRUPTED not in statuses


# -- the run directory: paths, damaged rows, temporary files ------------------------------------------


def _store_with_a_kept_model(tmp_path: Path) -> tuple[RunStore, int, Path]:
    store = RunStore.create(tmp_path / "run", identity=IDENTITY)
    trial_id = store.start_trial({"lr": 0.1}, 3, 0)
    model = store.checkpoint_path(trial_id)
    model.write_bytes(b"model")
    store.finish_trial(trial_id, TrialStatus.OK, objectives={"loss": 0.5}, checkpoint=model)
    return store, trial_id, model


@pytest.mark.parametrize("kind", ["relative", "absolute", "symlink"])
def test_a_path_in_the_database_that_leads_out_of_the_run_is_refused(tmp_path, kind):
    store, trial_id, _ = _store_with_a_kept_model(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    stored = {
        "relative": "../victim.txt",
        "absolute": str(victim),
        "symlink": "checkpoints/link.pt",
    }[kind]
    if kind == "symlink":
        (store.checkpoint_dir / "link.pt").symlink_to(victim)
    with sqlite3.connect(store.db_path) as con:  # a crafted run.sqlite
        con.execute("update trials set checkpoint = ? where trial_id = ?", (stored, trial_id))
    with pytest.raises(StoreError, match="outside the run directory"):
        store.remove_checkpoint(trial_id)
    assert victim.read_text() == "keep me"
    from greenshift.errors import GreenshiftError
    from greenshift.export import export_trial

    with pytest.raises(GreenshiftError, match="outside the run directory"):
        export_trial(store.run_dir, trial_id, tmp_path / "out.safetensors", retrain_if_missing=False)
    store.close()


def test_a_checkpoint_outside_the_run_is_never_written_into_the_database(tmp_path):
    store = RunStore.create(tmp_path / "run", identity=IDENTITY)
    trial_id = store.start_trial({"lr": 0.1}, 3, 0)
    with pytest.raises(StoreError, match="outside the run directory"):
        store.finish_trial(trial_id, TrialStatus.OK, objectives={"loss": 0.5}, checkpoint="../x.pt")
    assert store.trial(trial_id).status == TrialStatus.RUNNING
    store.close()


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("metrics", "{not json"),
        ("config", "[1, 2]"),
        ("status", "exploded"),
        ("objectives", '{"loss": "low"}'),
    ],
)
def test_a_damaged_row_is_a_store_error_naming_the_trial(tmp_path, capsys, column, value):
    from greenshift.cli import main

    store, trial_id, _ = _store_with_a_kept_model(tmp_path)
    store.close()
    with sqlite3.connect(tmp_path / "run" / "run.sqlite") as con:
        con.execute(f"update trials set {column} = ? where trial_id = ?", (value, trial_id))
    with RunStore.open(tmp_path / "run") as reopened, pytest.raises(StoreError, match=f"trial {trial_id} "):
        reopened.trials()
    assert main(["pick", str(tmp_path / "run"), "--knee"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"trial {trial_id}" in err[0] and "damaged" in err[0]


def test_temporary_files_left_by_a_kill_are_removed_on_the_next_start(tmp_path):
    out = tmp_path / "run"
    DSNNSearch(
        SearchSettings(dataset="digits", backbone="resnet20", out=str(out), trials=2, isolate_trials=False),
        trial_function=SyntheticTrial(),
    ).run()
    (out / "checkpoints").mkdir(exist_ok=True)
    stale = [out / "checkpoints" / ".continue-abc-s0.pt.x1y2.tmp", out / ".run.json.q9.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    kept = out / "checkpoints" / "notes.tmp"  # not an atomic write's temporary file
    kept.write_bytes(b"mine")
    DSNNSearch(
        SearchSettings(dataset="digits", backbone="resnet20", out=str(out), trials=3, isolate_trials=False),
        trial_function=SyntheticTrial(),
    ).run()
    assert not any(p.exists() for p in stale) and kept.exists()


# -- SIGKILL of the search and exact resume ----------------------------------------------------------


def _finished_snapshot(out: Path) -> dict[int, tuple]:
    try:
        with RunStore.open(out) as store:
            return {
                r.trial_id: (r.config_key, r.budget_epochs, r.seed, r.status.value, r.objectives)
                for r in store.trials()
                if r.status in FINAL_STATUSES
            }
    except StoreError:  # killed before the database existed
        return {}


def _running_since(out: Path, seconds: float, where: str = "1") -> bool:
    now = time.time()
    return count_rows(out, f"status = 'running' and started_at < {now - seconds} and {where}") > 0


@pytest.mark.slow
def test_sigkill_at_ten_random_moments_ends_with_exactly_the_rows_of_an_uninterrupted_run(tmp_path):
    out, reference = tmp_path / "run", tmp_path / "reference"
    script = _search_script(out, trials=24, seed=11, sleep_s=0.02, extra=", isolate_trials=False")
    rng = random.Random(18)
    seen: dict[int, tuple] = {}
    # A kill during the next start's imports leaves the same row running: count each trial once.
    killed_in: set[int] = set()
    for _ in range(10):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL)
        if rng.random() < 0.3:
            time.sleep(rng.uniform(0.0, 3.0))  # anywhere: imports, SMAC's set-up, the replay, a trial
        else:
            target = len(_finished_snapshot(out)) + rng.randint(1, 3)
            deadline = time.time() + 60
            while len(_finished_snapshot(out)) < target and proc.poll() is None and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_in |= trial_ids(out, "status = 'running'")
        now = _finished_snapshot(out)
        assert {k: now[k] for k in seen} == seen, "a finished trial was lost or changed"
        seen = now
    assert killed_in, "no kill landed inside a trial"
    final = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    subprocess.run(
        [
            sys.executable,
            "-c",
            _search_script(reference, trials=24, seed=11, sleep_s=0.0, extra=", isolate_trials=False"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert {k: v for k, v in _finished_snapshot(out).items() if k in seen} == seen
    assert finished_rows(out) == finished_rows(reference)
    assert trial_ids(out, "status = 'interrupted'") == killed_in


_REAL_SEARCH = """
import sys
from greenshift.search import DSNNSearch, SearchSettings
settings = SearchSettings(dataset="digits", backbone="tiny_cnn", out=sys.argv[1], trials=5, min_epochs=1,
                          max_epochs=3, seed=0, device="cpu", keep_models="none", fixed={"batch_size": "32"})
DSNNSearch(settings).run()
"""


@pytest.mark.slow
def test_a_real_trial_killed_mid_epoch_resumes_from_its_continuation_checkpoint(tmp_path):
    out, reference = tmp_path / "run", tmp_path / "reference"
    # Kill the search (and with it its trial process) inside a promoted trial, which continues training
    # from the checkpoint its lower budget left, a moment after it began an epoch.
    proc = subprocess.Popen([sys.executable, "-c", _REAL_SEARCH, str(out)])
    deadline = time.time() + 240
    promoted = "budget_epochs = 3 and is_default = 0"
    while not _running_since(out, 0.1, promoted) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert count_rows(out, f"status = 'running' and {promoted}") == 1, "the kill must land inside the trial"
    assert list((out / "checkpoints").glob("continue-*.pt")), "the promoted trial continues a checkpoint"
    subprocess.run([sys.executable, "-c", _REAL_SEARCH, str(out)], check=True, timeout=600)
    subprocess.run([sys.executable, "-c", _REAL_SEARCH, str(reference)], check=True, timeout=600)
    assert count_rows(out, "status = 'interrupted'") == 1
    # the same trials with the same objectives: continuing after the kill trained exactly what an
    # uninterrupted run trained (bit for bit on the CPU)
    assert finished_rows(out) == finished_rows(reference)
    with RunStore.open(out) as store:
        assert any(r.metrics.get("continued_from_epoch", 0) > 0 for r in store.trials(TrialStatus.OK))


@pytest.mark.slow
def test_a_two_worker_run_killed_mid_search_resumes_without_losing_or_repeating_a_trial(tmp_path):
    out = tmp_path / "run"
    script = _search_script(out, trials=12, seed=4, sleep_s=0.15, extra=", workers=2")
    # The whole process group, workers included, as a batch system ends a job.
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(_finished_snapshot(out)) < 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _finished_snapshot(out)
    running = count_rows(out, "status = 'running'")
    assert 4 <= len(before) < 12 and running >= 1
    final = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert final.returncode == 0 and "FINISHED 12" in final.stdout, final.stderr[-2000:]
    after = _finished_snapshot(out)
    assert {k: after[k] for k in before} == before
    keys = [v[:3] for v in after.values()]
    assert len(after) == 12 and len(keys) == len(set(keys)), "a finished trial ran again"
    assert count_rows(out, "status = 'interrupted'") == running
