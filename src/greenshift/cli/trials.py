"""``greenshift trials``: every trial of a run, filtered, as a table, JSON or CSV."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from greenshift.cli.common import AddCommand, console, objective_text, print_json, table
from greenshift.config import coerce_names
from greenshift.errors import ConfigError
from greenshift.store import TrialStatus
from greenshift.store.records import FAILED_STATUSES

TRIAL_STATUSES = tuple(status.value for status in TrialStatus)
FAILED = tuple(status.value for status in FAILED_STATUSES)


def add_commands(command: AddCommand) -> None:
    """Add ``trials``."""
    p = command(
        "trials",
        "list the trials of a run",
        "Every trial of a run: status, budget, objectives, error and duration (all statuses, all budgets).",
        "examples:\n  greenshift trials runs/demo --failed\n  greenshift trials runs/demo --status ok --budget 9 --csv",
    )
    p.add_argument("run_dir", metavar="DIR", help="run directory of a search")
    p.add_argument(
        "--status",
        metavar="A,B",
        help=f"only trials with these statuses: {', '.join(TRIAL_STATUSES)} (default: all)",
    )
    p.add_argument("--failed", action="store_true", help=f"only failed trials ({', '.join(FAILED)})")
    p.add_argument("--budget", type=float, metavar="EPOCHS", help="only trials at this budget in epochs")
    output = p.add_mutually_exclusive_group()
    output.add_argument(
        "--json", action="store_true", help="print JSON (the full records) instead of a table"
    )
    output.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.set_defaults(handler=cmd_trials)


def _wanted_statuses(args: argparse.Namespace) -> set[str] | None:
    """The statuses --status and --failed ask for (``None``: all)."""
    wanted = set(coerce_names("status", args.status)) if args.status else None
    unknown = sorted((wanted or set()) - set(TRIAL_STATUSES))
    if unknown:
        raise ConfigError(f"--status {', '.join(unknown)}: not a status; valid: {', '.join(TRIAL_STATUSES)}")
    if args.failed:
        wanted = (wanted or set(FAILED)) & set(FAILED)
    return wanted


def cmd_trials(args: argparse.Namespace) -> int:
    """``greenshift trials``: every trial of a run, filtered, as a table, JSON or CSV."""
    from greenshift.store import RunStore

    wanted = _wanted_statuses(args)
    with RunStore.open(args.run_dir) as store:
        objectives = list(store.identity.get("objectives") or [])
        records = store.trials()
    records = [
        r
        for r in records
        if (wanted is None or r.status.value in wanted)
        and (args.budget is None or math.isclose(float(r.budget_epochs), args.budget))
    ]
    if args.json:
        print_json([r.to_dict() for r in records])
        return 0
    columns = ["trial", "default", "status", "budget_epochs", *objectives, "duration_s", "error"]
    rows = [_row(r, objectives) for r in records]
    if args.csv:
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
        return 0
    justify = [(c, "left" if c in ("status", "error") else "right") for c in columns]
    cells = [_cells(row, objectives) for row in rows]
    console().print(table(f"{len(records)} trial(s) of {args.run_dir}", justify, cells))
    return 0


def _row(record: Any, objectives: list[str]) -> list[Any]:
    """One trial's values, as CSV writes them."""
    from greenshift.store.records import error_headline

    duration = None if record.duration_s is None else round(float(record.duration_s), 3)
    return [
        record.trial_id,
        "yes" if record.is_default else "",
        record.status.value,
        f"{record.budget_epochs:g}",
        *[record.objectives.get(n) for n in objectives],
        duration,
        error_headline(record.error),
    ]


def _cells(row: list[Any], objectives: list[str]) -> list[str]:
    """One trial's values, as the table shows them."""
    cells = [str(v) for v in row[:4]]
    cells += [objective_text(n, v) for n, v in zip(objectives, row[4 : 4 + len(objectives)], strict=True)]
    cells += ["-" if row[-2] is None else f"{row[-2]:.1f} s", row[-1] or ""]
    return cells
