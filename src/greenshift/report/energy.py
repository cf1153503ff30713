"""Modelled next to measured energy for the Pareto front and the default, and how far to trust the model.

:func:`energy_crosscheck` gives one :class:`CrosscheckRow` per configuration on the front (plus the
default configuration when it is not on the front):

* **Modelled** (``energy_model_j``): the run's value when the run optimised it, else computed from the
  configuration alone: the backbone is built with the configuration's shift conversion and costed by
  the energy model on one input of the data set's shape (no training needed: the model counts
  operations, not weights).
* **Measured** (``energy_measured_j``): the run's value when the run measured it (and the meter did not
  fall back to the model), else *re-measured* now from the trial's kept model with the measurement
  protocol of :mod:`greenshift.objectives.measure` on the validation split. Without a kept model the row
  says so; ``--keep-models pareto`` (the default) keeps the models of the front and the default.

Re-measurements are cached in ``<run_dir>/report/energy_crosscheck.json``, keyed by trial id, the kept
model's path, size and modification time, the meter, the device and the measurement options, so a
second report reuses them instead of measuring again.

:func:`trust_statistics` judges the model against the meter where at least three rows have both
values: the Spearman rank correlation, and the median relative error after fitting one scale factor
``k`` (measured ≈ k x modelled; ``log k`` is the mean of ``log measured - log modelled``, the least-squares
fit in log space). The model counts arithmetic and memory reads of shift hardware at 45 nm; today's
CPUs and GPUs run simulated shifts as float multiplications, so disagreement is expected
(docs/energy.md).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from greenshift.errors import ConfigError, GreenshiftError
from greenshift.fileio import atomic_write_bytes
from greenshift.objectives import MeasureOptions
from greenshift.objectives.meters import EnergyMeter
from greenshift.report.data import Entry, ReportData
from greenshift.store.records import TrialRecord, TrialStatus

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Where the cache lives, relative to the run directory.
CACHE_PATH = Path("report") / "energy_crosscheck.json"
CACHE_VERSION = 1
#: Fewest rows with both values for which the model is judged.
MIN_PAIRS = 3
NO_KEPT_MODEL = "no kept model (run with --keep-models pareto)"
MODELLED = "energy_model_j"
MEASURED = "energy_measured_j"
SIMULATED_SHIFTS = (
    "On today's CPUs and GPUs shift layers are simulated: they still run float multiplications with "
    "power-of-two weights, so the measured energy does not fall when layers are shifted while the "
    "modelled energy does. Disagreement between the two is therefore expected: the model estimates what "
    "shift hardware would spend, the meter what this machine spends (see docs/energy.md)."
)
# Relative tolerance when deciding that a trial ran at the full budget (as in greenshift.report.data).
_BUDGET_RTOL = 1e-9


@dataclass(frozen=True)
class CrosscheckRow:
    """Modelled and measured energy per image of one configuration (``None`` where unknown, see ``note``).

    ``model_source`` is ``"run"`` or ``"computed from the configuration"``; ``measured_source`` is
    ``"run"``, ``"re-measured"`` or ``"re-measured (cached)"``. ``measured_spread`` holds the protocol's
    ``std_j`` (between readings), ``rse``, ``n`` (readings) and ``converged``.
    """

    trial_id: int
    is_default: bool
    on_front: bool
    energy_model_j: float | None
    model_source: str | None
    energy_measured_j: float | None
    measured_source: str | None
    meter: str | None
    measured_method: str | None
    measured_spread: dict[str, Any] | None
    checkpoint: str | None
    note: str | None

    @property
    def paired(self) -> bool:
        """Whether both energies are known positive numbers (only such rows judge the model)."""
        return all(
            v is not None and math.isfinite(v) and v > 0
            for v in (self.energy_model_j, self.energy_measured_j)
        )

    def to_json(self) -> dict[str, Any]:
        """The row as plain JSON values."""
        return asdict(self)


@dataclass(frozen=True)
class TrustStats:
    """How well the modelled energy predicts the measured one (``None`` where it cannot be judged)."""

    n: int
    spearman_rho: float | None
    spearman_p: float | None
    scale_k: float | None
    median_relative_error: float | None
    statement: str

    def to_json(self) -> dict[str, Any]:
        """The statistics as plain JSON values."""
        return asdict(self)


@dataclass(frozen=True)
class EnergyCrosscheck:
    """The rows (front first, then the default when it is not on the front) and the verdict on the model.

    ``measured_now`` and ``reused`` count the rows re-measured in this call and taken from the cache.
    """

    rows: tuple[CrosscheckRow, ...]
    trust: TrustStats
    device: str | None
    measured_now: int = 0
    reused: int = 0
    caveat: str = SIMULATED_SHIFTS

    def to_json(self) -> dict[str, Any]:
        """The crosscheck as plain JSON values (the ``energy_crosscheck`` key of ``report.json``)."""
        return {
            "rows": [row.to_json() for row in self.rows],
            "trust": self.trust.to_json(),
            "device": self.device,
            "measured_now": self.measured_now,
            "reused": self.reused,
            "caveat": self.caveat,
        }


# ------------------------------------------------------------------------------------------- the maths


def trust_statistics(
    modelled: Sequence[float], measured: Sequence[float], *, meter: str | None = None
) -> TrustStats:
    """Spearman ρ, scale factor ``k`` and median relative error of ``measured`` against ``k x modelled``.

    Pairs where either value is not a positive finite number are ignored; with fewer than
    :data:`MIN_PAIRS` left nothing is judged and the statement says so. ``meter`` names the meter(s)
    in the statement.
    """
    if len(modelled) != len(measured):
        raise ConfigError(f"{len(modelled)} modelled but {len(measured)} measured values")
    x = np.asarray(modelled, dtype=float).reshape(-1)
    y = np.asarray(measured, dtype=float).reshape(-1)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n < MIN_PAIRS:
        statement = (
            f"Cannot be judged: only {n} configuration{'' if n == 1 else 's'} of the front and the "
            f"default {'has' if n == 1 else 'have'} both a modelled and a measured energy; at least "
            f"{MIN_PAIRS} are needed."
        )
        return TrustStats(n, None, None, None, None, statement)
    # Least squares of log y = log k + log x with slope fixed at 1: log k is the mean log ratio.
    log_k = float(np.mean(np.log(y) - np.log(x)))
    k = math.exp(log_k)
    median_error = float(np.median(np.abs(k * x - y) / y))
    rho = p_value = None
    if np.ptp(x) > 0 and np.ptp(y) > 0:
        from scipy.stats import spearmanr

        result = spearmanr(x, y)
        rho, p_value = float(result.statistic), float(result.pvalue)
        if not math.isfinite(rho):
            rho = p_value = None
        elif not math.isfinite(p_value):
            p_value = None
    return TrustStats(n, rho, p_value, k, median_error, _statement(n, rho, k, median_error, meter))


def _statement(n: int, rho: float | None, k: float, median_error: float, meter: str | None) -> str:
    """Plain words for the statistics: what the ranking and the scaled error mean for this run."""
    by = f"the {meter} meter" if meter else "the meter"
    if rho is None:
        ranking = (
            f"The ranking cannot be compared with {by}: all {n} modelled or all measured values are "
            "equal (e.g. configurations that differ only in training hyperparameters)."
        )
    else:
        if rho >= 0.8:
            verdict = "in nearly the same order as the meter"
        elif rho >= 0.4:
            verdict = "in roughly the same order as the meter"
        elif rho > -0.4:
            verdict = "in an order unrelated to the meter's"
        else:
            verdict = "in roughly the opposite order to the meter's"
        ranking = (
            f"Spearman ρ = {rho:.2f} between modelled and measured energy ({by}) over these {n} "
            f"configurations: the model ranks them {verdict} (ρ = 1: same order, 0: unrelated, "
            "−1: reversed)."
        )
        if n < 6:
            ranking += f" With only {n} configurations ρ is a rough indication."
    scale = (
        f"Up to one constant factor k = {k:.3g} (measured ≈ k × modelled, fitted in log space), its "
        f"median error is {100 * median_error:.0f} %."
    )
    hardware = (
        "Disagreement is expected: on CPUs and GPUs today shifts run as float multiplications, so the "
        "meter does not see the savings the model counts for shift hardware."
    )
    return " ".join((ranking, scale, hardware))


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

    def modelled_energy(self, entry: Entry) -> float:
        """Modelled energy per image of ``entry``'s configuration, from a freshly built model."""
        from greenshift.objectives import profile_model
        from greenshift.search.space import config_from_values
        from greenshift.train import build_model

        config = config_from_values(entry.config, self.identity.get("fixed") or {})
        data = self.dataset()
        model = build_model(config, self.backbone, data.num_classes, data.in_channels)
        return profile_model(model, self.input_shape(), energy_table=self.energy_table).total_energy_j

    def kept_model(self, path: Path) -> nn.Module:
        """The trained model saved by the search at ``path`` (see ``greenshift.search.trial``)."""
        from greenshift.search.trial import load_trial_model

        data = self.dataset()
        return load_trial_model(
            path, num_classes=data.num_classes, in_channels=data.in_channels, backbone=self.backbone
        )


def _at_max(record: TrialRecord, max_budget: float) -> bool:
    return float(record.budget_epochs) >= max_budget * (1 - _BUDGET_RTOL)


def _targets(report: ReportData) -> list[tuple[Entry, bool]]:
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


def _run_measurement(group: Sequence[TrialRecord], entry: Entry) -> tuple[dict[str, Any] | None, str | None]:
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
        self.path = run_dir / CACHE_PATH
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
        data = {"version": CACHE_VERSION, "measurements": self.measurements, "latest": crosscheck.to_json()}
        # A read-only run directory only costs the next report a re-measurement.
        with contextlib.suppress(OSError):
            atomic_write_bytes(self.path, json.dumps(data, indent=1, sort_keys=True).encode())


def energy_crosscheck(
    run_dir: str | Path,
    report_data: ReportData,
    *,
    meter: str | EnergyMeter = "auto",
    measure_options: MeasureOptions | Mapping[str, Any] | None = None,
    remeasure: bool = True,
    device: str | None = None,
    energy_table: Any = None,
    progress: Callable[[str], None] | None = None,
) -> EnergyCrosscheck:
    """Modelled next to measured energy for the front and the default of the run in ``run_dir``.

    ``report_data`` is the run's report (:func:`~greenshift.report.load_report`). Missing measured
    values are re-measured from kept models with ``meter`` (a name for
    :func:`~greenshift.objectives.select_meter` or an :class:`EnergyMeter`) and ``measure_options`` on
    ``device`` (default: the run's device when this machine has it, else the CPU), unless a valid cached
    re-measurement exists; ``remeasure=False`` uses only the run's values and the cache. Modelled values
    are the run's, or computed with the run's table where missing; an ``energy_table`` given here
    (e.g. from ``greenshift calibrate``) computes all of them with that table. ``progress`` receives one line per
    re-measurement. Per-row problems (no kept model, a failed measurement) become the row's ``note``;
    an unknown meter name or bad options raise :class:`ConfigError`.
    """
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
                and _at_max(r, report_data.max_budget)
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
                    "meter": _meter_key(meter),
                    "device": str(context.device),
                    "options": asdict(options),
                }
                cached = cache.get(entry.trial_id, key)
                if cached is not None:
                    measured, measured_source = cached, "re-measured (cached)"
                    reused += 1
                elif not remeasure:
                    notes.append("not measured yet (greenshift report --remeasure measures it)")
                else:
                    if progress is not None:
                        progress(
                            f"measuring the energy of trial {kept.trial_id} ({position}/{len(targets)}) "
                            f"with meter {_meter_key(meter).removeprefix('instance:')}"
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
