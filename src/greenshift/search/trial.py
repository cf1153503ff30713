"""One trial of a search: train a configuration for a budget of epochs and evaluate its objectives.

This runs on a search worker (the main process, or a Dask worker on this or another machine), so it
must be picklable and must never raise: every failure becomes an outcome with a status and the error,
recorded by the search, which goes on.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenshift.errors import GreenshiftError
from greenshift.store import RunLayout
from greenshift.store.kept_models import save_trial_model

#: Outcome statuses of a finished trial (the store's TrialStatus values).
OK, CRASHED, DIVERGED, TIMEOUT = "ok", "crashed", "diverged", "timeout"


@dataclass(frozen=True)
class TrialSettings:
    """Everything a worker needs to run trials of one search (sent to every worker once)."""

    dataset: str
    backbone: str
    objectives: tuple[str, ...]
    max_epochs: int
    run_dir: str
    data_dir: str | None = None
    image_size: int | None = None
    split_seed: int = 0
    device: str = "auto"
    threads_per_worker: int | None = None
    continue_promoted: bool = False
    keep_models: str = "pareto"
    trial_timeout_s: float | None = None
    energy_table: str | None = None
    meter: str = "auto"
    country_iso_code: str = "DEU"
    fixed_extra: Mapping[str, Any] = field(default_factory=dict)
    # Set by the process that starts a trial process (see .isolation), where Dask's worker is not
    # reachable: which GPU the trial uses on a multi-GPU machine.
    worker_index: int | None = None


#: Set in a trial process (:mod:`greenshift.search.isolation`): called with (epochs trained so far by
#: this trial, epochs it will train) before training and after every epoch, so that the process that
#: kills a hung trial knows how many epochs it spent.
epoch_reporter: Callable[[int, int], None] | None = None


class _Epochs:
    """Epochs a trial has spent so far, counting an epoch that was begun as spent."""

    def __init__(self) -> None:
        self.done = 0
        self.planned: int | None = None
        self.inside_epoch = False

    @property
    def spent(self) -> int:
        return self.done + (1 if self.inside_epoch else 0)

    def plan(self, planned: int) -> None:
        self.planned = planned
        self.inside_epoch = planned > 0
        if epoch_reporter is not None:
            epoch_reporter(0, planned)

    def finished_epoch(self, done: int) -> None:
        self.done = done
        self.inside_epoch = False
        if epoch_reporter is not None and self.planned is not None:
            epoch_reporter(done, self.planned)

    def next_epoch_begins(self) -> None:
        self.inside_epoch = self.planned is not None and self.done < self.planned


class TrialTimeout(Exception):
    """Raised inside training when a trial runs past ``--trial-timeout``."""


_DATASETS: dict[tuple[Any, ...], Any] = {}


def _load_dataset(settings: TrialSettings) -> Any:
    from greenshift.data import load_dataset

    return load_dataset(
        settings.dataset,
        data_dir=settings.data_dir,
        image_size=settings.image_size,
        split_seed=settings.split_seed,
    )


def _dataset_key(settings: TrialSettings) -> tuple[Any, ...]:
    return (settings.dataset, settings.data_dir, settings.image_size, settings.split_seed)


def _dataset_for(settings: TrialSettings, device: Any) -> Any:
    """Load the data set once per worker process and keep it on the worker's device."""
    key = (*_dataset_key(settings), str(device))
    if key not in _DATASETS:
        _DATASETS.clear()  # one data set per worker: a new search in the same process replaces it
        _DATASETS[key] = _load_dataset(settings).to(device)
    return _DATASETS[key]


def dataset_shape(settings: TrialSettings) -> tuple[int, tuple[int, ...]]:
    """``(number of classes, shape of one input)`` of the search's data set.

    Reads them from this process's loaded copy when it has one (in-process searches), else loads the
    data set once without keeping it.
    """
    key = _dataset_key(settings)
    dataset = next((d for k, d in _DATASETS.items() if k[:-1] == key), None)
    if dataset is None:
        dataset = _load_dataset(settings)
    return dataset.num_classes, tuple(int(n) for n in dataset.train.images.shape[1:])


def prepare_worker(settings: TrialSettings, dask_worker: Any = None) -> None:
    """Load what every trial of ``settings`` needs (torch, the training code, the data set) in this process.

    Called on every Dask worker when the search starts, and in the search's own process before
    in-process trials, so that one-time loading never counts towards a trial.

    ``dask_worker`` is filled in by ``Client.run``, which runs outside any task (where
    ``distributed.get_worker`` fails) and is how the worker's GPU is found.
    """
    import torch

    from greenshift.objectives import evaluate  # noqa: F401 - imported for its import cost
    from greenshift.train import train  # noqa: F401

    # The first optimiser a process creates imports torch._dynamo (over a second here); paid now, it
    # stays out of the first trial's duration and measured energy.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    _dataset_for(settings, worker_device(settings, dask_worker))


def worker_device(settings: TrialSettings, dask_worker: Any = None) -> Any:
    """The torch device of this worker: one GPU per Dask worker on multi-GPU machines."""
    import torch

    from greenshift.train import resolve_device

    device = resolve_device(settings.device)
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        index = settings.worker_index if settings.worker_index is not None else _worker_index(dask_worker)
        if index is not None:
            device = torch.device("cuda", index % torch.cuda.device_count())
    return device


def _worker_index(dask_worker: Any = None) -> int | None:
    """The number at the end of the Dask worker's name (LocalCluster: 0, 1, ...), or None."""
    if dask_worker is None:
        try:
            from distributed import get_worker

            dask_worker = get_worker()
        except (ImportError, ValueError):
            return None
    try:
        return int(str(dask_worker.name).rsplit("-", 1)[-1])
    except ValueError:
        return None


@functools.cache
def _host_thread_share() -> int | None:
    """In a worker of an existing Dask cluster: this host's cores split between its Dask workers.

    Dask starts workers with OMP_NUM_THREADS=1, so without this a trial would use one core of a
    many-core host. Asked once per worker process; None outside Dask.
    """
    try:
        from distributed import get_client, get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    workers = get_client().scheduler_info()["workers"].values()
    on_this_host = sum(1 for info in workers if info.get("host") == worker.ip) or 1
    return max(1, (os.cpu_count() or 1) // on_this_host)


def run_trial(
    settings: TrialSettings, values: Mapping[str, Any], budget_epochs: int, seed: int, config_key: str
) -> dict[str, Any]:
    """Train ``values`` for ``budget_epochs`` and evaluate the objectives; never raises.

    Returns a plain dict: ``status``, ``objectives`` (only for ok), ``metrics``, ``error``,
    ``checkpoint`` (relative to the run directory), ``duration_s``, ``worker``, ``epochs_trained``.
    ``epochs_trained`` is what the trial spent whatever its outcome: the epochs it completed, plus the
    one it was inside when it crashed or diverged (``--max-total-epochs`` counts it).
    """
    start = time.time()
    outcome: dict[str, Any] = {
        "status": CRASHED,
        "objectives": {},
        "metrics": {},
        "error": None,
        "checkpoint": None,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "epochs_trained": 0,
    }
    epochs = _Epochs()
    try:
        with _torch_threads(settings.threads_per_worker or _host_thread_share()):
            _train_and_evaluate(settings, values, budget_epochs, seed, config_key, outcome, start, epochs)
    except TrialTimeout as exc:
        outcome.update(status=TIMEOUT, error=str(exc))
    except GreenshiftError as exc:
        outcome.update(status=CRASHED, error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a crash in one trial is recorded; the search goes on
        text = str(exc)
        if "out of memory" in text.lower():
            text = f"out of memory: {text.splitlines()[0] if text else ''}"
        outcome.update(status=CRASHED, error=f"{type(exc).__name__}: {text}\n{traceback.format_exc(limit=8)}")
    outcome["epochs_trained"] = epochs.spent
    outcome["duration_s"] = time.time() - start
    if outcome["status"] != OK:
        outcome["objectives"] = {}
    return outcome


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch threads (None: unchanged), then restore the caller's count.

    An in-process trial must not leave its thread count behind in the user's process.
    """
    import torch

    previous = torch.get_num_threads()
    if threads and threads != previous:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def _train_and_evaluate(
    settings: TrialSettings,
    values: Mapping[str, Any],
    budget_epochs: int,
    seed: int,
    config_key: str,
    outcome: dict[str, Any],
    start: float,
    epochs: _Epochs,
) -> None:
    from greenshift.objectives import evaluate
    from greenshift.search.space import config_from_values
    from greenshift.train import train

    config = config_from_values(values, settings.fixed_extra)
    device = worker_device(settings)
    dataset = _dataset_for(settings, device)

    resume_from = None
    checkpoint_path = None
    schedule_epochs = budget_epochs
    already_trained = 0
    if settings.continue_promoted:
        # The schedule spans the maximum budget so that b epochs are exactly the first b of the long run.
        schedule_epochs = settings.max_epochs
        checkpoint_path = RunLayout(settings.run_dir).continuation_checkpoint(config_key, seed)
        already_trained = _checkpoint_epoch(checkpoint_path)
        if 0 < already_trained < budget_epochs:
            resume_from = checkpoint_path
        else:
            already_trained = 0

    def check_deadline(epoch: int, _metrics: dict) -> None:
        epochs.finished_epoch(epoch - already_trained)
        if settings.trial_timeout_s is not None and time.time() - start > settings.trial_timeout_s:
            raise TrialTimeout(
                f"trial ran past --trial-timeout {settings.trial_timeout_s:g} s after epoch {epoch}"
            )
        epochs.next_epoch_begins()

    epochs.plan(budget_epochs - already_trained)

    result = train(
        config,
        dataset,
        budget_epochs,
        device=device,
        seed=seed,
        backbone=settings.backbone,
        schedule_epochs=schedule_epochs,
        checkpoint_path=checkpoint_path,
        resume_from=resume_from,
        progress=check_deadline,
    )
    epochs.done = result.epochs_completed - already_trained
    # A diverged run stopped inside the epoch after its last completed one: that epoch was spent.
    epochs.inside_epoch = result.status != "ok" and epochs.done < budget_epochs - already_trained
    outcome["metrics"].update(
        {
            "val_accuracy_per_epoch": list(result.val_accuracy),
            "val_cross_entropy_per_epoch": list(result.val_cross_entropy),
            "train_time_s": result.train_time_s,
            "shift_depth_resolved": result.shift_depth,
            "continued_from_epoch": already_trained,
            "device": str(device),
        }
    )
    if result.status != "ok":
        outcome.update(status=DIVERGED, error=result.message or "training diverged (non-finite loss)")
        return
    evaluation = evaluate(
        result.model,
        dataset,
        list(settings.objectives),
        device=device,
        energy_table=settings.energy_table,
        meter=settings.meter,
        measure_options={"country_iso_code": settings.country_iso_code},
    )
    objectives = {name: float(evaluation[name]) for name in settings.objectives}
    bad = [name for name, value in objectives.items() if not math.isfinite(value)]
    outcome["metrics"].update(_plain_details(evaluation))
    if bad:
        outcome.update(status=CRASHED, error=f"objective(s) {', '.join(bad)} not finite")
        return
    outcome.update(status=OK, objectives=objectives)
    if settings.keep_models != "none" and (
        settings.keep_models == "all" or budget_epochs >= settings.max_epochs
    ):
        path = RunLayout(settings.run_dir).model_checkpoint(config_key, seed, budget_epochs)
        save_trial_model(
            path,
            result.model,
            config=config.to_dict(),
            backbone=settings.backbone,
            dataset=settings.dataset,
            budget_epochs=budget_epochs,
            seed=seed,
            objectives=objectives,
        )
        outcome["checkpoint"] = str(path.relative_to(settings.run_dir))


def _checkpoint_epoch(path: Path) -> int:
    """Epochs already trained in a continuation checkpoint (0 if there is none or it is unreadable)."""
    from greenshift.train import load_checkpoint

    if not path.is_file():
        return 0
    try:
        return int(load_checkpoint(path).get("epoch", 0))
    except GreenshiftError:  # a checkpoint cut short by a kill is simply not used
        return 0


def _plain_details(evaluation: Any) -> dict[str, Any]:
    """Evaluation details as JSON-friendly values (the store keeps them as metrics)."""
    details = getattr(evaluation, "details", {}) or {}
    plain: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            plain[key] = value
        elif isinstance(value, (list, tuple)):
            plain[key] = [v if isinstance(v, (str, int, float, bool)) else str(v) for v in value]
        elif isinstance(value, Mapping):
            plain[key] = {
                str(k): v if isinstance(v, (str, int, float, bool)) else str(v) for k, v in value.items()
            }
        else:
            plain[key] = str(value)
    return plain
