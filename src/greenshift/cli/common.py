"""What the commands share: the parser's classes and common options, error lines, and output.

All of the command line's number formatting lives here. Some of it repeats the HTML report's
(:mod:`greenshift.report.html`): ``percent`` is ``html._pct`` with "-" for "—", ``objective_text``
extends ``html._num`` with units. They are to become one formatter of the report.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any

from greenshift.config import DSNNConfig
from greenshift.errors import ConfigError
from greenshift.fileio import jsonable

PROG = "greenshift"

#: Adds one command to the parser: ``command(name, summary, description, epilog=None) -> parser``.
AddCommand = Callable[..., argparse.ArgumentParser]

# Choice lists of the library, repeated here so that building the parser does not import torch
# (greenshift.objectives does); a test checks that they match the library's.
METERS = ("auto", "codecarbon", "nvml", "rapl")
OBJECTIVE_NAMES = (
    "loss",
    "energy_model_j",
    "energy_measured_j",
    "emissions_measured_kg",
    "latency_ms",
    "latency_ort_ms",
    "size_bits",
)

CONFIG_FIELDS = tuple(f.name for f in fields(DSNNConfig))
SET_HELP = "fix a hyperparameter, e.g. --set shift_type=Q (repeatable); keys: " + ", ".join(CONFIG_FIELDS)


# -- parser ----------------------------------------------------------------------------------------
def one_line(message: str) -> str:
    """``message`` on one line (the CLI prints every error on one line)."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip()) or "unknown error"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, like every other error of the CLI."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')\n")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and examples."""


def add_data_options(p: argparse.ArgumentParser, *, required: bool = False, needed: str = "required") -> None:
    """--dataset (required: by argparse where no config file can supply it), --data-dir, --image-size."""
    p.add_argument(
        "--dataset", metavar="NAME", required=required, help=f"data set (see 'greenshift datasets'); {needed}"
    )
    p.add_argument(
        "--data-dir", metavar="PATH", help="folder with the data set's files (data sets that need them)"
    )
    p.add_argument(
        "--image-size",
        type=int,
        metavar="N",
        help="resize images to N x N pixels (default: the data set's size)",
    )


def given(args: argparse.Namespace, keys: Sequence[str]) -> dict[str, Any]:
    """The settings ``keys`` as the command line gives them (``None`` for flags left out)."""
    return {key: getattr(args, key, None) for key in keys}


# -- errors: field names become flag names ---------------------------------------------------------
def flags_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``dest -> --flag`` of a (sub)parser's options."""
    return {
        action.dest: action.option_strings[0]
        for action in parser._actions
        if action.option_strings and action.dest not in ("help", "debug")
    }


def with_flags(error: ConfigError, flags: Mapping[str, str], aliases: Mapping[str, str]) -> str:
    """The message of ``error`` with the settings it names (``error.fields``) written as flags.

    Only the first mention of each is renamed (a later one may be a plain word). ``aliases`` maps a field name to the key its flag is named after (``walltime_s`` -> ``walltime``).
    """
    message = str(error)
    for name in getattr(error, "fields", ()):
        flag = flags.get(name) or flags.get(aliases.get(name, ""))
        if flag:
            message = re.sub(rf"(?<![\w-]){re.escape(name)}(?!\w)", flag, message, count=1)
    return message


# -- output ----------------------------------------------------------------------------------------
def console(*, stderr: bool = False) -> Any:
    """A rich console on stdout (or stderr); 140 columns off a terminal unless COLUMNS says otherwise."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Off a terminal rich assumes 80 columns, which wraps the wide tables in logs; COLUMNS still wins.
    width = None if stream.isatty() or "COLUMNS" in os.environ else 140
    return Console(stderr=stderr, highlight=False, width=width)


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout (NaN and infinities as null)."""
    print(json.dumps(jsonable(data), indent=2, allow_nan=False))


# Numbers are written by greenshift.report.format (one place for units and prefixes); imported when
# used, because the report package is too heavy for the parser that --help builds.
def si(value: float, unit: str) -> str:
    """``value`` with an SI prefix: ``si(3.2e-6, "J") == "3.2 µJ"``."""
    from greenshift.report.format import si as si_text

    return si_text(value, unit)


def objective_text(name: str, value: Any) -> str:
    """An objective value with its unit (names carry units: docs/architecture.md); ``-`` when unknown."""
    from greenshift.report.format import objective_text as text

    return text(name, value, missing="-")


def objectives_text(names: Sequence[str], values: Mapping[str, Any]) -> str:
    """``loss 0.1234, energy_model_j 3.2 µJ``."""
    return ", ".join(f"{n} {objective_text(n, values.get(n))}" for n in names)


def percent(value: float | None) -> str:
    """A signed percent change, ``-`` when undefined."""
    from greenshift.report.format import percent_text

    return percent_text(value, missing="-")


def size_text(count: int) -> str:
    """A size in bytes, kB or MB."""
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def config_value(config: Mapping[str, Any], key: str) -> str:
    """One hyperparameter for a table cell (``activation_bits`` as integer+fraction bits)."""
    if key == "activation_bits":
        integer, fraction = config.get("activation_integer_bits"), config.get("activation_fraction_bits")
        return "-" if integer is None or fraction is None else f"{integer}+{fraction}"
    value = config.get(key)
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


#: The hyperparameters shown in front tables (``activation_bits`` is integer+fraction bits).
KEY_HYPERPARAMETERS = ("shift_depth", "shift_type", "weight_bits", "activation_bits", "optimizer", "lr")


def front_table(title: str, rows: Sequence[Any], objectives: Sequence[str], default: Any | None) -> Any:
    """A table of trials (TrialRecord or report FrontEntry): id, budget, objectives, key hyperparameters.

    Rows are sorted by the objectives; the default configuration is marked ``*`` and, when it is not on
    the front, shown below it for comparison.
    """
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("trial", justify="right")
    table.add_column("epochs", justify="right")
    for name in objectives:
        table.add_column(name, justify="right")
    for key in KEY_HYPERPARAMETERS:
        table.add_column(key.replace("activation_bits", "act bits (int+frac)"), justify="right")
    default_id = None if default is None else default.trial_id

    def add(row: Any) -> None:
        table.add_row(
            f"{row.trial_id}{'*' if row.trial_id == default_id else ''}",
            f"{row.budget_epochs:g}",
            *[objective_text(n, row.objectives.get(n)) for n in objectives],
            *[config_value(row.config, k) for k in KEY_HYPERPARAMETERS],
        )

    ordered = sorted(rows, key=lambda r: ([float(r.objectives[n]) for n in objectives], r.trial_id))
    for row in ordered:
        add(row)
    if default is not None and all(row.trial_id != default_id for row in rows):
        table.add_section()
        add(default)
    return table


def key_value_table(title: str, values: Mapping[str, Any]) -> Any:
    """A two-column table of ``values``."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("key")
    table.add_column("value")
    for key, value in values.items():
        table.add_row(str(key), value if isinstance(value, str) else json.dumps(jsonable(value)))
    return table


def table(title: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[str] | None]) -> Any:
    """A rich table of ``(name, justify)`` columns and rows of cell texts (``None``: a section line)."""
    from rich.table import Table

    out = Table(title=title, title_justify="left")
    for name, justify in columns:
        out.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        if row is None:
            out.add_section()
        else:
            out.add_row(*row)
    return out


def print_baseline_outside(out: Any, outside: Mapping[str, str]) -> None:
    """Say prominently when the baseline lies outside the searched space (--range, --space)."""
    from greenshift.report.data import baseline_outside_text

    if outside:
        out.print(f"[yellow]{baseline_outside_text(outside)}")


def print_failures(out: Any, failures: Sequence[Any], run_dir: str) -> None:
    """Failed trials grouped by their error, the most frequent first."""
    if not failures:
        return
    total = sum(group.count for group in failures)
    out.print(f"[red]{total} trial(s) failed:")
    for group in failures:
        ids = ", ".join(str(i) for i in group.trial_ids[:8]) + (" ..." if len(group.trial_ids) > 8 else "")
        out.print(f"  {group.count} x {'/'.join(group.statuses)}: {group.error} (trials {ids})")
    out.print(f"  every failed trial with its error: greenshift trials {run_dir} --failed")
