"""Trials in a process of their own, so that a hung or crashing trial cannot take the search with it.

:class:`IsolatedTrial` wraps a trial function. Called like it, it runs the trial in a *trial process*:
a child Python process that the calling process (the search's own, or a Dask worker) starts once and
reuses for every trial, so torch and the data set are loaded once, not per trial
(``bench/search_overhead.py`` measures what remains: one round trip of small pickles per trial). The
caller waits with a deadline. When it passes, the trial process is killed and the trial recorded as
``timeout``; when the process dies (a segmentation fault, the kernel's out-of-memory killer) the
trial is recorded as ``crashed`` with the signal that ended it. Either way the next trial gets a fresh
process and the search goes on.

A trial reports its epochs to the caller as it trains (:data:`greenshift.search.trial.epoch_reporter`),
so a killed trial is charged the epochs it really spent: those it completed plus the one it was in.

The protocol over the pipe (pickled tuples): the caller sends ``("setup", trial_function, settings,
prepare)`` once, then ``("run", settings, values, budget_epochs, seed, config_key)`` per trial; the
trial process answers ``("ready",)`` after setup, ``("epochs", done, planned)`` while training and
``("done", outcome)`` at the end of a trial. The trial process ignores Ctrl-C (the search decides what
a Ctrl-C means) and exits as soon as its parent is gone, so a SIGKILL of the search never leaves a
trial training on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from greenshift.errors import ConfigError
from greenshift.search.trial import CRASHED, TIMEOUT, TrialSettings

#: A trial is killed this long after its timeout at the latest; meanwhile a trial that checks its own
#: deadline between epochs (``--trial-timeout``) can stop cleanly and keep its record of epochs.
GRACE_FRACTION, GRACE_MAX_S = 0.1, 30.0
#: Without ``--trial-timeout``: a trial may take SLACK times the longest time per epoch seen so far
#: (evaluation included) for its epochs, but never less than MIN_TIMEOUT_S. Per-epoch times of one
#: search vary with batch size and shift depth by a few times, not ten.
SLACK, MIN_TIMEOUT_S = 10.0, 120.0
#: Without ``--trial-timeout`` and before any trial finished: the search's ``--walltime`` if it has
#: one, else this. The first trial is the default configuration at the maximum budget; from then on
#: its time per epoch sets the limit.
FIRST_TRIAL_TIMEOUT_S = 6 * 3600.0
#: How long a trial process may take to load torch and the data set (a download included) before it
#: counts as hung; its trial is then recorded as crashed.
PREPARE_TIMEOUT_S = 3600.0

_SIGNAL_CAUSES = {
    signal.SIGSEGV: "a segmentation fault",
    signal.SIGKILL: "SIGKILL (the kernel's out-of-memory killer, or a user)",
    signal.SIGABRT: "an abort",
    signal.SIGBUS: "a bus error",
    signal.SIGFPE: "a floating-point exception",
}

# The trial process's first lines use the standard library only: greenshift becomes importable once
# the caller's sys.path has arrived.
_BOOT = (
    "import sys, signal;"
    "signal.signal(signal.SIGINT, signal.SIG_IGN);"
    "from multiprocessing.connection import Connection;"
    "conn = Connection(int(sys.argv[1]));"
    "sys.path[:] = conn.recv();"
    "from greenshift.search.isolation import serve;"
    "serve(conn, int(sys.argv[2]))"
)


@dataclasses.dataclass
class _Times:
    """The longest time per epoch seen (seconds, evaluation and set-up included)."""

    per_epoch_s: float | None = None

    def observe(self, outcome: Mapping[str, Any], budget_epochs: int) -> None:
        if outcome.get("status") != "ok":
            return  # a failed trial's time says nothing about how long a good one needs
        epochs = int(outcome.get("epochs_trained") or budget_epochs or 1)
        duration = float(outcome.get("duration_s") or 0.0)
        if duration > 0 and epochs > 0:
            self.per_epoch_s = max(self.per_epoch_s or 0.0, duration / epochs)


def trial_timeout(
    budget_epochs: int, *, explicit_s: float | None, per_epoch_s: float | None, walltime_s: float | None
) -> tuple[float, str]:
    """Seconds after which a trial of ``budget_epochs`` epochs is killed, and how that was decided.

    ``--trial-timeout`` when given, plus a grace in which the trial can stop itself between epochs;
    otherwise :data:`SLACK` times the longest time per epoch seen, at least :data:`MIN_TIMEOUT_S`;
    before any trial finished, ``--walltime`` or :data:`FIRST_TRIAL_TIMEOUT_S`.
    """
    if explicit_s is not None:
        return explicit_s + min(GRACE_MAX_S, max(1.0, GRACE_FRACTION * explicit_s)), (
            f"--trial-timeout {explicit_s:g} s"
        )
    if per_epoch_s is not None:
        limit = max(MIN_TIMEOUT_S, SLACK * per_epoch_s * max(1, budget_epochs))
        return limit, (
            f"the default limit of {limit:.0f} s ({SLACK:g} x the longest {per_epoch_s:.3g} s per epoch seen "
            f"for {budget_epochs} epochs; set --trial-timeout to change it)"
        )
    limit = walltime_s if walltime_s is not None else FIRST_TRIAL_TIMEOUT_S
    return limit, f"the default limit of {limit:.0f} s before any trial finished (set --trial-timeout)"


class TrialProcess:
    """One trial process (see the module docstring); not thread-safe, one trial at a time."""

    def __init__(self, trial_function: Callable[..., dict[str, Any]], settings: TrialSettings) -> None:
        """Remember what to run; :meth:`start` starts the process."""
        self.trial_function = trial_function
        self.settings = settings
        self.times = _Times()
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Any = None
        self._ready = False
        self._reports_epochs = _reports_epochs(trial_function)
        #: Why the process could not load the trial function (its trials are recorded as crashed).
        self.setup_error: str | None = None
        self._worker: str | None = None  # host:pid of the latest process, kept after it is gone

    @property
    def alive(self) -> bool:
        """Whether the process is running."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id of the trial process, if one was started."""
        return None if self._proc is None else self._proc.pid

    def start(self, *, prepare: bool = True) -> None:
        """Start the process and ask it to load what the trials need; does not wait for it."""
        if self.alive:
            return
        self.close()
        try:
            setup = pickle.dumps(("setup", self.trial_function, self.settings, prepare))
        except Exception as exc:  # a lambda or a closure: cannot reach another process
            raise ConfigError(
                f"the trial function cannot be sent to a trial process ({exc}); give a picklable one, "
                "or run trials in the search's own process (isolate_trials=False)"
            ) from None
        ours, theirs = multiprocessing.Pipe(duplex=True)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        self._conn = ours
        self._worker = f"{socket.gethostname()}:{self._proc.pid}"
        self._ready = False
        self.setup_error = None
        self._conn.send(list(sys.path))
        self._conn.send_bytes(setup)

    def run(
        self,
        settings: TrialSettings,
        values: Mapping[str, Any],
        budget_epochs: int,
        seed: int,
        config_key: str,
        *,
        timeout_s: float,
        timeout_reason: str,
    ) -> dict[str, Any]:
        """Run one trial in the process (starting one if needed); kill it after ``timeout_s`` seconds.

        Returns the trial's outcome, or a ``timeout``/``crashed`` outcome for a trial that was killed
        or whose process died. Any exception here (Ctrl-C included) kills the process first.
        """
        self.start()
        try:
            self.wait_until_ready()
            if self.setup_error is not None:
                outcome = self._lost(CRASHED, self.setup_error, budget_epochs, time.time(), (0, 0))
                self.kill()
                return outcome
            if not self.alive:
                return self._died(None, budget_epochs, time.time(), (0, None))
            started = time.time()
            epochs: tuple[int, int | None] = (0, None)
            try:
                self._conn.send(("run", settings, dict(values), budget_epochs, seed, config_key))
            except OSError:  # it died just now
                return self._died(started, budget_epochs, started, epochs)
            deadline = started + timeout_s
            while True:
                remaining = deadline - time.time()
                if remaining <= 0 or not self._conn.poll(remaining):
                    self.kill()
                    return self._lost(
                        TIMEOUT,
                        f"trial killed after {time.time() - started:.1f} s by {timeout_reason}",
                        budget_epochs,
                        started,
                        epochs,
                    )
                try:
                    message = self._conn.recv()
                except (EOFError, OSError):
                    return self._died(started, budget_epochs, started, epochs)
                if message[0] == "epochs":
                    epochs = (int(message[1]), int(message[2]))
                elif message[0] == "done":
                    outcome = dict(message[1])
                    self.times.observe(outcome, budget_epochs)
                    return outcome
        except BaseException:
            self.kill()
            raise

    def wait_until_ready(self) -> None:
        """Wait for the process to load torch and the data set (not part of any trial's time limit)."""
        deadline = time.time() + PREPARE_TIMEOUT_S
        while not self._ready and self.alive:
            if time.time() > deadline:
                self.setup_error = f"the trial process was not ready after {PREPARE_TIMEOUT_S:.0f} s"
                return
            if not self._conn.poll(1.0):
                continue
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                return
            self._ready = message[0] == "ready"
            if message[0] == "setup failed":
                self.setup_error = str(message[1])

    def _died(
        self, started: float | None, budget_epochs: int, since: float, epochs: tuple[int, int | None]
    ) -> dict[str, Any]:
        assert self._proc is not None
        try:
            code = self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self._proc.returncode
        cause = _exit_cause(code)
        where = "before it could start the trial" if started is None else "during the trial"
        self.close()
        return self._lost(CRASHED, f"the trial process died {where}: {cause}", budget_epochs, since, epochs)

    def _lost(
        self, status: str, error: str, budget_epochs: int, since: float, epochs: tuple[int, int | None]
    ) -> dict[str, Any]:
        done, planned = epochs
        if planned is not None:
            spent = min(done + 1, planned)
        else:
            # A trial function that does not report epochs is charged its whole budget: never less
            # than it spent, so --max-total-epochs is never overrun.
            spent = 0 if self._reports_epochs else budget_epochs
        return {
            "status": status,
            "objectives": {},
            "metrics": {"epochs_completed": done},
            "error": error,
            "checkpoint": None,
            "worker": self._worker,
            "epochs_trained": spent,
            "duration_s": time.time() - since,
        }

    def kill(self) -> None:
        """Kill the process at once (SIGKILL) and forget it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self.close()

    def close(self) -> None:
        """Ask the process to exit (it finishes nothing), and release the pipe."""
        if self._conn is not None:
            with contextlib.suppress(OSError, ValueError):  # already gone
                self._conn.send(None)
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        self._ready = False


def _reports_epochs(trial_function: Callable[..., Any]) -> bool:
    from greenshift.search.trial import run_trial

    return trial_function is run_trial


def _exit_cause(code: int | None) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        number = -code
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        cause = _SIGNAL_CAUSES.get(number)  # type: ignore[call-overload]
        return f"killed by {name}" + (f", {cause}" if cause else "")
    return f"exited with code {code}"


# One trial process per calling process: a Dask worker reuses it for every trial of the search that
# started it, and a new search (another IsolatedTrial) replaces it.
_PROCESSES: dict[str, TrialProcess] = {}
_PROCESSES_LOCK = threading.Lock()


class IsolatedTrial:
    """A trial function that runs ``trial_function`` in a trial process with a time limit.

    Picklable (the trial process is not part of the pickle): a Dask worker that receives it starts its
    own trial process on first use. ``trial_timeout_s`` and ``walltime_s`` are the search's
    ``--trial-timeout`` and ``--walltime``; ``per_epoch_hint_s`` is the longest time per epoch of the
    run's earlier trials (on resume), which :func:`trial_timeout` uses until this process has its own.
    """

    def __init__(
        self,
        trial_function: Callable[..., dict[str, Any]],
        *,
        trial_timeout_s: float | None = None,
        walltime_s: float | None = None,
        per_epoch_hint_s: float | None = None,
    ) -> None:
        """Wrap ``trial_function`` (it must be picklable)."""
        self.trial_function = trial_function
        self.trial_timeout_s = trial_timeout_s
        self.walltime_s = walltime_s
        self.per_epoch_hint_s = per_epoch_hint_s
        self.key = uuid.uuid4().hex

    def process(self, settings: TrialSettings, *, create: bool = True) -> TrialProcess | None:
        """This calling process's trial process for this search (None if there is none and not ``create``)."""
        with _PROCESSES_LOCK:
            current = _PROCESSES.get(self.key)
            if current is None and create:
                for other in list(_PROCESSES):
                    _PROCESSES.pop(other).close()
                current = _PROCESSES[self.key] = TrialProcess(self.trial_function, settings)
            return current

    def prepare(self, settings: TrialSettings, dask_worker: Any = None) -> None:
        """Start the trial process now, so it loads torch and the data set before the first trial.

        Runs in the search's process, or on every Dask worker through ``Client.run`` (which fills in
        ``dask_worker``).
        """
        settings = _resolved(settings, dask_worker)
        proc = self.process(settings)
        assert proc is not None
        proc.settings = settings
        proc.start(prepare=True)

    def wait_ready(self, settings: TrialSettings, dask_worker: Any = None) -> None:
        """Wait until the trial process started by :meth:`prepare` has loaded torch and the data set.

        The search calls it before its first trial, so that this one-time loading counts towards the
        search's start-up, like its imports, and not towards the first trial's wall time.
        """
        proc = self.process(_resolved(settings, dask_worker), create=False)
        if proc is not None and proc.alive:
            proc.wait_until_ready()

    def __call__(
        self,
        settings: TrialSettings,
        values: Mapping[str, Any],
        budget_epochs: int,
        seed: int,
        config_key: str,
    ) -> dict[str, Any]:
        """Run the trial in the trial process; the outcome of the trial, or of its kill or crash."""
        settings = _resolved(settings)
        proc = self.process(settings)
        assert proc is not None
        hint = proc.times.per_epoch_s if proc.times.per_epoch_s is not None else self.per_epoch_hint_s
        limit, reason = trial_timeout(
            budget_epochs, explicit_s=self.trial_timeout_s, per_epoch_s=hint, walltime_s=self.walltime_s
        )
        return proc.run(
            settings, values, budget_epochs, seed, config_key, timeout_s=limit, timeout_reason=reason
        )

    def close(self) -> None:
        """Stop this search's trial process in this process (if it has one)."""
        with _PROCESSES_LOCK:
            proc = _PROCESSES.pop(self.key, None)
        if proc is not None:
            proc.close()


def close_trial_processes() -> None:
    """Stop every trial process this process started (run on Dask workers when a search ends)."""
    with _PROCESSES_LOCK:
        procs = list(_PROCESSES.values())
        _PROCESSES.clear()
    for proc in procs:
        proc.close()


def _resolved(settings: TrialSettings, dask_worker: Any = None) -> TrialSettings:
    """``settings`` with what only the calling process knows: its torch threads and its GPU index.

    Inside the trial process Dask's worker is out of reach, so both are decided here. A trial in the
    search's own process ran with that process's torch threads; its trial process uses the same
    number, so that a trial trains the same model either way (retraining it later, as ``export``
    does, depends on it).
    """
    from greenshift.search.trial import _host_thread_share, _worker_index

    threads = settings.threads_per_worker
    index = settings.worker_index
    if dask_worker is not None or "distributed" in sys.modules:
        # Outside a Dask task both are None (get_worker fails there); client.run passes its worker.
        threads = threads or (None if dask_worker is not None else _host_thread_share())
        index = index if index is not None else _worker_index(dask_worker)
    if threads is None and dask_worker is None and "torch" in sys.modules:
        threads = sys.modules["torch"].get_num_threads()
    return dataclasses.replace(settings, threads_per_worker=threads, worker_index=index)


def serve(conn: Any, parent_pid: int) -> None:
    """The trial process's loop (started by :meth:`TrialProcess.start`); returns when told or orphaned."""
    from greenshift.search import trial as trial_module

    _exit_with_parent(parent_pid)
    try:
        _, trial_function, settings, prepare = pickle.loads(conn.recv_bytes())
    except Exception as exc:  # e.g. a trial function defined in a script's __main__
        conn.send(
            ("setup failed", f"the trial process cannot load the trial function: {type(exc).__name__}: {exc}")
        )
        return
    if prepare and trial_function is trial_module.run_trial:
        # A failure here is met again by the trial, which records it with its own error.
        with contextlib.suppress(Exception):
            trial_module.prepare_worker(settings)
    trial_module.epoch_reporter = lambda done, planned: conn.send(("epochs", done, planned))
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        _, settings, values, budget_epochs, seed, config_key = message
        start = time.time()
        try:
            outcome = trial_function(settings, values, budget_epochs, seed, config_key)
        except Exception as exc:  # a custom trial function may raise; run_trial never does
            outcome = {
                "status": CRASHED,
                "objectives": {},
                "metrics": {},
                "error": f"{type(exc).__name__}: {exc}",
                "checkpoint": None,
                "worker": f"{socket.gethostname()}:{os.getpid()}",
                "epochs_trained": budget_epochs,
                "duration_s": time.time() - start,
            }
        conn.send(("done", outcome))


def _exit_with_parent(parent_pid: int) -> None:
    """End this process as soon as the process that started it is gone (checked every 0.2 s).

    A thread polls the parent id rather than Linux's PR_SET_PDEATHSIG, which fires when the parent's
    *thread* ends: a Dask worker starts trial processes from threads that may be retired.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.2)
        os._exit(0)

    if os.getppid() != parent_pid:
        os._exit(0)
    threading.Thread(target=watch, name="greenshift-parent-watch", daemon=True).start()


__all__ = [
    "FIRST_TRIAL_TIMEOUT_S",
    "MIN_TIMEOUT_S",
    "SLACK",
    "IsolatedTrial",
    "TrialProcess",
    "close_trial_processes",
    "trial_timeout",
]
