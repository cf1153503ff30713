"""``greenshift search``: run or resume a search, then print its front and the default."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from greenshift.cli.common import (
    METERS,
    OBJECTIVE_NAMES,
    SET_HELP,
    AddCommand,
    add_data_options,
    console,
    front_table,
    given,
    objectives_text,
    print_baseline_outside,
    print_failures,
    print_json,
)
from greenshift.search.settings import KEEP_MODELS, PRESETS, SEARCH_OPTIMIZERS, search_defaults, search_keys

#: Runs one search trial; ``None`` means :func:`greenshift.search.run_trial`. Tests replace it with a
#: synthetic trial so that the command can be exercised without training.
_trial_function: Callable[..., dict[str, Any]] | None = None


def add_commands(command: AddCommand) -> None:
    """Add ``search``."""
    p = command(
        "search",
        "search the Pareto front of accuracy and energy",
        "Multi-fidelity multi-objective search of DSNN configurations with SMAC3. A run directory is\n"
        "resumed when the same command is given again (completed trials are never re-run).",
        "precedence: flags > --config file > --preset > defaults. Config-file keys are the flag names\n"
        "with underscores (max_epochs: 9); set and range take a mapping or a list of key=value;\n"
        "data_dir, space and energy_table are relative to the file's folder. optimizer is the search\n"
        "optimiser; the training optimiser is a hyperparameter (set: {optimizer: adam}).\n\n"
        "examples:\n"
        "  greenshift search --dataset digits --backbone resnet20 --out runs/demo --preset demo\n"
        "  greenshift search --dataset cifar10 --data-dir data/cifar10 --backbone resnet20 \\\n"
        "      --trials 200 --max-epochs 27 --range lr=0.01:0.1 --set shift_type=Q --out runs/c10",
    )
    add_data_options(p)
    p.add_argument("--backbone", metavar="NAME", help="backbone (see 'greenshift models'); required")
    p.add_argument(
        "--out", metavar="DIR", help="run directory (created, or resumed if it holds this run); required"
    )
    p.add_argument(
        "--preset", choices=sorted(PRESETS), help="start from a bundle of settings (demo: the 'make run' job)"
    )
    p.add_argument("--config", metavar="FILE", help="YAML/JSON file of search settings")
    _add_budget_options(p, search_defaults())
    _add_trial_options(p, search_defaults())
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of tables")
    p.set_defaults(handler=cmd_search)


def _add_budget_options(p: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    """What is searched and for how long: optimiser, objectives, trials, epochs, time, parallelism."""
    p.add_argument(
        "--optimizer",
        choices=SEARCH_OPTIMIZERS,
        help=f"smac: multi-fidelity (Hyperband), smac-bo: full-budget BO, random (default: {d['optimizer']})",
    )
    p.add_argument(
        "--objectives",
        metavar="A,B",
        help=f"comma-separated objectives, all minimised: {', '.join(OBJECTIVE_NAMES)} "
        f"(default: {','.join(d['objectives'])})",
    )
    p.add_argument(
        "--objective-weights",
        metavar="W1,W2",
        help="preference between the objectives, e.g. 0.7,0.3 (default: none, explore the whole front)",
    )
    p.add_argument(
        "--trials",
        type=int,
        metavar="N",
        help=f"trials in all, the default one included (default: {d['trials']})",
    )
    p.add_argument(
        "--min-epochs", type=int, metavar="A", help=f"smallest training budget (default: {d['min_epochs']})"
    )
    p.add_argument(
        "--max-epochs",
        type=int,
        metavar="B",
        help=f"full training budget, the front's (default: {d['max_epochs']})",
    )
    p.add_argument(
        "--eta", type=int, metavar="ETA", help=f"Hyperband's reduction factor (default: {d['eta']})"
    )
    p.add_argument(
        "--walltime", type=float, metavar="SECONDS", help="start no trial after this time (default: none)"
    )
    p.add_argument(
        "--max-total-epochs",
        type=int,
        metavar="N",
        help="start no trial that would exceed N epochs in all (default: none)",
    )
    parallel = p.add_mutually_exclusive_group()
    parallel.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help=f"parallel trials on a local Dask cluster (default: {d['workers']})",
    )
    parallel.add_argument(
        "--scheduler", metavar="ADDR", help="address of an existing Dask scheduler (tcp://host:8786)"
    )
    p.add_argument(
        "--threads-per-trial",
        type=int,
        metavar="N",
        help="torch threads of each trial (default: the cores of a machine split between its workers)",
    )
    p.add_argument("--seed", type=int, metavar="S", help=f"random seed of the search (default: {d['seed']})")
    p.add_argument("--device", metavar="auto|cpu|cuda", help=f"device of the trials (default: {d['device']})")


def _add_trial_options(p: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    """The space searched, how trials run, what they keep and how energy is measured."""
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument(
        "--range",
        action="append",
        default=[],
        metavar="KEY=LOW:HIGH|A,B",
        help="narrow a hyperparameter: numbers LOW:HIGH, choices A,B (repeatable), e.g. --range lr=0.01:0.1",
    )
    p.add_argument(
        "--space", metavar="FILE", help="ConfigSpace JSON/YAML file replacing the default search space"
    )
    p.add_argument(
        "--continue-promoted",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="continue promoted configurations from their checkpoint (default) instead of retraining them",
    )
    p.add_argument(
        "--keep-models",
        choices=KEEP_MODELS,
        help=f"which trained models to keep on disk (default: {d['keep_models']})",
    )
    p.add_argument(
        "--trial-timeout",
        type=float,
        metavar="S",
        help="kill a trial after S seconds, recorded as timeout (default: 10x the longest time per epoch "
        "seen, at least 120 s; see docs/search.md)",
    )
    p.add_argument(
        "--isolate-trials",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run each trial in a trial process that a timeout can kill and whose crash the search "
        "survives (default); --no-isolate-trials runs them in the search's process, for debugging",
    )
    p.add_argument(
        "--energy-table", metavar="FILE", help="JSON energy table (default: the shipped 45 nm table)"
    )
    p.add_argument(
        "--meter", choices=METERS, help=f"energy meter for measured objectives (default: {d['meter']})"
    )
    p.add_argument(
        "--country",
        metavar="ISO3",
        help="country whose grid carbon intensity turns measured energy into emissions "
        f"(three-letter ISO code; default: {d['country']})",
    )
    p.add_argument(
        "--force-new",
        action="store_true",
        default=None,
        help="archive an existing run with other settings in --out and start afresh",
    )
    p.add_argument("--verbose", action="store_true", default=None, help="show SMAC's log messages")


def search_settings(args: argparse.Namespace) -> Any:
    """The :class:`~greenshift.search.SearchSettings` of a ``greenshift search`` command line."""
    from greenshift.search.settings import resolve_search_settings

    return resolve_search_settings(
        preset=args.preset, config_file=args.config, overrides=given(args, search_keys())
    )


class _TrackingProgress:
    """RichProgress plus what the command prints afterwards: trials done before this session."""

    def __init__(self) -> None:
        from greenshift.search import RichProgress

        self.inner = RichProgress()
        self.done_at_start: int | None = None
        self.last: Any = None
        self.stopped = False

    def start(self, stats: Any) -> None:
        """Remember how many trials were done before this session."""
        self.done_at_start, self.last = stats.done, stats
        self.inner.start(stats)

    def update(self, stats: Any) -> None:
        """Pass the snapshot on."""
        self.last = stats
        self.inner.update(stats)

    def note(self, message: str) -> None:
        """Pass the message on."""
        self.inner.note(message)

    def stop(self, stats: Any, reason: str) -> None:
        """The search ended normally."""
        self.stopped, self.last = True, stats
        self.inner.stop(stats, reason)

    def close(self) -> None:
        """Stop the live display if the search ended by an exception."""
        if self.last is not None and not self.stopped:
            self.stopped = True
            self.inner.stop(self.last, "")


def cmd_search(args: argparse.Namespace) -> int:
    """``greenshift search``: run or resume a search, then print the front and the default.

    Exits 130 after a Ctrl-C that stopped the search early (the trials that finished are kept and
    printed), 0 otherwise.
    """
    from greenshift.search import DSNNSearch, run_trial

    settings = search_settings(args)
    progress = _TrackingProgress()
    search = DSNNSearch(settings, trial_function=_trial_function or run_trial, progress=progress)
    try:
        result = search.run()
    finally:
        progress.close()
    summary = _summary(result, resumed=progress.done_at_start or 0, stopped=search.stop_requested)
    if args.json:
        print_json({**summary, "failures": [group.to_dict() for group in summary["failures"]]})
    else:
        _print_summary(result, summary)
    return 130 if search.stop_requested else 0


def _beat_default(result: Any) -> int:
    """Front configurations better than the default in every objective (by the report's improvement)."""
    from greenshift.report.improvement import compute_improvement

    return compute_improvement(result.pareto, result.default, list(result.objectives)).beat_default


def _summary(result: Any, *, resumed: int, stopped: bool) -> dict[str, Any]:
    """What ``greenshift search --json`` prints (``failures`` as FailureGroup objects)."""
    from greenshift.store import failure_groups

    finished = len(result.completed)
    return {
        "run_dir": str(result.run_dir),
        "stop_reason": result.stop_reason,
        "objectives": list(result.objectives),
        "max_epochs": result.max_epochs,
        "trials_finished": finished,
        "trials_resumed": resumed,
        "trials_new": finished - resumed,
        "pareto": [r.to_dict() for r in result.pareto],
        "default": None if result.default is None else result.default.to_dict(),
        "baseline_outside_space": result.baseline_outside,
        "beat_default": _beat_default(result),
        "failures": failure_groups(result.trials),
        "stopped_by_user": stopped,
    }


def _print_summary(result: Any, summary: dict[str, Any]) -> None:
    out, objectives, default = console(), list(result.objectives), result.default
    if summary["trials_resumed"]:
        out.print(
            f"resumed {result.run_dir}: {summary['trials_resumed']} trial(s) were already done, "
            f"{summary['trials_new']} new"
        )
    reason = f"; {result.stop_reason}" if result.stop_reason else ""
    out.print(f"{summary['trials_finished']} trial(s) finished in {result.run_dir}{reason}")
    if result.pareto:
        title = (
            f"Pareto front at {result.max_epochs} epochs ({len(result.pareto)} configurations; * = default)"
        )
        out.print(front_table(title, result.pareto, objectives, default))
    else:
        out.print("no trial finished at the full budget yet: there is no Pareto front")
    if default is None:
        out.print("the default configuration has no result at the full budget: nothing to compare with")
    else:
        out.print(
            f"default configuration (trial {default.trial_id}): {objectives_text(objectives, default.objectives)}"
        )
        out.print(
            f"{summary['beat_default']} of {len(result.pareto)} front configurations beat the default on every objective"
        )
    print_baseline_outside(out, result.baseline_outside)
    print_failures(out, summary["failures"], str(result.run_dir))
    out.print(f"next: greenshift report {result.run_dir}")
