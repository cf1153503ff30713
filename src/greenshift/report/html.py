"""Self-contained HTML pages for a report and a run comparison.

Self-contained means one file: figures are embedded as base64 ``data:`` URIs and the style sheet is
inline, so the page can be mailed or archived. Every string that comes from the data (configuration
values, names, notes) passes through :func:`html.escape`, since configurations may come from files
written by anyone.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from greenshift.report.data import Comparison, FrontEntry, ReportData, baseline_outside_text
from greenshift.report.format import number_text, objective_label, percent_text
from greenshift.report.improvement import Headline

if TYPE_CHECKING:
    from greenshift.report.crosscheck import CrosscheckRow, EnergyCrosscheck

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; }
div.wide { overflow-x: auto; max-width: 100%; } .nowrap { white-space: nowrap; }
.note { color: #8a4b00; } .muted { color: #666; }
p.verdict { background: #f6f8fa; border-left: 4px solid #4a78b0; padding: 0.6em 0.9em; max-width: 60em; }
p.muted, p.note { max-width: 60em; }
"""


def _e(value: Any) -> str:
    """Escape anything for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


class _Markup(str):
    """Text that is already escaped HTML (built here from escaped parts); table cells keep it as is."""


def _cell(value: Any) -> str:
    if isinstance(value, _Markup):
        return f"<td>{value}</td>"
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (
        f'<td class="num">{_e(number_text(value))}</td>' if numeric else f"<td>{_e(number_text(value))}</td>"
    )


def _unbroken_flags(text: str) -> _Markup:
    """Escape ``text`` and keep command-line flags (``--keep-models pareto``) on one line."""
    escaped = _e(text)
    return _Markup(re.sub(r"(--[a-z][\w-]*(?: [a-z]+)?)", r'<span class="nowrap">\1</span>', escaped))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; every header and cell is escaped."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    # A header row of empty cells only draws a grey strip: leave it out.
    thead = f"<thead><tr>{head}</tr></thead>" if any(str(h) for h in headers) else ""
    # Tables with one column per hyperparameter are wider than the page: let them scroll on their own.
    return f'<div class="wide"><table>{thead}<tbody>{body}</tbody></table></div>'


def _img(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{encoded}">'


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )


def _entries_table(entries: Sequence[FrontEntry], report: ReportData, *, changes: bool) -> str:
    """Entries with objectives, optional % change vs the default, and one column per hyperparameter."""
    names = list(report.objective_names)
    keys = sorted({k for e in entries for k in e.config})
    per = {c.trial_id: c.percent_change for c in report.improvement.per_config}
    knee_id = report.knee.trial_id if report.knee else None
    headers = ["trial", "epochs", *names]
    if changes:
        headers += [f"Δ {n} vs default" for n in names]
    headers += ["flag", *keys]
    rows = []
    for e in entries:
        flags = " ".join(f for f, on in (("default", e.is_default), ("knee", e.trial_id == knee_id)) if on)
        row: list[Any] = [e.trial_id, e.budget_epochs, *[float(e.objectives[n]) for n in names]]
        if changes:
            row += [percent_text(per.get(e.trial_id, {}).get(n)) for n in names]
        row += [flags, *[e.config.get(k, "") for k in keys]]
        rows.append(row)
    return _table(headers, rows)


def _headline_text(headline: Headline | None, constraint: str) -> str:
    if headline is None:
        return f"none (no configuration {constraint} improves on the default)"
    return (
        f"{headline.percent_change:+.1f} % ({number_text(headline.value)} vs {number_text(headline.default_value)}), "
        f"trial {headline.trial_id}"
    )


def _spread_text(row: CrosscheckRow) -> str:
    """``± standard error (RSE, readings)`` of a measured value, or a dash."""
    spread = row.measured_spread or {}
    rse, n = spread.get("rse"), spread.get("n")
    value = row.energy_measured_j
    if value is None or not isinstance(rse, (int, float)) or not math.isfinite(rse):
        return "—"
    # The standard error of the mean, not the spread of single readings: it is what ± the value means.
    parts = [f"± {number_text(float(rse * value))} J"]
    details = [f"RSE {100 * rse:.1f} %"]
    if n:
        details.append(f"{n} readings")
    if spread.get("converged") is False:
        details.append("not converged")
    if isinstance(spread.get("std_between_seeds_j"), (int, float)):
        details.append(f"± {number_text(float(spread['std_between_seeds_j']))} J between seeds")
    if details:
        parts.append(f"({', '.join(details)})")
    return " ".join(parts)


def _crosscheck_section(report: ReportData, crosscheck: EnergyCrosscheck, images: Mapping[str, bytes]) -> str:
    """Table of modelled next to measured energy, the verdict on the model, the caveat and the figure."""
    knee_id = report.knee.trial_id if report.knee else None
    rows = []
    for row in crosscheck.rows:
        role = [r for r, on in (("default", row.is_default), ("front", row.on_front)) if on]
        if row.trial_id == knee_id:
            role.append("knee")
        ratio = (
            row.energy_measured_j / row.energy_model_j
            if row.paired and row.energy_measured_j is not None and row.energy_model_j
            else None
        )
        source = f"{row.model_source or '—'} / {row.measured_source or '—'}"
        rows.append(
            [
                row.trial_id,
                ", ".join(role),
                row.energy_model_j,
                row.energy_measured_j,
                ratio,
                _spread_text(row),
                row.meter or "—",
                source,
                _unbroken_flags(row.note or ""),
            ]
        )
    headers = [
        "trial",
        "role",
        "modelled [J/image]",
        "measured [J/image]",
        "measured / modelled",
        "measured ± standard error",
        "meter",
        "source (modelled / measured)",
        "note",
    ]
    if not any(row.note for row in crosscheck.rows):
        # An empty note column only squeezes the others.
        headers, rows = headers[:-1], [r[:-1] for r in rows]
    trust = crosscheck.trust
    parts = [
        '<h2 id="energy-crosscheck">Modelled vs measured energy</h2>',
        '<p class="muted">Energy per image of the Pareto front and the default. <b>Modelled</b>: the energy '
        "model, from operation counts and an energy table: what shift hardware would spend. "
        "<b>Measured</b>: the meter protocol of docs/energy.md, taken from the run or re-measured from "
        "the kept models: what this machine spends, with shifts simulated by float multiplications.</p>",
        _table(headers, rows),
        f'<p class="verdict"><strong>How far to trust the modelled energy.</strong> {_e(trust.statement)}</p>',
    ]
    if "crosscheck" in images:
        parts.append(_img(images["crosscheck"], "Measured vs modelled energy"))
    methods = sorted(
        {(row.meter or "?", row.measured_method) for row in crosscheck.rows if row.measured_method}
    )
    if methods:
        items = "".join(
            f"<li>{_e(method if method.startswith(meter) else f'{meter}: {method}')}</li>"
            for meter, method in methods
        )
        parts.append(f'<p class="muted">How each meter measured:</p><ul class="muted">{items}</ul>')
    if crosscheck.device:
        parts.append(f'<p class="muted">{_e(f"Re-measurements ran on {crosscheck.device}.")}</p>')
    return "\n".join(parts)


def report_html(report: ReportData, images: Mapping[str, bytes]) -> str:
    """The HTML page of one report; ``images`` maps ``pareto``/``hypervolume``/``importance`` (and
    ``crosscheck`` when there is one) to PNG bytes.
    """
    title = " / ".join(
        str(report.meta[k]) for k in ("dataset", "backbone", "optimizer") if report.meta.get(k)
    )
    parts = [f"<h1>greenshift report{': ' + _e(title) if title else ''}</h1>"]
    ref = report.reference_point
    summary_rows = [
        ["objectives", ", ".join(objective_label(n) for n in report.objective_names)],
        ["full budget", f"{report.max_budget:g} epochs"],
        ["configurations on the front", len(report.front)],
        ["hypervolume", report.hypervolume],
        [
            "reference point",
            ", ".join(f"{n} = {number_text(ref.values.get(n))}" for n in report.objective_names),
        ],
        ["reference rule", ref.rule],
        ["epochs consumed", report.total_epochs],
        [
            "trials by status",
            ", ".join(f"{k}: {v}" for k, v in sorted(report.status_counts.items())) or "none",
        ],
        ["failed trials (crashed, diverged, timeout, interrupted)", report.n_failed],
    ]
    summary_rows += [[str(k), v] for k, v in sorted(report.meta.items())]
    if report.incomplete:
        summary_rows.append(["OK trials without every objective", ", ".join(map(str, report.incomplete))])
    parts += ["<h2>Summary</h2>", _table(["", ""], summary_rows)]
    if not ref.comparable:
        parts.append(f'<p class="note">{_e("This reference point is not comparable with other runs.")}</p>')
    if report.failures:
        parts.append("<h2>Failed trials</h2>")
        parts.append(
            _table(
                ["trials", "status", "error", "trial ids"],
                [
                    [g.count, "/".join(g.statuses), g.error, ", ".join(map(str, g.trial_ids))]
                    for g in report.failures
                ],
            )
        )

    parts.append("<h2>Improvement over the default configuration</h2>")
    if report.default is None:
        parts.append('<p class="note">No default configuration finished at the full budget.</p>')
    else:
        imp = report.improvement
        energy = list(report.energy_objectives)
        rows = [
            [
                "largest loss reduction, no worse in " + (", ".join(energy) or "any other objective"),
                _headline_text(imp.best_loss_reduction, "no worse in energy"),
            ]
        ]
        rows += [
            [f"largest {n} reduction, no worse in loss", _headline_text(h, "no worse in loss")]
            for n, h in imp.best_energy_reduction.items()
        ]
        parts.append(_table(["headline", "change vs default (negative = better)"], rows))
        if report.baseline_outside:
            parts.append(f'<p class="note">{_e(baseline_outside_text(report.baseline_outside))}</p>')
        parts.append("<h3>Default configuration</h3>")
        parts.append(_entries_table([report.default], report, changes=False))

    if "pareto" in images:
        parts += ["<h2>Pareto front</h2>", _img(images["pareto"], "Pareto front")]
    parts.append(
        f"<h3>Front at {report.max_budget:g} epochs ({len(report.front)} configurations; "
        "Δ = percent change vs the default, negative = better)</h3>"
    )
    parts.append(_entries_table(report.front, report, changes=True) if report.front else "<p>empty</p>")

    if report.crosscheck is not None:
        parts.append(_crosscheck_section(report, report.crosscheck, images))

    if "hypervolume" in images:
        parts += ["<h2>Hypervolume over budget</h2>", _img(images["hypervolume"], "Hypervolume over budget")]

    imp_data = report.importance
    parts.append("<h2>Hyperparameter importance (fANOVA)</h2>")
    css = "muted" if imp_data.reliable else "note"
    reliability = "reliable" if imp_data.reliable else "not reliable"
    parts.append(f'<p class="{css}">{_e(reliability)}: {_e(imp_data.note)}</p>')
    if imp_data.filled:
        filled = ", ".join(f"{k} = {v}" for k, v in sorted(imp_data.filled.items()))
        parts.append(f'<p class="muted">{_e("inactive values filled with: " + filled)}</p>')
    if imp_data.dropped:
        parts.append(
            f'<p class="muted">{_e("dropped (inactive, no default): " + ", ".join(imp_data.dropped))}</p>'
        )
    if "importance" in images:
        parts.append(_img(images["importance"], "Hyperparameter importance"))
    names = [n for n in report.objective_names if n in imp_data.values]
    # Most important first, by the mean over objectives.
    hps = sorted(
        {h for v in imp_data.values.values() for h in v},
        key=lambda h: (-sum(imp_data.values[n].get(h, 0.0) for n in names), h),
    )
    if hps:
        rows = [[h, *[imp_data.values[n].get(h) for n in names]] for h in hps]
        # The random probe's importance: values at or below it say nothing (see importance.py).
        rows.append(
            ["(noise floor: a column of random numbers)", *[imp_data.noise_floor.get(n) for n in names]]
        )
        parts.append(_table(["hyperparameter", *names], rows))

    parts.append("<h2>Configurations seen only at lower budgets</h2>")
    parts.append(
        '<p class="muted">Not part of the front: their objectives come from shorter training.</p>'
        + (
            _entries_table(report.lower_budget, report, changes=False)
            if report.lower_budget
            else "<p>none</p>"
        )
    )
    return _page("greenshift report " + title, "\n".join(parts))


def comparison_html(comparison: Comparison, rows: Sequence[Mapping[str, Any]], figure: bytes) -> str:
    """The HTML page of a run comparison: the figure and the table (name, final HV, trials, epochs)."""
    ref = ", ".join(f"{k} = {number_text(v)}" for k, v in comparison.reference_point.items())
    parts = [
        "<h1>greenshift run comparison</h1>",
        f"<p>common reference point: {_e(ref)}</p>",
    ]
    if not comparison.comparable:
        parts.append(
            f'<p class="note">{_e("The runs had different reference points; the element-wise maximum is used.")}</p>'
        )
    parts.append(_img(figure, "Run comparison"))
    parts.append(
        _table(
            ["run", "final hypervolume", "trials", "epochs"],
            [[r["name"], r["final_hypervolume"], r["trials"], r["epochs"]] for r in rows],
        )
    )
    return _page("greenshift run comparison", "\n".join(parts))
