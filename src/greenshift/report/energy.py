"""Modelled next to measured energy for the Pareto front and the default, and how far to trust the model.

:func:`energy_crosscheck` gives one :class:`CrosscheckRow` per configuration on the front (plus the
default configuration when it is not on the front) and measures nothing; :func:`remeasure` is the
explicit step that measures on this machine what is missing and caches it (``report --remeasure``);
:func:`add_crosscheck` attaches either to a report (``load_report`` itself only reads):

* **Modelled** (``energy_model_j``): the run's value when the run optimised it, else computed from the
  configuration alone: the backbone is built with the configuration's shift conversion and costed by
  the energy model on one input of the data set's shape (no training needed: the model counts
  operations, not weights).
* **Measured** (``energy_measured_j``): the run's value when the run measured it (and the meter did not
  fall back to the model), else *re-measured* by :func:`remeasure` from the trial's kept model with the measurement
  protocol of :mod:`greenshift.objectives.measure` on the validation split. Without a kept model the row
  says so; ``--keep-models pareto`` (the default) keeps the models of the front and the default.

Re-measurements are cached in ``<run_dir>/report/energy_crosscheck.json``, keyed by trial id, the kept
model's path, size and modification time, the meter, the device and the measurement options, so a
second report reuses them instead of measuring again.

The data types and :func:`trust_statistics` (how far to trust the model) live in
:mod:`greenshift.report.crosscheck`.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from greenshift.errors import ConfigError, GreenshiftError
from greenshift.fileio import atomic_write_bytes, jsonable
from greenshift.objectives import MeasureOptions
from greenshift.objectives.meters import EnergyMeter
from greenshift.report.crosscheck import (
    MIN_PAIRS,
    CrosscheckRow,
    EnergyCrosscheck,
    trust_statistics,
)
from greenshift.report.data import FrontEntry, ReportData
from greenshift.store.front import at_full_budget
from greenshift.store.layout import CROSSCHECK_CACHE, RunLayout
from greenshift.store.records import TrialRecord, TrialStatus

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Where the cache lives, relative to the run directory (named by the store's layout).
CACHE_PATH = CROSSCHECK_CACHE
CACHE_VERSION = 1
NO_KEPT_MODEL = "no kept model (run with --keep-models pareto)"
MODELLED = "energy_model_j"
MEASURED = "energy_measured_j"


# --------------------------------------------------------------------------------------------- the run


class _RunContext:
    """What re-measuring and re-modelling need from the run, loaded lazily and once."""

    def __init__(
        self,
        identity: Mapping[str, Any],
        settings: Mapping[str, Any],
        device: str | None,
        energy_table: Any,
    ) -> None:
        self.identity = identity
        self.settings = settings
        self.dataset_name = str(identity.get("dataset") or settings.get("dataset") or "")
        self.backbone = str(identity.get("backbone") or settings.get("backbone") or "")
        self.requested_device = device
        self.energy_table = energy_table if energy_table is not None else settings.get("energy_table")
        self._dataset: Any = None
        self._dataset_error: str | None = None
        self._device: torch.device | None = None
        self.device_note: str | None = None

    @property
    def device(self) -> torch.device:
        """The measuring device: the one asked for, else the run's if it exists here, else the CPU."""
        if self._device is None:
            from greenshift.train import resolve_device

            if self.requested_device is not None:
                self._device = resolve_device(self.requested_device)
            else:
                wanted = str(self.settings.get("device") or "auto")
                try:
                    self._device = resolve_device(wanted)
                except ConfigError:
                    # A run made on a GPU machine may be reported on a laptop: measure on the CPU.
                    self._device = resolve_device("cpu")
                    self.device_note = f"the run used device {wanted}, which this machine lacks"
        return self._device

    @property
    def resolved_device(self) -> str | None:
        """The measuring device if anything needed it, else ``None``."""
        return None if self._device is None else str(self._device)

    def dataset(self) -> Any:
        """The run's data set on the measuring device; a :class:`GreenshiftError` says why not."""
        if self._dataset is None and self._dataset_error is None:
            from greenshift.data import load_dataset

            try:
                data = load_dataset(
                    self.dataset_name,
                    data_dir=self.settings.get("data_dir"),
                    image_size=self.identity.get("image_size"),
                    split_seed=int(self.identity.get("split_seed") or 0),
                )
                self._dataset = data.to(self.device)
            except GreenshiftError as exc:
                self._dataset_error = f"data set {self.dataset_name!r} could not be loaded: {exc}"
        if self._dataset_error is not None:
            raise GreenshiftError(self._dataset_error)
        return self._dataset

    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input image (channels, height, width)."""
        data = self.dataset()
        return (data.in_channels, data.image_size, data.image_size)

    def modelled_energy(self, entry: FrontEntry) -> float:
        """Modelled energy per image of ``entry``'s configuration, from a freshly built model."""
        from greenshift.config import config_from_values
        from greenshift.objectives import profile_model
        from greenshift.train import build_model

        config = config_from_values(entry.config, self.identity.get("fixed") or {})
        data = self.dataset()
        model = build_model(config, self.backbone, data.num_classes, data.in_channels)
        return profile_model(model, self.input_shape(), energy_table=self.energy_table).total_energy_j

    def kept_model(self, path: Path) -> nn.Module:
        """The trained model saved by the search at ``path`` (:func:`greenshift.store.load_trial_model`)."""
        from greenshift.store.kept_models import load_trial_model

        data = self.dataset()
        return load_trial_model(
            path, num_classes=data.num_classes, in_channels=data.in_channels, backbone=self.backbone
        )


def _targets(report: ReportData) -> list[tuple[FrontEntry, bool]]:
    """The front in its order, then the default when it is not on the front: ``(entry, on_front)``."""
    targets = [(entry, True) for entry in report.front]
    front_keys = {entry.config_key for entry in report.front}
    if report.default is not None and report.default.config_key not in front_keys:
        targets.append((report.default, False))
    return targets


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _run_measurement(
    group: Sequence[TrialRecord], entry: FrontEntry
) -> tuple[dict[str, Any] | None, str | None]:
    """The run's own measured value of ``entry`` (with method and spread), or ``None`` and why not."""
    fallbacks = [
        r.metrics.get("energy_measured_fallback") for r in group if r.metrics.get("energy_measured_fallback")
    ]
    if fallbacks:
        return None, f"the run's measurement fell back to the modelled energy ({fallbacks[0]})"
    value = _finite(entry.objectives.get(MEASURED))
    if value is None:
        return None, None
    details = next(
        (r.metrics.get(MEASURED) for r in group if isinstance(r.metrics.get(MEASURED), Mapping)), {}
    )
    details = details or {}
    spread = {
        "std_j": _finite(details.get("std_j_per_image")),
        "rse": _finite(details.get("rse")),
        "n": int(_finite(details.get("n")) or 0) or None,
        "converged": details.get("converged"),
    }
    if len(group) > 1:
        seeds = [_finite(r.objectives.get(MEASURED)) for r in group]
        known = [s for s in seeds if s is not None]
        if len(known) > 1:
            # Several seeds: their spread says more than one protocol run's.
            spread["std_between_seeds_j"] = float(np.std(known, ddof=1))
    return {
        MEASURED: value,
        "meter": details.get("meter"),
        "measured_method": details.get("method"),
        "measured_spread": spread,
    }, None


def _meter_key(meter: str | EnergyMeter) -> str:
    return meter if isinstance(meter, str) else f"instance:{getattr(meter, 'name', type(meter).__name__)}"


class _Cache:
    """The re-measurements of earlier reports, by trial id, each with the key it is valid for."""

    def __init__(self, run_dir: Path) -> None:
        self.path = RunLayout(run_dir).crosscheck_cache
        self.measurements: dict[str, Any] = {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # no cache yet, or a damaged one: measure again
        if isinstance(data, dict) and data.get("version") == CACHE_VERSION:
            found = data.get("measurements")
            self.measurements = dict(found) if isinstance(found, dict) else {}

    def get(self, trial_id: int, key: Mapping[str, Any]) -> dict[str, Any] | None:
        entry = self.measurements.get(str(trial_id))
        if isinstance(entry, dict) and entry.get("key") == dict(key):
            return entry.get("value")
        return None

    def put(self, trial_id: int, key: Mapping[str, Any], value: Mapping[str, Any]) -> None:
        self.measurements[str(trial_id)] = {"key": dict(key), "value": dict(value)}

    def save(self, crosscheck: EnergyCrosscheck) -> None:
        """Write the cache (and the latest crosscheck, for people reading the file) atomically."""
        data = jsonable(
            {"version": CACHE_VERSION, "measurements": self.measurements, "latest": crosscheck.to_json()}
        )
        # A read-only run directory only costs the next report a re-measurement.
        with contextlib.suppress(OSError):
            atomic_write_bytes(self.path, json.dumps(data, indent=1, sort_keys=True).encode())


def energy_crosscheck(
    run_dir: str | Path,
    report_data: ReportData,
    *,
    meter: str | EnergyMeter = "auto",
    measure_options: MeasureOptions | Mapping[str, Any] | None = None,
    device: str | None = None,
    energy_table: Any = None,
) -> EnergyCrosscheck:
    """Modelled next to measured energy for the front and the default of the run in ``run_dir``; measures nothing.

    ``report_data`` is the run's report (:func:`~greenshift.report.load_report`). Measured values are
    the run's, else an earlier :func:`remeasure`'s from the cache when it is valid for ``meter``,
    ``measure_options`` and ``device`` (the same arguments :func:`remeasure` takes); a row without one
    says so in its ``note``. Modelled values are the run's, or computed from the configuration with the
    run's table where missing; an ``energy_table`` given here (e.g. from ``greenshift calibrate``)
    computes all of them with that table. An unknown meter name or bad options raise
    :class:`ConfigError`.
    """
    return _crosscheck(run_dir, report_data, meter, measure_options, device, energy_table, measure=False)


def remeasure(
    run_dir: str | Path,
    report_data: ReportData,
    *,
    meter: str | EnergyMeter = "auto",
    measure_options: MeasureOptions | Mapping[str, Any] | None = None,
    device: str | None = None,
    energy_table: Any = None,
    progress: Callable[[str], None] | None = None,
) -> EnergyCrosscheck:
    """Measure on this machine the energy of every front and default model that has none yet; cache it.

    The explicit hardware step behind ``greenshift report --remeasure`` (seconds to a minute per model).
    Like :func:`energy_crosscheck`, but a missing measured value (neither the run's nor a valid cached
    one) is measured from the trial's kept model with ``meter`` (a name for
    :func:`~greenshift.objectives.select_meter` or an :class:`EnergyMeter`) and ``measure_options`` on
    ``device`` (default: the run's device when this machine has it, else the CPU), and the measurements
    are cached in the run directory (:data:`CACHE_PATH`). ``progress`` receives one line per
    measurement. Per-row problems (no kept model, a failed measurement) become the row's ``note``.
    """
    options = (meter, measure_options, device, energy_table)
    return _crosscheck(run_dir, report_data, *options, measure=True, progress=progress)


# add_crosscheck's own argument is called ``remeasure`` (the CLI's flag); this names the function.
_measure_step = remeasure


def add_crosscheck(
    run_dir: str | Path,
    report_data: ReportData,
    *,
    remeasure: bool = False,
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> ReportData:
    """``report_data`` with its ``crosscheck``: from :func:`remeasure` when ``remeasure`` is true, else from
    :func:`energy_crosscheck` (which measures nothing). ``options`` are their other keyword arguments;
    ``progress`` is used only when measuring.
    """
    if remeasure:
        check = _measure_step(run_dir, report_data, progress=progress, **options)
    else:
        check = energy_crosscheck(run_dir, report_data, **options)
    return replace(report_data, crosscheck=check)


def _crosscheck(
    run_dir: str | Path,
    report_data: ReportData,
    meter: str | EnergyMeter,
    measure_options: MeasureOptions | Mapping[str, Any] | None,
    device: str | None,
    energy_table: Any,
    *,
    measure: bool,
    progress: Callable[[str], None] | None = None,
) -> EnergyCrosscheck:
    """The crosscheck of :func:`energy_crosscheck`; with ``measure``, :func:`remeasure`'s."""
    from greenshift.objectives.meters import METER_NAMES
    from greenshift.store import RunStore

    run_dir = Path(run_dir)
    options = MeasureOptions.from_mapping(measure_options)
    if isinstance(meter, str) and meter not in METER_NAMES:
        raise ConfigError(f"unknown energy meter {meter!r}; valid: {', '.join(METER_NAMES)}")
    with RunStore.open(run_dir) as store:
        identity = dict(store.identity)
        settings = dict((store.info or {}).get("settings") or {})
        records = store.trials()
        # Every kept model's path is checked once here, while the store is open: none may lead out of the run.
        kept_files = {r.trial_id: store.checkpoint_file(r) for r in records if r.checkpoint}
    context = _RunContext(identity, settings, device, energy_table)
    meter_key = _meter_key(meter)
    if meter == "auto":
        # Keyed by the meter "auto" picks here, so that `--remeasure --meter codecarbon` is reused by a
        # later plain `report` (whose meter is "auto") on a machine where auto means CodeCarbon.
        from greenshift.objectives.meters import choose_meter

        meter_key = choose_meter("auto", context.device)[0].name
    cache = _Cache(run_dir)
    names = set(report_data.objective_names)
    targets = _targets(report_data)
    rows: list[CrosscheckRow] = []
    measured_now = reused = 0
    for position, (entry, on_front) in enumerate(targets, start=1):
        group = sorted(
            (
                r
                for r in records
                if str(r.config_key) == entry.config_key
                and TrialStatus(r.status) is TrialStatus.OK
                and at_full_budget(r.budget_epochs, report_data.max_budget)
            ),
            key=lambda r: r.trial_id,
        )
        notes: list[str] = []

        model_value: float | None = None
        model_source: str | None = None
        # A table passed in (e.g. a calibrated one) replaces the run's modelled values.
        if energy_table is None and MODELLED in names and _finite(entry.objectives.get(MODELLED)) is not None:
            model_value, model_source = float(entry.objectives[MODELLED]), "run"
        else:
            try:
                model_value = context.modelled_energy(entry)
                model_source = "computed from the configuration"
            except GreenshiftError as exc:
                notes.append(f"modelled energy not computed: {exc}")

        measured: dict[str, Any] | None = None
        measured_source: str | None = None
        kept = next((r for r in group if r.checkpoint), None)
        checkpoint = kept.checkpoint if kept is not None else None
        if MEASURED in names:
            measured, why = _run_measurement(group, entry)
            if measured is not None:
                measured_source = "run"
            elif why:
                notes.append(why)
        if measured is None:
            if kept is None or checkpoint is None:
                notes.append(NO_KEPT_MODEL)
            elif not kept_files[kept.trial_id].is_file():
                notes.append(f"kept model {checkpoint} is missing (deleted after the search?)")
            else:
                path = kept_files[kept.trial_id]
                stat = path.stat()
                key = {
                    "trial_id": int(kept.trial_id),
                    "checkpoint": checkpoint,
                    "mtime_ns": stat.st_mtime_ns,
                    "size": stat.st_size,
                    "meter": meter_key,
                    "device": str(context.device),
                    "options": asdict(options),
                }
                cached = cache.get(entry.trial_id, key)
                if cached is not None:
                    measured, measured_source = cached, "re-measured (cached)"
                    reused += 1
                elif not measure:
                    notes.append("not measured yet (greenshift report --remeasure measures it)")
                else:
                    if progress is not None:
                        progress(
                            f"measuring the energy of trial {kept.trial_id} ({position}/{len(targets)}) "
                            f"with meter {meter_key.removeprefix('instance:')}"
                        )
                    try:
                        measured, failure = _remeasure(context, path, meter, options)
                    except GreenshiftError as exc:
                        measured, failure = None, str(exc)
                    if measured is None:
                        notes.append(f"measurement failed: {failure}")
                    else:
                        measured_source = "re-measured"
                        measured_now += 1
                        cache.put(entry.trial_id, key, measured)
                if measured is not None and kept.trial_id != entry.trial_id:
                    notes.append(f"measured on the kept model of trial {kept.trial_id} (seed {kept.seed})")
        if measured_source in ("re-measured", "re-measured (cached)") and context.device_note:
            notes.append(f"measured on {context.device}: {context.device_note}")
        rows.append(
            CrosscheckRow(
                trial_id=int(entry.trial_id),
                is_default=bool(entry.is_default),
                on_front=on_front,
                energy_model_j=model_value,
                model_source=model_source,
                energy_measured_j=None if measured is None else _finite(measured.get(MEASURED)),
                measured_source=measured_source,
                meter=None if measured is None else measured.get("meter"),
                measured_method=None if measured is None else measured.get("measured_method"),
                measured_spread=None if measured is None else measured.get("measured_spread"),
                checkpoint=checkpoint,
                note="; ".join(notes) or None,
            )
        )
    paired = [row for row in rows if row.paired]
    meters = sorted({str(row.meter) for row in paired if row.meter})
    trust = trust_statistics(
        [row.energy_model_j or 0.0 for row in paired],
        [row.energy_measured_j or 0.0 for row in paired],
        meter=" / ".join(meters) or None,
    )
    if trust.n >= MIN_PAIRS and any("estimat" in str(row.measured_method or "").lower() for row in paired):
        # CodeCarbon without power counters reports TDP x load plus a RAM constant, not a measurement.
        trust = replace(
            trust,
            statement=trust.statement
            + " Some measured values are estimates (the meter had no power counters; see the methods"
            " below), which blurs the comparison further.",
        )
    result = EnergyCrosscheck(tuple(rows), trust, context.resolved_device, measured_now, reused)
    if measure:
        cache.save(result)
    return result


def _remeasure(
    context: _RunContext, path: Path, meter: str | EnergyMeter, options: MeasureOptions
) -> tuple[dict[str, Any] | None, str | None]:
    """Measure the kept model at ``path`` with the objectives' protocol: ``(value, None)`` or ``(None, why)``."""
    from greenshift.objectives import evaluate

    model = context.kept_model(path)
    result = evaluate(
        model, context.dataset(), [MEASURED], device=context.device, meter=meter, measure_options=options
    )
    details = result.details.get(MEASURED) or {}
    fallback = result.details.get("energy_measured_fallback")
    if fallback:
        return None, str(fallback)
    spread = {
        "std_j": _finite(details.get("std_j_per_image")),
        "rse": _finite(details.get("rse")),
        "n": details.get("n"),
        "converged": details.get("converged"),
        # How much of the reading the meter also reports at idle (CodeCarbon's RAM term, for example).
        "idle_share": _finite(details.get("idle_share")),
    }
    return {
        MEASURED: float(result[MEASURED]),
        "meter": details.get("meter"),
        "measured_method": details.get("method"),
        "measured_spread": spread,
    }, None
