"""The search: one object that wires space, SMAC, runners, store and progress.

Like SMAC's own facades, every part is built by a small overridable ``get_*`` method and can be
injected (``trial_function``, ``dask_client``, ``progress``, ``facade_class``: the SMAC side, see
:mod:`greenshift.search.facades`). The run store is the source of truth:
SMAC's optimiser state is rebuilt on resume by replaying the same seeded ask/tell sequence, in which
every trial already completed is answered from the store instead of being run again. That makes a
resume exact after any kill, even one that cut SMAC's own files short, and never trips over trials
that were running when the process died (SMAC3 issue 1293): those are marked interrupted and re-run
when the replay asks for them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from greenshift.errors import ConfigError, GreenshiftError
from greenshift.fileio import jsonable
from greenshift.search import cluster
from greenshift.search.facades import SearchFacade, facade_for
from greenshift.search.hyperband import bracket_configurations
from greenshift.search.interrupt import graceful_ctrl_c
from greenshift.search.isolation import IsolatedTrial
from greenshift.search.known_energy import ConfigurationEnergy, known_objective_indices
from greenshift.search.progress import NullProgress, SearchProgress, SearchStats
from greenshift.search.runners import (
    SmacTarget,
    budget_to_epochs,
    configuration_values,
    make_runner,
    plain_values,
)
from greenshift.search.scenario import affordable_trials, make_scenario
from greenshift.search.settings import SearchSettings
from greenshift.search.space import baseline_configuration, build_space, outside_space, space_to_json
from greenshift.search.trial import (
    CRASHED,
    OK,
    TIMEOUT,
    TrialSettings,
    dataset_shape,
    run_trial,
)
from greenshift.store import RunLayout, RunStore, TrialRecord, TrialStatus, run_default, run_front
from greenshift.store.front import FrontEntry, front_trial_ids
from greenshift.store.layout import continuation_key
from greenshift.store.lock import WriterLock
from greenshift.store.records import config_key

logger = logging.getLogger(__name__)

FINAL_STATUSES = (TrialStatus.OK, TrialStatus.CRASHED, TrialStatus.DIVERGED, TrialStatus.TIMEOUT)


@dataclass(frozen=True)
class SearchResult:
    """What a search returns: all trials, the Pareto front at the maximum budget and the default."""

    run_dir: Path
    objectives: tuple[str, ...]
    max_epochs: int
    trials: list[TrialRecord]
    #: The run's front (:func:`greenshift.store.run_front`: seeds averaged, finite objectives only).
    pareto: list[FrontEntry]
    #: The default configuration at the full budget (:func:`greenshift.store.run_default`).
    default: FrontEntry | None
    stop_reason: str
    #: Hyperparameters of the baseline (the default DSNN configuration) that the searched space cannot
    #: produce, each with what the space allows; empty when the baseline lies inside the space.
    baseline_outside: dict[str, str] = field(default_factory=dict)

    @property
    def completed(self) -> list[TrialRecord]:
        """Trials that finished (any final status)."""
        return [t for t in self.trials if t.status in FINAL_STATUSES]


@dataclass
class _Pending:
    trial_id: int
    key: tuple[str, int, int]
    is_default: bool
    budget_epochs: int


class DSNNSearch:
    """Multi-fidelity multi-objective search of DSNN configurations, resumable by run directory.

    ``facade_class`` builds SMAC's side of the search: by default the registered facade of
    ``settings.optimizer`` (:func:`~greenshift.search.facades.facade_for`); a subclass of it changes
    one part (see :mod:`greenshift.search.facades`).
    """

    def __init__(
        self,
        settings: SearchSettings,
        *,
        trial_function: Callable[..., dict[str, Any]] = run_trial,
        dask_client: Any | None = None,
        progress: SearchProgress | None = None,
        facade_class: type[SearchFacade] | None = None,
    ):
        self.settings = settings
        self.facade_class = _checked_facade_class(facade_class, settings.optimizer)
        self.trial_function = trial_function
        self._dask_client = dask_client
        self._own_cluster: Any | None = None
        self.progress = progress or NullProgress()
        self._stop_requested = threading.Event()
        self._pending: list[_Pending] = []
        self._isolated: IsolatedTrial | None = None
        # (finished trials' ids and statuses, Pareto size, hypervolume) of the last progress update
        self._front_summary: tuple[tuple[Any, ...], int, float | None] | None = None

    # -- parts, each overridable -------------------------------------------------------------
    def get_shiftable_layers(self) -> int:
        """Number of shiftable layers of the backbone: the upper bound of ``shift_depth``."""
        from greenshift.data import list_datasets
        from greenshift.models import get_model
        from greenshift.shift import count_shiftable_layers

        infos = {info.name: info for info in list_datasets()}
        if self.settings.dataset not in infos:
            raise ConfigError(
                f"unknown data set {self.settings.dataset!r}; available: {', '.join(sorted(infos))}"
            )
        if self.settings.data_dir is not None and not infos[self.settings.dataset].needs_data_dir:
            # Checked here as well as by the data set's loader, so the search stops before any trial.
            raise ConfigError(
                f"data set {self.settings.dataset!r} reads no files: drop --data-dir (data_dir=)"
            )
        return count_shiftable_layers(get_model(self.settings.backbone, num_classes=10, in_channels=3))

    def get_space(self) -> tuple[Any, dict[str, Any]]:
        """The ConfigSpace space and the values fixed outside it."""
        s = self.settings
        return build_space(
            self.get_shiftable_layers(), fixed=s.fixed, ranges=s.ranges, space_file=s.space_file, seed=s.seed
        )

    def get_baseline(self) -> Any:
        """The configuration every search evaluates at the full budget as its baseline.

        The default DSNN configuration with the ``--set`` values, evaluated as it is even where it lies
        outside the ``--range``s or the space file: narrowing the search must not move what
        "improvement over the default DSNN" is measured against. SMAC is never told its result.
        """
        s = self.settings
        return baseline_configuration(self.get_shiftable_layers(), fixed=s.fixed, seed=s.seed)

    def get_threads_per_worker(self) -> int | None:
        """Torch threads per trial: ``--threads-per-trial``, else the cores split between local workers.

        None leaves the choice to where the trial runs: torch's default in process, and on the workers
        of an existing cluster their own host's cores split between the workers on that host.
        """
        s = self.settings
        if s.threads_per_trial is not None:
            return s.threads_per_trial
        if s.scheduler or s.workers <= 1:
            return None
        return max(1, (os.cpu_count() or 1) // s.workers)

    def get_dask_client(self) -> Any | None:
        """A client for ``--scheduler``, a local cluster for ``--workers N > 1``, or None (in process)."""
        if self._dask_client is None:
            self._dask_client, self._own_cluster = cluster.connect(
                self.settings.scheduler, self.settings.workers
            )
        return self._dask_client

    def get_trial_settings(self, fixed_extra: Mapping[str, Any]) -> TrialSettings:
        """What every worker needs to run a trial of this search."""
        s = self.settings
        return TrialSettings(
            dataset=s.dataset,
            backbone=s.backbone,
            objectives=tuple(s.objectives),
            max_epochs=s.max_epochs,
            run_dir=str(Path(s.out).resolve()),
            data_dir=s.data_dir,
            image_size=s.image_size,
            split_seed=s.split_seed,
            device=s.device,
            threads_per_worker=self.get_threads_per_worker(),
            continue_promoted=s.continue_promoted,
            keep_models=s.keep_models,
            trial_timeout_s=s.trial_timeout_s,
            energy_table=s.energy_table,
            meter=s.meter,
            country_iso_code=s.country_iso_code,
            fixed_extra=dict(fixed_extra),
        )

    def get_trial_runner(self, store: RunStore) -> Callable[..., dict[str, Any]]:
        """The trial function SMAC's runner calls: ``trial_function`` in a trial process, or as it is.

        A resumed run starts its trial time limit from the longest time per epoch of its earlier
        trials (see :func:`~greenshift.search.isolation.trial_timeout`).
        """
        s = self.settings
        if not s.isolate_trials:
            return self.trial_function
        per_epoch = [
            float(r.duration_s) / int(r.metrics["epochs_trained"])
            for r in store.trials(TrialStatus.OK)
            if r.duration_s and int(r.metrics.get("epochs_trained") or 0) > 0
        ]
        self._isolated = IsolatedTrial(
            self.trial_function,
            trial_timeout_s=s.trial_timeout_s,
            walltime_s=s.walltime_s,
            per_epoch_hint_s=max(per_epoch, default=None),
        )
        return self._isolated

    def get_known_objectives(
        self, trial_settings: TrialSettings
    ) -> Callable[[Mapping[str, Any], int], Any] | None:
        """The objectives SMAC can take as known instead of learning them (see :mod:`.known_energy`).

        None when the facade does not use them (random search), when fewer than all objectives but one
        are known before training, when the data set cannot be read (its trials then record why), and for
        a custom trial function, whose objectives need not be greenshift's.
        """
        s = self.settings
        if (
            not self.facade_class.uses_known_objectives
            or self.trial_function is not run_trial
            or known_objective_indices(s.objectives) is None
        ):
            return None
        try:
            num_classes, input_shape = dataset_shape(trial_settings)
        except GreenshiftError as exc:
            logger.debug("pricing configurations before training is off: %s", exc)
            return None
        # The modelled energy is the one objective known before training (KNOWN_OBJECTIVES).
        energy = ConfigurationEnergy(
            s.backbone,
            num_classes,
            input_shape,
            energy_table=s.energy_table,
            fixed_extra=trial_settings.fixed_extra,
        )
        return lambda columns, count: energy.of_columns(columns, count)[:, None]

    def get_facade(self, scenario: Any, trial_settings: TrialSettings) -> Any:
        """SMAC's facade for ``scenario``, built by :attr:`facade_class` from its parts."""
        s = self.settings
        return self.facade_class(
            scenario,
            eta=s.eta,
            objective_weights=s.objective_weights,
            verbose=s.verbose,
            known_objectives=self.get_known_objectives(trial_settings),
        ).build()

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        """Run (or resume) the search until a limit is reached; returns the result from the store.

        The run directory is locked for the whole run (:class:`~greenshift.store.lock.WriterLock`): a second
        search on it is refused with a :class:`~greenshift.errors.StoreError` that names this process.
        """
        space, fixed_extra = self.get_space()
        # Before anything in the directory is touched (--force-new moves the run away): one writer only.
        with WriterLock(self.settings.out):
            return self._run_locked(space, fixed_extra)

    def _run_locked(self, space: Any, fixed_extra: dict[str, Any]) -> SearchResult:
        import greenshift

        s = self.settings
        run_dir = Path(s.out)
        store = RunStore.create(
            run_dir,
            identity=s.identity(space_to_json(space), fixed_extra),
            info={
                "greenshift_version": greenshift.__version__,
                "settings": jsonable(dataclasses.asdict(s)),
                # Runs repeat whatever the hash seed since the search orders SMAC's local searches itself
                # (greenshift.search.acquisition); recorded because earlier runs depended on it.
                "python_hash_seed": os.environ.get("PYTHONHASHSEED"),
            },
            force_new=s.force_new,
        )
        # A run resumed from before the baseline stopped moving with --range keeps the default it has.
        done = next((r for r in store.trials() if r.is_default and r.status in FINAL_STATUSES), None)
        baseline = done.config if done is not None else configuration_values(self.get_baseline())
        baseline_outside = outside_space(space, baseline)
        # The report reads it from here: the baseline is evaluated as it is, even outside the space.
        store.set_state("baseline_outside", baseline_outside)
        try:
            with graceful_ctrl_c(self._first_ctrl_c, lambda: self.stop_requested):
                store.remove_stale_temporaries()
                store.interrupt_running()
                stop_reason = self._optimize(store, space, fixed_extra)
                self._cleanup_checkpoints(store)
                records = store.trials()
        except KeyboardInterrupt:
            store.interrupt_running()
            raise
        finally:
            self._close_trial_processes()
            self._close_cluster()
            store.close()
        return SearchResult(
            run_dir=run_dir,
            objectives=tuple(s.objectives),
            max_epochs=s.max_epochs,
            trials=records,
            pareto=list(run_front(records, s.objectives, s.max_epochs)),
            default=run_default(records, s.objectives, s.max_epochs),
            stop_reason=stop_reason,
            baseline_outside=baseline_outside,
        )

    def request_stop(self) -> None:
        """Stop asking for new trials; running ones finish and are recorded."""
        self._stop_requested.set()

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`request_stop` was called (the first Ctrl-C calls it)."""
        return self._stop_requested.is_set()

    def _first_ctrl_c(self) -> None:
        self.request_stop()
        self.progress.note("stopping after the running trials (Ctrl-C again to abandon them)")

    def _optimize(self, store: RunStore, space: Any, fixed_extra: Mapping[str, Any]) -> str:
        from smac.runhistory import TrialInfo

        s = self.settings
        multi_fidelity = self.facade_class.multi_fidelity
        scenario = make_scenario(
            space,
            multi_fidelity=multi_fidelity,
            objectives=s.objectives,
            output_directory=RunLayout(s.out).smac,
            seed=s.seed,
            # The initial design's size depends on n_trials: keep the first session's value so that a
            # resumed run with a larger --trials replays the same sequence before it goes further.
            n_trials=int(
                store.get_state(
                    "scenario_trials",
                    affordable_trials(
                        s.trials,
                        s.max_total_epochs,
                        multi_fidelity=multi_fidelity,
                        min_epochs=s.min_epochs,
                        max_epochs=s.max_epochs,
                        eta=s.eta,
                        continue_promoted=s.continue_promoted,
                    ),
                )
            ),
            min_epochs=s.min_epochs,
            max_epochs=s.max_epochs,
            n_workers=max(1, s.workers),
        )
        store.set_state("scenario_trials", scenario.n_trials)
        client = self.get_dask_client()
        trial_settings = self.get_trial_settings(fixed_extra)
        trial_function = self.get_trial_runner(store)
        if isinstance(trial_function, IsolatedTrial):
            cluster.start_trial_processes(client, trial_function, trial_settings)
        elif self.trial_function is run_trial:
            cluster.prepare_workers(client, trial_settings)
        smac = self.get_facade(scenario, trial_settings)
        target = SmacTarget(trial_settings, trial_function)
        runner = make_runner(scenario, target, client)
        capacity = cluster.worker_slots(client)
        if isinstance(trial_function, IsolatedTrial):
            cluster.wait_for_trial_processes(client, trial_function, trial_settings)
        started = time.time()
        self.progress.start(self._stats(store, started))

        default_config = self.get_baseline()
        default_values = configuration_values(default_config)
        if not self._default_done(store):
            info = TrialInfo(
                config=default_config, seed=s.seed, budget=s.max_epochs if multi_fidelity else None
            )
            self._submit(store, runner, info, default_values, is_default=True)

        stop_reason = ""
        asking = True
        while True:
            self._collect(store, smac, runner)
            if asking:
                stop_reason = self._limit_reached(store, started)
                if stop_reason:
                    asking = False
            if asking and len(self._pending) < capacity:
                try:
                    info = _ask(smac)
                except StopIteration:
                    asking, stop_reason = False, "the optimiser has no configurations left"
                    continue
                values = configuration_values(info.config)
                epochs = budget_to_epochs(info.budget, s.max_epochs)
                done = store.find(values, epochs, int(info.seed or 0))
                if done is not None and done.status in FINAL_STATUSES:
                    smac.tell(info, self._value_from_record(store, done), save=False)
                    continue
                if self._over_epoch_budget(store, epochs):
                    asking, stop_reason = False, f"reached --max-total-epochs {s.max_total_epochs}"
                    continue
                self._submit(store, runner, info, values, is_default=False)
                self.progress.update(self._stats(store, started))
                continue
            if not self._pending:
                break
            runner.wait()
        # SMAC's own files (DIR/smac/.../runhistory.json) then hold every trial SMAC was told, for SMAC's
        # tooling; told with save=False per trial, as saving after each would rewrite them every time.
        smac.optimizer.save()
        self.progress.stop(self._stats(store, started), stop_reason)
        return stop_reason

    def _submit(self, store: RunStore, runner: Any, info: Any, values: dict, *, is_default: bool) -> None:
        epochs = budget_to_epochs(info.budget, self.settings.max_epochs)
        seed = int(info.seed or 0)
        trial_id = store.start_trial(values, epochs, seed, is_default=is_default)
        self._pending.append(_Pending(trial_id, (config_key(values), epochs, seed), is_default, epochs))
        runner.submit_trial(info)

    def _collect(self, store: RunStore, smac: Any, runner: Any) -> None:
        for info, value in runner.iter_results():
            values = configuration_values(info.config)
            epochs = budget_to_epochs(info.budget, self.settings.max_epochs)
            key = (config_key(values), epochs, int(info.seed or 0))
            pending = next((p for p in self._pending if p.key == key), None)
            if pending is None:
                continue
            self._pending.remove(pending)
            outcome = (value.additional_info or {}).get("greenshift")
            if outcome is None:  # the runner itself failed (e.g. SMAC caught an exception)
                error = (value.additional_info or {}).get("error", "the trial failed before it returned")
                outcome = {"status": CRASHED, "objectives": {}, "metrics": {}, "error": str(error)}
            status = TrialStatus(outcome["status"])
            metrics = dict(outcome.get("metrics", {}))
            # Whatever the outcome, the epochs the trial spent count towards --max-total-epochs; a
            # trial lost without a word (its Dask worker died) is charged its whole budget.
            metrics["epochs_trained"] = outcome.get("epochs_trained", pending.budget_epochs)
            metrics["worker"] = outcome.get("worker")
            store.finish_trial(
                pending.trial_id,
                status,
                objectives=outcome.get("objectives") or None,
                metrics=metrics,
                error=outcome.get("error"),
                checkpoint=outcome.get("checkpoint"),
                duration_s=outcome.get("duration_s", float(value.time)),
            )
            if not pending.is_default:
                smac.tell(info, self._value_from_record(store, store.trial(pending.trial_id)), save=False)
            if self.settings.continue_promoted:
                self._drop_dead_continuations(store, smac)
            self.progress.update(self._stats(store, None))

    def _value_from_record(self, store: RunStore, record: TrialRecord) -> Any:
        """The SMAC trial value of a stored trial, identical whether told live or replayed on resume.

        Only stored values are used, so a replay tells SMAC exactly what the live run told it. Failed
        trials get the worst cost among the OK trials that finished before them (not the worst of the
        whole store, which would differ between the live run and a later replay).
        """
        from smac.runhistory import StatusType, TrialValue

        objectives = self.settings.objectives
        timing = {
            "time": float(record.duration_s or 0.0),
            "starttime": float(record.started_at),
            "endtime": float(record.finished_at or record.started_at),
        }
        if record.status == TrialStatus.OK:
            cost = [float(record.objectives[n]) for n in objectives]
            return TrialValue(cost=cost, status=StatusType.SUCCESS, **timing)
        earlier = [r for r in store.trials(TrialStatus.OK) if r.trial_id < record.trial_id]
        worst = [max((r.objectives[n] for r in earlier), default=1.0) for n in objectives]
        status = StatusType.TIMEOUT if record.status == TrialStatus(TIMEOUT) else StatusType.CRASHED
        return TrialValue(cost=worst, status=status, **timing)

    def _default_done(self, store: RunStore) -> bool:
        # Any finished default counts: a run's baseline follows from its identity, except in runs started
        # before --range stopped moving it, whose default must stay the one they compared against.
        return any(r.is_default and r.status in FINAL_STATUSES for r in store.trials())

    def _limit_reached(self, store: RunStore, started: float) -> str:
        s = self.settings
        records = store.trials()
        finished = sum(1 for r in records if r.status in FINAL_STATUSES)
        if finished + len(self._pending) >= s.trials:
            return f"reached --trials {s.trials}"
        if s.walltime_s is not None and time.time() - started >= s.walltime_s:
            return f"reached --walltime {s.walltime_s:g} s"
        if self._over_epoch_budget(store, s.min_epochs):
            return f"reached --max-total-epochs {s.max_total_epochs}"
        if self._stop_requested.is_set():
            return "stopped by the user"
        return ""

    def _over_epoch_budget(self, store: RunStore, next_epochs: int) -> bool:
        """Whether a trial of ``next_epochs`` would exceed ``--max-total-epochs`` (running ones reserved)."""
        if self.settings.max_total_epochs is None:
            return False
        spent = sum(
            int(r.metrics.get("epochs_trained", 0)) for r in store.trials() if r.status in FINAL_STATUSES
        )
        reserved = sum(p.budget_epochs for p in self._pending)
        return spent + reserved + next_epochs > self.settings.max_total_epochs

    def _drop_dead_continuations(self, store: RunStore, smac: Any) -> None:
        """Delete training states of configurations that Hyperband can no longer promote."""
        promotable = bracket_configurations(smac.intensifier)
        if promotable is None:
            return
        alive = {p.key[0] for p in self._pending}
        alive.update(config_key(plain_values(values)) for values in promotable)
        for path in RunLayout(self.settings.out).continuation_checkpoints():
            if continuation_key(path) not in alive:
                path.unlink(missing_ok=True)

    def _cleanup_checkpoints(self, store: RunStore) -> None:
        """Bounded disk use: no continuation states after a search; models kept per --keep-models."""
        for path in RunLayout(self.settings.out).continuation_checkpoints():
            path.unlink(missing_ok=True)
        if self.settings.keep_models != "pareto":
            return
        records = store.trials()
        # Every seed's model of a front configuration is kept: the front averages them.
        front = front_trial_ids(run_front(records, self.settings.objectives, self.settings.max_epochs))
        for record in records:
            if record.checkpoint and record.trial_id not in front and not record.is_default:
                store.remove_checkpoint(record.trial_id)

    def _stats(self, store: RunStore, started: float | None) -> SearchStats:
        records = store.trials()
        s = self.settings
        finished = [r for r in records if r.status in FINAL_STATUSES]
        pareto_size, hypervolume = self._front_of(finished)
        return SearchStats(
            total=s.trials,
            done=len(finished),
            running=len(self._pending),
            failed=sum(1 for r in finished if r.status != TrialStatus(OK)),
            pareto_size=pareto_size,
            hypervolume=hypervolume,
            epochs_spent=sum(int(r.metrics.get("epochs_trained", 0)) for r in records),
        )

    def _front_of(self, finished: Sequence[TrialRecord]) -> tuple[int, float | None]:
        """Pareto size and hypervolume of the finished trials; recomputed only when they change.

        The progress display asks after every submission too, when only the running count moved.
        """
        key = tuple((r.trial_id, r.status) for r in finished)
        if self._front_summary is None or self._front_summary[0] != key:
            s = self.settings
            front = run_front(finished, s.objectives, s.max_epochs)
            default = next((r for r in finished if r.is_default and r.status == TrialStatus.OK), None)
            self._front_summary = (key, len(front), _progress_hypervolume(front, default, s.objectives))
        return self._front_summary[1], self._front_summary[2]

    def _close_trial_processes(self) -> None:
        """Stop the trial processes: this process's, and those on the workers of a cluster we keep."""
        if self._isolated is None:
            return
        self._isolated.close()
        if self._dask_client is not None and self._own_cluster is None:
            cluster.close_worker_trial_processes(self._dask_client)
        self._isolated = None

    def _close_cluster(self) -> None:
        if self._own_cluster is not None:
            cluster.close(self._dask_client, self._own_cluster)
            self._own_cluster = None
            self._dask_client = None


def _checked_facade_class(cls: type[SearchFacade] | None, optimizer: str) -> type[SearchFacade]:
    """``cls``, or the registered facade of ``optimizer``; ``cls`` must be a facade of that optimiser."""
    if cls is None:
        return facade_for(optimizer)
    if not (isinstance(cls, type) and issubclass(cls, SearchFacade)):
        raise ConfigError(f"facade_class must be a subclass of SearchFacade, got {cls!r}")
    if cls.name != optimizer:
        # The run's identity names the optimiser: a facade of another one would resume the wrong run.
        raise ConfigError(
            f"facade_class {cls.__name__} builds the {cls.name!r} optimiser, but optimizer is {optimizer!r}"
        )
    return cls


def _ask(smac: Any) -> Any:
    """``smac.ask()`` without the numpy warnings of SMAC's local-search debug log.

    SMAC 2.4's local search logs ``np.mean`` of its acquisition timings, which is empty when no
    neighbour needed evaluating; the resulting "Mean of empty slice" warnings mean nothing to users.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
        warnings.filterwarnings(
            "ignore", message="invalid value encountered in scalar divide", category=RuntimeWarning
        )
        return smac.ask()


def _progress_hypervolume(
    front: Sequence[FrontEntry], default: TrialRecord | FrontEntry | None, objectives: Sequence[str]
) -> float | None:
    """Hypervolume of the current front against the default-based reference (None before the default)."""
    if default is None or not front:
        return None
    from greenshift.objectives.pareto import hypervolume, reference_point_for

    reference = reference_point_for(list(objectives), {n: default.objectives[n] for n in objectives})
    points = np.array([[r.objectives[n] for n in objectives] for r in front], dtype=float)
    return float(hypervolume(points, reference))


__all__ = ["DSNNSearch", "SearchResult", "SearchSettings"]
