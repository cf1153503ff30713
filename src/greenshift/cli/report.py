"""``greenshift report``, ``pick`` and ``compare``: what a run (or several) found."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from greenshift.cli.common import (
    METERS,
    PROG,
    AddCommand,
    console,
    front_table,
    key_value_table,
    objective_text,
    objectives_text,
    percent,
    print_baseline_outside,
    print_failures,
    print_json,
    table,
)


def add_commands(command: AddCommand) -> None:
    """Add ``report``, ``pick`` and ``compare``."""
    _add_report(command)
    _add_pick(command)
    _add_compare(command)


def _add_report(command: AddCommand) -> None:
    p = command(
        "report",
        "write the report of a run (figures, CSV, JSON, HTML)",
        "Write the report of a run (pareto.png, hypervolume.png, importance.png, pareto.csv,\n"
        "report.json, report.html, and energy_crosscheck.png when measured energies exist) and print\n"
        "its headline figures. Energy is measured only with --remeasure (seconds to a minute per model);\n"
        "measurements are cached in DIR/report/energy_crosscheck.json and reused by later reports.",
    )
    p.add_argument("run_dir", metavar="DIR", help="run directory of a search")
    p.add_argument("--out", metavar="DIR", help="where to write the files (default: the run directory)")
    p.add_argument("--json", action="store_true", help="print the report's JSON instead of the summary")
    p.add_argument("--open", action="store_true", help="open report.html in the web browser")
    p.add_argument(
        "--no-crosscheck",
        action="store_true",
        help="skip measured-next-to-modelled energy of the front and the default",
    )
    p.add_argument(
        "--remeasure",
        action="store_true",
        help="measure the energy of front and default models not measured yet (slow; cached in the run); "
        "without it the cross-check uses only energies already measured",
    )
    p.add_argument(
        "--meter", choices=METERS, default="auto", help="energy meter for re-measured models (default: auto)"
    )
    p.add_argument(
        "--energy-table",
        metavar="FILE",
        help="model the cross-checked energies with this table, e.g. from 'greenshift calibrate' "
        "(default: the run's values)",
    )
    p.set_defaults(handler=cmd_report)


def _add_pick(command: AddCommand) -> None:
    p = command(
        "pick",
        "choose one configuration of the front",
        "Choose one configuration of a run's Pareto front by a bound or the knee.",
        "examples:\n  greenshift pick runs/demo --max-loss 0.05\n  greenshift pick runs/demo --knee",
    )
    p.add_argument("run_dir", metavar="DIR", help="run directory of a search")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--max-loss", type=float, metavar="X", help="the lowest energy with loss <= X")
    how.add_argument(
        "--max-energy",
        type=float,
        metavar="X",
        help="the lowest loss with energy <= X (in the objective's unit)",
    )
    how.add_argument("--knee", action="store_true", help="the knee of the front")
    p.add_argument(
        "--energy-objective", metavar="NAME", help="the energy objective meant, when the run has several"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(handler=cmd_pick)


def _add_compare(command: AddCommand) -> None:
    p = command(
        "compare",
        "compare runs of one problem",
        "Put runs side by side: hypervolume over budget and fronts against one common reference point.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="DIR", help="run directories with the same objectives")
    p.add_argument(
        "--out",
        metavar="PATH",
        default="comparison.html",
        help="HTML page to write; the figure (.png) and table (.csv) go next to it (default: comparison.html)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=cmd_compare)


# -- report ----------------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    """``greenshift report``: write the report files and print the headline figures."""
    from greenshift.report import add_crosscheck, load_report, report_json, write_report

    crosscheck: bool | dict[str, Any] = False
    if not args.no_crosscheck:
        # Re-measuring a kept model takes seconds to a minute per model; the result is cached in the run.
        progress = None if args.json else console().print
        crosscheck = {"meter": args.meter, "remeasure": args.remeasure, "progress": progress}
        if args.energy_table:
            crosscheck["energy_table"] = args.energy_table
    report = load_report(args.run_dir)
    report = add_crosscheck(args.run_dir, report, **crosscheck) if crosscheck else report
    paths = write_report(report, args.out or args.run_dir)
    if args.open:
        import webbrowser

        if not webbrowser.open(Path(paths["html"]).resolve().as_uri()):
            print(f"{PROG}: no web browser found; open {paths['html']} yourself", file=sys.stderr)
    if args.json:
        print_json(report_json(report))
        return 0
    _print_report(report, paths, args.run_dir, remeasure=args.remeasure)
    return 0


def _print_report(report: Any, paths: Mapping[str, Path], run_dir: str, *, remeasure: bool) -> None:
    out, names = console(), list(report.objective_names)
    meta = " / ".join(str(report.meta[k]) for k in ("dataset", "backbone", "optimizer") if report.meta.get(k))
    counts = ", ".join(f"{count} {status}" for status, count in sorted(report.status_counts.items()))
    out.print(f"[bold]{run_dir}[/bold] {meta}: {counts}; {report.total_epochs:g} epochs in all")
    print_baseline_outside(out, report.baseline_outside)
    title = f"Pareto front at {report.max_budget:g} epochs ({len(report.front)} configurations; * = default)"
    out.print(front_table(title, report.front, names, report.default))
    _print_improvement(out, report, names)
    ref = report.reference_point
    out.print(
        f"hypervolume {report.hypervolume:.4g} (reference point {objectives_text(names, ref.values)}: {ref.rule}"
        + ("" if ref.comparable else "; not comparable between runs")
        + ")"
    )
    if report.knee is not None:
        out.print(f"knee of the front: trial {report.knee.trial_id}")
    _print_importance(out, report.importance)
    if report.crosscheck is not None:
        out.print(f"modelled vs measured energy: {report.crosscheck.trust.statement}")
        if any(r.energy_measured_j is None for r in report.crosscheck.rows) and not remeasure:
            out.print(
                "  some models have no measured energy yet: 'greenshift report --remeasure' measures them "
                "(seconds to a minute per model, cached in the run)"
            )
    print_failures(out, report.failures, run_dir)
    out.print("files: " + ", ".join(str(p) for p in paths.values()))


def _print_improvement(out: Any, report: Any, names: Sequence[str]) -> None:
    """The default's objectives and the headline improvements on it."""
    if report.default is None:
        out.print("no default configuration at the full budget: no improvement figures")
        return
    out.print(
        f"default configuration (trial {report.default.trial_id}): {objectives_text(names, report.default.objectives)}"
    )
    imp = report.improvement
    lines = []
    if imp.best_loss_reduction is not None:
        lines.append(
            _headline_text(imp.best_loss_reduction, "with no energy objective worse than the default")
        )
    for headline in imp.best_energy_reduction.values():
        if headline is not None:
            lines.append(_headline_text(headline, "with no more loss than the default"))
    if not lines:
        lines.append("no front configuration improves on the default without giving something up")
    for line in lines:
        out.print(f"  {line}")


def _headline_text(headline: Any, condition: str) -> str:
    return (
        f"{headline.objective} {percent(headline.percent_change)} vs the default "
        f"({objective_text(headline.objective, headline.value)} instead of "
        f"{objective_text(headline.objective, headline.default_value)}), trial {headline.trial_id}, {condition}"
    )


def _print_importance(out: Any, importance: Any) -> None:
    """Per objective, the hyperparameters above the random probe's importance (the others are noise)."""
    for objective in importance.values:
        floor = importance.noise_floor.get(objective)
        if floor is None:  # no analysis ran (too few configurations, nothing varies): no figures to show
            out.print(f"importance for {objective}: not estimated")
            continue
        top = list(importance.reliable_values(objective).items())[:3]
        out.print(
            f"importance for {objective}: "
            + (", ".join(f"{k} {v:.2f}" for k, v in top) or "nothing above noise")
            + f" (noise floor {floor:.2f})"
            + (" (only the hyperparameters it depends on)" if importance.excluded.get(objective) else "")
        )
    if not importance.reliable:
        out.print(f"[yellow]importance is not reliable: {importance.note}")


# -- pick ------------------------------------------------------------------------------------------
def cmd_pick(args: argparse.Namespace) -> int:
    """``greenshift pick``: one configuration of the front by a bound or the knee."""
    from greenshift.report import load_report, pick

    chosen = pick(
        load_report(args.run_dir),
        max_loss=args.max_loss,
        max_energy=args.max_energy,
        energy_objective=args.energy_objective,
        knee=args.knee,
    )
    if args.json:
        print_json(
            {
                "trial_id": chosen.trial_id,
                "reason": chosen.reason,
                "objectives": chosen.objectives,
                "config": chosen.config,
            }
        )
        return 0
    out = console()
    out.print(
        f"trial {chosen.trial_id} ({chosen.reason}): {objectives_text(list(chosen.objectives), chosen.objectives)}"
    )
    out.print(key_value_table("configuration", chosen.config))
    out.print(f"export it with: greenshift export {args.run_dir} --trial {chosen.trial_id} --out model.pt")
    return 0


# -- compare ---------------------------------------------------------------------------------------
def cmd_compare(args: argparse.Namespace) -> int:
    """``greenshift compare``: hypervolume over budget and fronts of several runs."""
    from greenshift.report import compare_runs, load_report, write_comparison
    from greenshift.report.render import comparison_rows

    names = _run_names(args.run_dirs)
    comparison = compare_runs(
        [(name, load_report(path)) for name, path in zip(names, args.run_dirs, strict=True)]
    )
    paths = write_comparison(comparison, args.out)
    runs = [
        {**row, "run_dir": path, "front_size": len(run.report.front)}
        for row, run, path in zip(comparison_rows(comparison), comparison.runs, args.run_dirs, strict=True)
    ]
    if args.json:
        print_json(
            {
                "objectives": list(comparison.objective_names),
                "reference_point": comparison.reference_point,
                "comparable": comparison.comparable,
                "runs": runs,
                "files": {k: str(v) for k, v in paths.items()},
            }
        )
        return 0
    out = console()
    out.print(table("runs", _COMPARE_COLUMNS, [_compare_cells(run) for run in runs]))
    out.print(
        f"common reference point: {objectives_text(list(comparison.reference_point), comparison.reference_point)}"
    )
    if not comparison.comparable:
        out.print("[yellow]the runs' reference points differ: hypervolumes are indicative only")
    out.print("files: " + ", ".join(str(p) for p in paths.values()))
    return 0


_COMPARE_COLUMNS = [
    ("run", "left"),
    ("trials", "right"),
    ("epochs", "right"),
    ("front", "right"),
    ("hypervolume", "right"),
]


def _compare_cells(run: Mapping[str, Any]) -> tuple[str, ...]:
    return (
        run["name"],
        str(run["trials"]),
        f"{run['epochs']:g}",
        str(run["front_size"]),
        f"{run['final_hypervolume']:.4g}",
    )


def _run_names(run_dirs: Sequence[str]) -> list[str]:
    """Short names of runs: folder names, the full paths where two share one."""
    short = [Path(p).resolve().name or str(p) for p in run_dirs]
    return [name if short.count(name) == 1 else str(path) for name, path in zip(short, run_dirs, strict=True)]
