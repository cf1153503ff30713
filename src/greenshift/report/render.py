"""Files of a report: figures (PNG), the front as CSV, a JSON summary and a self-contained HTML page.

matplotlib is imported inside the drawing functions with the non-interactive Agg backend, so importing
this module has no side effects and works without a display.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from greenshift.fileio import jsonable
from greenshift.report.data import (
    LOSS,
    BudgetStep,
    Comparison,
    FrontEntry,
    ReportData,
    compare_runs,
)
from greenshift.report.format import objective_label
from greenshift.store.layout import REPORT_FILES

if TYPE_CHECKING:
    from greenshift.report.crosscheck import EnergyCrosscheck

_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "h")


def _entry_json(entry: FrontEntry | None) -> dict[str, Any] | None:
    return None if entry is None else entry.to_dict()


def _headline_json(headline: Any) -> dict[str, Any] | None:
    if headline is None:
        return None
    return {
        "trial_id": headline.trial_id,
        "objective": headline.objective,
        "percent_change": headline.percent_change,
        "value": headline.value,
        "default_value": headline.default_value,
    }


def report_json(report: ReportData) -> dict[str, Any]:
    """The report as a JSON-ready dict (``json.dumps`` works; NaN/inf are ``null``).

    Keys: ``pareto``, ``default``, ``improvement``, ``hypervolume``, ``importance``,
    ``reference_point``, plus ``objectives``, ``max_budget``, ``knee``, ``lower_budget``,
    ``hypervolume_over_budget``, ``status_counts``, ``incomplete``, ``meta``, ``energy_crosscheck``
    (rows of modelled next to measured energy and the ``trust`` verdict; ``null`` when skipped),
    ``failures`` (failed trials grouped by error, with counts and trial ids) and
    ``baseline_outside_space`` (where the default configuration lies outside the searched space).
    Percent changes are negative when better than the default.
    """
    imp = report.improvement
    data = {
        "objectives": list(report.objective_names),
        "max_budget": report.max_budget,
        "pareto": [_entry_json(e) for e in report.front],
        "default": _entry_json(report.default),
        "knee": _entry_json(report.knee),
        "improvement": {
            "sign": "percent change vs the default; negative = better",
            "per_config": [
                {"trial_id": c.trial_id, "percent_change": c.percent_change} for c in imp.per_config
            ],
            "best_loss_reduction": _headline_json(imp.best_loss_reduction),
            "best_energy_reduction": {k: _headline_json(v) for k, v in imp.best_energy_reduction.items()},
        },
        "hypervolume": report.hypervolume,
        "reference_point": {
            "values": report.reference_point.values,
            "rule": report.reference_point.rule,
            "comparable": report.reference_point.comparable,
        },
        "hypervolume_over_budget": [
            {
                "trial_id": s.trial_id,
                "epochs": s.epochs,
                "wall_time_s": s.wall_time_s,
                "hypervolume": s.hypervolume,
            }
            for s in report.hypervolume_over_budget
        ],
        "importance": {
            "values": report.importance.values,
            "reliable": report.importance.reliable,
            "note": report.importance.note,
            "n_trials": report.importance.n_trials,
            "filled": report.importance.filled,
            "dropped": list(report.importance.dropped),
            "noise_floor": report.importance.noise_floor,
            "below_noise": {k: list(v) for k, v in report.importance.below_noise.items()},
            "excluded": {k: list(v) for k, v in report.importance.excluded.items()},
        },
        "lower_budget": [_entry_json(e) for e in report.lower_budget],
        "status_counts": report.status_counts,
        "incomplete": list(report.incomplete),
        "meta": report.meta,
        "energy_crosscheck": None if report.crosscheck is None else report.crosscheck.to_json(),
        "failures": [group.to_dict() for group in report.failures],
        "baseline_outside_space": report.baseline_outside,
    }
    return jsonable(data)


# ---------------------------------------------------------------------------------------------- figures


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _axes_names(names: Sequence[str]) -> tuple[str | None, str]:
    """(x, y) objectives of the 2-D Pareto plot: the first energy objective against the loss."""
    others = [n for n in names if n != LOSS]
    y = LOSS if LOSS in names else names[0]
    x = next((n for n in others if n != y), None)
    return x, y


def _maybe_log(ax: Any, values: Sequence[float], axis: str) -> None:
    """Use a log axis when positive values span more than two decades (energies often do)."""
    finite = [v for v in values if math.isfinite(v) and v > 0]
    if finite and len(finite) == len(values) and max(finite) / min(finite) > 100:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _title(report: ReportData) -> str:
    parts = [str(report.meta[k]) for k in ("dataset", "backbone", "optimizer") if report.meta.get(k)]
    return " / ".join(parts)


def plot_pareto(report: ReportData, path: Path) -> Path:
    """All OK trials coloured and shaped by budget, the front as a step line, default and knee labelled."""
    plt = _pyplot()
    x_name, y_name = _axes_names(report.objective_names)
    fig, ax = plt.subplots(figsize=(8.8, 5.2), dpi=120)

    def xy(entries: Sequence[FrontEntry]) -> tuple[list[float], list[float]]:
        xs = [float(e.objectives[x_name]) if x_name else float(e.trial_id) for e in entries]
        return xs, [float(e.objectives[y_name]) for e in entries]

    budgets = sorted({e.budget_epochs for e in report.trials})
    # Light to dark blue with growing budget: the full-budget trials stand out, low fidelities recede.
    cmap = plt.get_cmap("Blues")
    for i, budget in enumerate(budgets):
        xs, ys = xy([e for e in report.trials if e.budget_epochs == budget])
        share = i / max(1, len(budgets) - 1) if len(budgets) > 1 else 1.0
        ax.scatter(
            xs,
            ys,
            s=24,
            marker=_MARKERS[i % len(_MARKERS)],
            color=cmap(0.35 + 0.6 * share),
            alpha=0.5 + 0.4 * share,
            label=f"{budget:g} epoch{'' if budget == 1 else 's'}",
            zorder=2,
        )
    if report.front:
        fx, fy = xy(report.front)
        order = np.argsort(fx, kind="stable")
        fx, fy = [fx[i] for i in order], [fy[i] for i in order]
        if len(report.objective_names) == 2:
            ax.step(
                fx,
                fy,
                where="post",
                color="black",
                lw=1.4,
                zorder=3,
                label=f"Pareto front ({report.max_budget:g} epochs)",
            )
        ax.scatter(
            fx,
            fy,
            s=46,
            facecolors="none",
            edgecolors="black",
            lw=1.2,
            zorder=4,
            label=None
            if len(report.objective_names) == 2
            else f"Pareto front ({report.max_budget:g} epochs)",
        )
    for entry, label, style in (
        (report.default, "default", {"marker": "*", "s": 190, "color": "tab:red"}),
        (report.knee, "knee", {"marker": "D", "s": 70, "color": "tab:orange"}),
    ):
        if entry is None:
            continue
        (px,), (py,) = xy([entry])
        ax.scatter([px], [py], edgecolors="black", lw=0.8, zorder=5, label=label, **style)
        ax.annotate(label, (px, py), xytext=(8, 8), textcoords="offset points", fontsize=9, weight="bold")
    all_x, _ = xy(report.trials)
    if all_x and x_name:
        _maybe_log(ax, all_x, "x")
    ax.set_xlabel(objective_label(x_name) if x_name else "trial id")
    ax.set_ylabel(objective_label(y_name))
    extra = " (projection: front over all objectives)" if len(report.objective_names) > 2 else ""
    ax.set_title(" — ".join(filter(None, ["Pareto front", _title(report)])) + extra, fontsize=10)
    ax.grid(True, alpha=0.3)
    if report.trials:
        ax.legend(
            fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0
        )  # never hides a point
    else:
        ax.text(0.5, 0.5, "no completed trials", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _time_scale(seconds: Sequence[float]) -> tuple[float, str]:
    """Divisor and axis label that keep wall-time numbers readable (s, min or h)."""
    top = max(seconds, default=0.0)
    if top >= 2 * 3600:
        return 3600.0, "wall time [h]"
    if top >= 120:
        return 60.0, "wall time [min]"
    return 1.0, "wall time [s]"


def _plot_curves(axes: Sequence[Any], curves: Sequence[tuple[str, Sequence[BudgetStep]]]) -> None:
    """Step curves of hypervolume over cumulative epochs (left) and wall time (right), one unit for all."""
    divisor, time_label = _time_scale([s.wall_time_s for _, c in curves for s in c])
    for label, curve in curves:
        values = [0.0, *[s.hypervolume for s in curve]]
        axes[0].step([0.0, *[s.epochs for s in curve]], values, where="post", label=label)
        axes[1].step([0.0, *[s.wall_time_s / divisor for s in curve]], values, where="post", label=label)
    axes[0].set_xlabel("consumed budget [epochs, cumulative]")
    axes[1].set_xlabel(time_label)
    for ax in axes:
        ax.set_ylabel("hypervolume")
        ax.grid(True, alpha=0.3)


def plot_hypervolume(report: ReportData, path: Path) -> Path:
    """Hypervolume of the full-budget front against cumulative epochs and against wall time."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120, sharey=True)
    _plot_curves(axes, [("this run", report.hypervolume_over_budget)])
    fig.suptitle(
        f"Hypervolume over budget (final {report.hypervolume:.4g}) {_title(report)}".strip(), fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_importance(report: ReportData, path: Path) -> Path:
    """One horizontal bar chart of hyperparameter importance per objective."""
    plt = _pyplot()
    names = [n for n in report.objective_names if report.importance.values.get(n)]
    fig, axes = plt.subplots(
        1, max(1, len(names)), figsize=(4.2 * max(1, len(names)), 4), dpi=120, squeeze=False
    )
    for ax, name in zip(axes[0], names, strict=False):
        items = sorted(report.importance.values[name].items(), key=lambda kv: kv[1])
        ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
        ax.set_title(objective_label(name), fontsize=9)
        floor = report.importance.noise_floor.get(name)
        if floor is not None:
            # Bars at or left of this line are indistinguishable from a column of random numbers.
            ax.axvline(floor, color="tab:red", linestyle="--", linewidth=1, label=f"noise floor {floor:.2f}")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xlabel("importance (fraction of variance)")
        ax.set_xlim(0, 1)
        ax.grid(True, axis="x", alpha=0.3)
    if not names:
        axes[0][0].text(0.5, 0.5, "no importance available", ha="center", va="center")
        axes[0][0].set_axis_off()
    note = "" if report.importance.reliable else f" — not reliable: {report.importance.note}"
    fig.suptitle(f"Hyperparameter importance (fANOVA){note}", fontsize=9, wrap=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_crosscheck(crosscheck: EnergyCrosscheck, path: Path) -> Path | None:
    """Measured against modelled energy per image (log-log) with the fitted ``measured = k x modelled``.

    Returns ``None`` (and writes nothing) when no row has both values.
    """
    rows = [row for row in crosscheck.rows if row.paired]
    if not rows:
        return None
    plt = _pyplot()
    from matplotlib.ticker import NullFormatter

    from greenshift.report.crosscheck import MIN_PAIRS

    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=120)
    xs = [float(row.energy_model_j or 0.0) for row in rows]
    ys = [float(row.energy_measured_j or 0.0) for row in rows]
    # Neighbours along the x axis get their labels above and below in turn, so close points stay legible.
    below = {i: rank % 2 == 1 for rank, i in enumerate(np.argsort(xs, kind="stable").tolist())}
    for index, (row, x, y) in enumerate(zip(rows, xs, ys, strict=True)):
        style = (
            {"marker": "*", "s": 190, "color": "tab:red", "zorder": 4}
            if row.is_default
            else {"marker": "o", "s": 46, "color": "tab:blue", "zorder": 3}
        )
        ax.scatter([x], [y], edgecolors="black", lw=0.8, **style)
        label = f"trial {row.trial_id}" + (" (default)" if row.is_default else "")
        ax.annotate(
            label,
            (x, y),
            xytext=(7, -11 if below[index] else 5),
            textcoords="offset points",
            fontsize=8,
        )
        rse = (row.measured_spread or {}).get("rse")
        if isinstance(rse, (int, float)) and math.isfinite(rse) and rse > 0:
            # Standard error of the mean, clipped above zero for the log axis.
            error = rse * y
            ax.errorbar([x], [y], yerr=[[min(error, 0.9 * y)], [error]], color="grey", lw=1, zorder=2)
    trust = crosscheck.trust
    if trust.scale_k is not None:
        line = np.geomspace(min(xs) / 1.5, max(xs) * 1.5, 50)
        ax.plot(
            line,
            trust.scale_k * line,
            "--",
            color="grey",
            lw=1,
            label=f"measured = {trust.scale_k:.3g} × modelled",
        )
        ax.legend(fontsize=8, loc="upper left")
    ax.set_xscale("log")
    ax.set_yscale("log")
    # At least two decades per axis, so that each shows labelled powers of ten; minor ticks stay
    # unlabelled (their labels collide on short log axes).
    for values, setter, axis in ((xs, ax.set_xlim, ax.xaxis), (ys, ax.set_ylim, ax.yaxis)):
        low, high = min(values) / 1.6, max(values) * 1.6
        if high / low < 100:
            middle = math.sqrt(low * high)
            low, high = middle / 10, middle * 10
        setter(low, high)
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("modelled energy per image [J] (energy model, shift hardware)")
    ax.set_ylabel("measured energy per image [J] (this machine)")
    if trust.n < MIN_PAIRS:
        verdict = f"{trust.n} configuration{'' if trust.n == 1 else 's'}: too few to judge the model"
    elif trust.spearman_rho is None:
        verdict = f"{trust.n} configurations, ranking not comparable"
    else:
        verdict = f"{trust.n} configurations, Spearman ρ = {trust.spearman_rho:.2f}"
    ax.set_title(f"Measured vs modelled energy per image\n{verdict}", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ files


def write_pareto_csv(report: ReportData, path: Path) -> Path:
    """The front, one row per configuration: trial id, budget, flags, objectives, then every hyperparameter."""
    config_keys = sorted({k for e in report.front for k in e.config})
    knee_id = report.knee.trial_id if report.knee else None
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "trial_id",
                "budget_epochs",
                "n_trials",
                "is_default",
                "is_knee",
                *report.objective_names,
                *config_keys,
            ]
        )
        for e in report.front:
            writer.writerow(
                [
                    e.trial_id,
                    f"{e.budget_epochs:g}",
                    e.n_trials,
                    e.is_default,
                    e.trial_id == knee_id,
                    *[repr(float(e.objectives[n])) for n in report.objective_names],
                    *["" if e.config.get(k) is None else e.config[k] for k in config_keys],
                ]
            )
    return path


def write_report(report: ReportData, run_dir: str | Path) -> dict[str, Path]:
    """Write ``pareto.png``, ``hypervolume.png``, ``importance.png``, ``pareto.csv``, ``report.json`` and
    ``report.html`` into ``run_dir`` (created if needed); returns their paths by short name.

    When ``report.crosscheck`` has rows with both energies, ``energy_crosscheck.png`` is written too
    (short name ``crosscheck``). To include the crosscheck, add it to the report first
    (:func:`greenshift.report.energy.add_crosscheck`). File names: :data:`greenshift.store.layout.REPORT_FILES`.
    """
    from greenshift.report.html import report_html

    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / file for name, file in REPORT_FILES.items()}
    paths = {
        "pareto": plot_pareto(report, files["pareto"]),
        "hypervolume": plot_hypervolume(report, files["hypervolume"]),
        "importance": plot_importance(report, files["importance"]),
        "csv": write_pareto_csv(report, files["csv"]),
    }
    if report.crosscheck is not None:
        figure = plot_crosscheck(report.crosscheck, files["crosscheck"])
        if figure is not None:
            paths["crosscheck"] = figure
    json_path = files["json"]
    json_path.write_text(json.dumps(report_json(report), indent=2, allow_nan=False), encoding="utf-8")
    paths["json"] = json_path
    images = {
        name: paths[name].read_bytes()
        for name in ("pareto", "hypervolume", "importance", "crosscheck")
        if name in paths
    }
    html_path = files["html"]
    html_path.write_text(report_html(report, images), encoding="utf-8")
    paths["html"] = html_path
    return paths


def plot_comparison(comparison: Comparison, path: Path) -> Path:
    """Hypervolume curves (over epochs and wall time) and fronts of several runs in one figure."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), dpi=120)
    _plot_curves(axes[:2], [(r.name, r.curve) for r in comparison.runs])
    axes[0].legend(fontsize=8)
    x_name, y_name = _axes_names(comparison.objective_names)
    ax = axes[2]
    for i, run in enumerate(comparison.runs):
        front = run.report.front
        xs = [float(e.objectives[x_name]) if x_name else float(e.trial_id) for e in front]
        ys = [float(e.objectives[y_name]) for e in front]
        order = np.argsort(xs, kind="stable")
        xs, ys = [xs[j] for j in order], [ys[j] for j in order]
        line = ax.step(xs, ys, where="post", label=run.name) if len(comparison.objective_names) == 2 else None
        colour = line[0].get_color() if line else None
        ax.scatter(
            xs, ys, s=24, marker=_MARKERS[i % len(_MARKERS)], color=colour, label=None if line else run.name
        )
    ax.set_xlabel(objective_label(x_name) if x_name else "trial id")
    ax.set_ylabel(objective_label(y_name))
    ax.set_title("Pareto fronts at the full budget", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    note = "" if comparison.comparable else " (reference points differed: common = element-wise maximum)"
    fig.suptitle(f"Run comparison{note}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def comparison_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """The comparison table: name, final hypervolume, trials and epochs per run."""
    return [
        {"name": r.name, "final_hypervolume": r.final_hypervolume, "trials": r.n_trials, "epochs": r.epochs}
        for r in comparison.runs
    ]


def write_comparison(
    runs: Comparison | Sequence[tuple[str, ReportData]] | Mapping[str, ReportData],
    out_path: str | Path,
) -> dict[str, Path]:
    """Write a comparison of runs: ``out_path`` (HTML with the figure embedded and the table) plus the
    figure (same name, ``.png``) and the table (``.csv``) next to it. Returns the three paths.
    """
    from greenshift.report.html import comparison_html

    comparison = runs if isinstance(runs, Comparison) else compare_runs(runs)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = plot_comparison(comparison, out.with_suffix(".png"))
    csv_path = out.with_suffix(".csv")
    rows = comparison_rows(comparison)
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["name", "final_hypervolume", "trials", "epochs"])
        writer.writeheader()
        writer.writerows(rows)
    html_path = out if out.suffix.lower() in (".html", ".htm") else out.with_suffix(".html")
    html_path.write_text(comparison_html(comparison, rows, png.read_bytes()), encoding="utf-8")
    return {"figure": png, "csv": csv_path, "html": html_path}
