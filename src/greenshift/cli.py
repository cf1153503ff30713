"""The ``greenshift`` command line: list, train, profile, search, trials, report, pick, compare, export, evaluate.

``main(argv) -> int`` never raises for a user's mistake: any :class:`~greenshift.errors.GreenshiftError`
becomes one line ``greenshift: error: <message>`` on stderr and exit code 2 (``--debug`` re-raises it
with its traceback), argparse usage errors exit 2 with one line too, and Ctrl-C exits 130.

Settings come from three places with the precedence *command line > --config file > preset > defaults*.
Config-file keys are the flag names with underscores (``max_epochs: 9``); ``set`` and ``range`` take a
mapping or a list of ``key=value`` strings and merge key by key with the command line's.

Heavy libraries (torch, SMAC, matplotlib) are imported inside the command that needs them, so
``--help`` and usage errors stay fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from greenshift.config import OPTIMIZERS as TRAINING_OPTIMIZERS
from greenshift.config import DSNNConfig, load_config_file, parse_assignments
from greenshift.errors import ConfigError, GreenshiftError
from greenshift.fileio import jsonable
from greenshift.store import FAILED_STATUSES, TrialStatus

#: Bundles of ``greenshift search`` settings, keyed like a --config file. Explicit flags and config-file
#: values override a preset. ``demo`` is the main job of ``make run``: it must finish in under ten
#: minutes on two CPU cores with ``--dataset digits --backbone resnet20``.
PRESETS: dict[str, dict[str, Any]] = {
    # The `make run` job: ResNet20 on digits in about 5 minutes on 2 idle CPU cores. The total epoch budget
    # is the binding limit (the default baseline takes 9 of the 200 epochs); trials only cap the count.
    "demo": {"trials": 100, "min_epochs": 1, "max_epochs": 9, "eta": 3, "seed": 0, "max_total_epochs": 200},
}

PROG = "greenshift"
HASH_SEED_ENV = "PYTHONHASHSEED"

#: Runs one search trial; ``None`` means :func:`greenshift.search.run_trial`. Tests replace it with a
#: synthetic trial so that the command can be exercised without training.
_trial_function: Callable[..., dict[str, Any]] | None = None

# Choice lists of the library, repeated here so that building the parser imports neither torch nor SMAC
# (a test checks that they match the library's).
SEARCH_OPTIMIZERS = ("smac", "smac-bo", "random")
KEEP_MODELS = ("pareto", "all", "none")
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

#: Defaults of ``greenshift search`` by config-file key; they equal :class:`SearchSettings`' (a test checks).
SEARCH_DEFAULTS: dict[str, Any] = {
    "dataset": None,
    "backbone": None,
    "out": None,
    "data_dir": None,
    "image_size": None,
    "optimizer": "smac",
    "objectives": ("loss", "energy_model_j"),
    "objective_weights": None,
    "trials": 30,
    "min_epochs": 1,
    "max_epochs": 9,
    "eta": 3,
    "walltime": None,
    "max_total_epochs": None,
    "workers": 1,
    "scheduler": None,
    "threads_per_trial": None,
    "seed": 0,
    "device": "auto",
    "set": {},
    "range": {},
    "space": None,
    "continue_promoted": True,
    "keep_models": "pareto",
    "trial_timeout": None,
    "energy_table": None,
    "meter": "auto",
    "country": "DEU",
    "force_new": False,
    "verbose": False,
    "isolate_trials": True,
}

#: Config-file key of ``greenshift search`` -> field of :class:`~greenshift.search.SearchSettings`.
SEARCH_FIELDS: dict[str, str] = {
    **{key: key for key in SEARCH_DEFAULTS},
    "walltime": "walltime_s",
    "trial_timeout": "trial_timeout_s",
    "set": "fixed",
    "range": "ranges",
    "space": "space_file",
    "country": "country_iso_code",
}

#: Defaults of ``greenshift train`` by config-file key (hyperparameters come from DSNNConfig).
TRAIN_DEFAULTS: dict[str, Any] = {
    "dataset": None,
    "backbone": None,
    "epochs": None,
    "data_dir": None,
    "image_size": None,
    "device": "auto",
    "seed": 0,
    "set": {},
}

_CONFIG_FIELDS = tuple(f.name for f in fields(DSNNConfig))


# --------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exc:  # --help, --version and usage errors: return the code, never exit
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command == "search" and HASH_SEED_ENV not in os.environ:
        _reexec_with_fixed_hash_seed(arguments)
    try:
        return int(args.handler(args) or 0)
    except GreenshiftError as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`greenshift models --json | head`): not an error of ours. Point stdout at
        # /dev/null so that the interpreter's final flush does not fail again.
        _discard_stdout()
        return 128 + 13  # what a process killed by SIGPIPE reports


def _discard_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no real file (captured in tests)
        pass


def _reexec_with_fixed_hash_seed(arguments: Sequence[str]) -> None:
    """Restart this command with ``PYTHONHASHSEED=0``; does not return.

    SMAC iterates over sets of configurations, and the order of a set of strings depends on Python's
    hash seed, which is random per process. Without a fixed seed two searches with the same ``--seed``
    would differ, and a resumed run (which replays SMAC's ask/tell sequence against the store) would not
    replay the same sequence. The seed can only be fixed before the interpreter starts, hence the
    re-exec. A user who sets PYTHONHASHSEED themselves (tests do) keeps their value.
    """
    if not sys.executable:  # an embedded interpreter cannot be restarted; runs are then not repeatable
        return
    os.environ[HASH_SEED_ENV] = "0"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "greenshift", *arguments])


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in message.splitlines() if part.strip()) or "unknown error"


# --------------------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, like every other error of the CLI."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see '{self.prog} --help')\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and examples."""


def build_parser() -> argparse.ArgumentParser:
    """The complete argument parser (also used by ``scripts/gen_cli_docs.py``)."""
    parser = _Parser(
        prog=PROG,
        description="Search Deep Shift Neural Networks that are both accurate and cheap in inference energy.",
        formatter_class=_Formatter,
        epilog=(
            "examples:\n"
            "  greenshift search --dataset digits --backbone resnet20 --out runs/demo --preset demo\n"
            "  greenshift report runs/demo\n"
            "  greenshift pick runs/demo --knee\n\n"
            "Run 'greenshift COMMAND --help' for the options of a command."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of errors instead of one line"
    )
    # Subcommands accept --debug as well; SUPPRESS keeps a global --debug from being reset by them.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of errors instead of one line",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    def command(
        name: str, summary: str, description: str, epilog: str | None = None
    ) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            description=description,
            epilog=epilog,
            parents=[common],
            formatter_class=_Formatter,
        )

    _add_datasets(command)
    _add_models(command)
    _add_train(command)
    _add_profile(command)
    _add_search(command)
    _add_trials(command)
    _add_report(command)
    _add_pick(command)
    _add_compare(command)
    _add_export(command)
    _add_evaluate(command)
    _add_calibrate(command)
    return parser


def _version() -> str:
    from greenshift import __version__

    return __version__


_SET_HELP = "fix a hyperparameter, e.g. --set shift_type=Q (repeatable); keys: " + ", ".join(_CONFIG_FIELDS)


def _add_data_options(
    p: argparse.ArgumentParser, *, required: bool = False, needed: str = "required"
) -> None:
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


def _add_datasets(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("datasets", "list the available data sets", "List the registered data sets.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=cmd_datasets)


def _add_models(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("models", "list the available backbones", "List the registered backbones.")
    p.add_argument("--all", action="store_true", help="include the tiny test-only variants")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=cmd_models)


def _add_train(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "train",
        "train one configuration and print its validation accuracy",
        "Train one DSNN configuration (the default configuration changed by --config and --set) and\n"
        "print its validation accuracy, training time and configuration.",
        "precedence: --set > --config file > defaults. The config file (YAML or JSON) may hold dataset,\n"
        "data_dir (relative to the file), image_size, backbone, epochs, device, seed, set and any\n"
        "hyperparameter but optimizer: a top-level optimizer is the search optimiser of 'greenshift\n"
        "search', so the training optimiser goes under set (set: {optimizer: adam}).\n\n"
        "example:\n  greenshift train --dataset digits --backbone resnet20 --epochs 5 --set weight_bits=4",
    )
    _add_data_options(p)
    p.add_argument("--backbone", metavar="NAME", help="backbone (see 'greenshift models'); required")
    p.add_argument("--epochs", type=int, metavar="N", help="epochs to train; required")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    p.add_argument("--config", metavar="FILE", help="YAML/JSON file of settings and hyperparameters")
    p.add_argument(
        "--device", metavar="auto|cpu|cuda", help=f"device to train on (default: {TRAIN_DEFAULTS['device']})"
    )
    p.add_argument("--seed", type=int, metavar="S", help=f"random seed (default: {TRAIN_DEFAULTS['seed']})")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(handler=cmd_train)


def _add_profile(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "profile",
        "show where a configuration's modelled energy goes",
        "Per-layer operations and modelled inference energy of one configuration (untrained model).\n"
        "Only the input shape and the number of classes matter: give them with --input-shape and\n"
        "--classes instead of --dataset to profile without the data set's files.",
        "examples:\n  greenshift profile --backbone resnet20 --dataset digits --set shift_depth=10\n"
        "  greenshift profile --backbone resnet20 --input-shape 3,32,32 --classes 10   # CIFAR-10's shape",
    )
    p.add_argument("--backbone", metavar="NAME", required=True, help="backbone (see 'greenshift models')")
    _add_data_options(p, needed="or --input-shape")
    p.add_argument(
        "--input-shape",
        metavar="C,H,W",
        help="input shape instead of --dataset (channels, height, width), e.g. 3,32,32",
    )
    p.add_argument(
        "--classes", type=int, metavar="N", help="number of classes with --input-shape (default: 10)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    p.add_argument(
        "--energy-table", metavar="FILE", help="JSON energy table (default: the shipped 45 nm table)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=cmd_profile)


def _add_search(command: Callable[..., argparse.ArgumentParser]) -> None:
    d = SEARCH_DEFAULTS
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
    _add_data_options(p)
    p.add_argument("--backbone", metavar="NAME", help="backbone (see 'greenshift models'); required")
    p.add_argument(
        "--out", metavar="DIR", help="run directory (created, or resumed if it holds this run); required"
    )
    p.add_argument(
        "--preset", choices=sorted(PRESETS), help="start from a bundle of settings (demo: the 'make run' job)"
    )
    p.add_argument("--config", metavar="FILE", help="YAML/JSON file of search settings")
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
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
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
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of tables")
    p.set_defaults(handler=cmd_search)


TRIAL_STATUSES = tuple(status.value for status in TrialStatus)
FAILED = tuple(status.value for status in FAILED_STATUSES)


def _add_trials(command: Callable[..., argparse.ArgumentParser]) -> None:
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


def _add_report(command: Callable[..., argparse.ArgumentParser]) -> None:
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


def _add_pick(command: Callable[..., argparse.ArgumentParser]) -> None:
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


def _add_compare(command: Callable[..., argparse.ArgumentParser]) -> None:
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


def _add_export(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "export",
        "export the model of one trial",
        "Export the trained model of one trial as a compact file (packed shift weights). The model the\n"
        "search kept is used; without one the trial is retrained exactly (same budget and seed).\n"
        "--format onnx writes an ONNX model with integer power-of-two shift weights for onnxruntime,\n"
        "its float twin (<stem>.float.onnx) and checks its predictions on the test split (docs/deploy.md).",
        "examples:\n  greenshift export runs/demo --trial 7 --out model.pt\n"
        "  greenshift export runs/demo --trial 7 --out model.onnx --format onnx",
    )
    p.add_argument("run_dir", metavar="DIR", help="run directory of a search")
    p.add_argument(
        "--trial", type=int, required=True, metavar="ID", help="trial id (see 'greenshift report' or 'pick')"
    )
    p.add_argument("--out", required=True, metavar="FILE", help="model file to write, e.g. model.pt")
    p.add_argument(
        "--no-retrain", action="store_true", help="fail instead of retraining when the search kept no model"
    )
    p.add_argument(
        "--data-dir", metavar="PATH", help="the data set's files for retraining (default: the run's)"
    )
    p.add_argument(
        "--device", metavar="auto|cpu|cuda", default="auto", help="device for retraining (default: auto)"
    )
    p.add_argument(
        "--format",
        choices=("greenshift", "onnx"),
        default="greenshift",
        help="greenshift: packed export file; onnx: ONNX model for onnxruntime (default: greenshift)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=cmd_export)


def _add_evaluate(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "evaluate",
        "evaluate an exported model",
        "Accuracy of an exported model on a data set, with the float simulation or the integer-only\n"
        "reference inference. Images are resized and normalised as in training. An .onnx model runs in\n"
        "onnxruntime: accuracy and latency (median, batch 1 and 64) next to its float twin.",
        "examples:\n  greenshift evaluate model.pt --dataset digits --integer --split test\n"
        "  greenshift evaluate model.onnx --split test",
    )
    p.add_argument("model", metavar="FILE", help="exported model file")
    p.add_argument("--dataset", metavar="NAME", help="data set (default: the one the model was trained on)")
    p.add_argument(
        "--data-dir",
        metavar="PATH",
        help="folder with the data set's files (default: the folder recorded in the model file, if any)",
    )
    p.add_argument("--integer", action="store_true", help="run the integer-only reference inference (slow)")
    p.add_argument("--split", choices=("val", "test"), default="val", help="split to score (default: val)")
    p.add_argument("--device", metavar="auto|cpu|cuda", default="auto", help="device (default: auto)")
    p.add_argument(
        "--float-model",
        metavar="FILE",
        help="ONNX float model to compare an .onnx model with (default: <stem>.float.onnx if present)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=30,
        metavar="N",
        help="timed runs per batch size for .onnx (default: 30)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=cmd_evaluate)


def _add_calibrate(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "calibrate",
        "price the energy model's operations on this machine",
        "Time the operations the energy model prices (float and shift multiply-accumulates at 8, 16\n"
        "and 32 activation bits, integer multiplications, memory reads) in PyTorch on this machine and\n"
        "write an energy table (and a latency table, <stem>.latency.json) in the format --energy-table\n"
        "reads. With --meter the power is measured; otherwise --watts (default 1) converts ns to pJ.",
        "examples:\n  greenshift calibrate --out calibrated.json\n"
        "  greenshift report runs/demo --energy-table calibrated.json",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="energy table to write, e.g. calibrated.json")
    p.add_argument("--watts", type=float, metavar="W", help="power to assume without a meter (default: 1)")
    p.add_argument("--meter", choices=METERS, help="measure the power with this energy meter")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads while timing (default: torch's)")
    p.add_argument(
        "--rounds", type=int, default=15, metavar="N", help="interleaved timing rounds (default: 15)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=cmd_calibrate)


# --------------------------------------------------------------------------------------------------
# settings from flags, config files and presets
# --------------------------------------------------------------------------------------------------
def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _to_int(key: str, value: Any, origin: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{origin}: {key} must be an integer, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: {key} must be an integer, got {value!r}") from None
    if not number.is_integer():
        raise ConfigError(f"{origin}: {key} must be an integer, got {value!r}")
    return int(number)


def _to_float(key: str, value: Any, origin: str) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: {key} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{origin}: {key} must be a finite number, got {value!r}")
    return number


def _to_bool(key: str, value: Any, origin: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "yes", "on", "1"}:
        return True
    if text in {"false", "no", "off", "0"}:
        return False
    raise ConfigError(f"{origin}: {key} must be true or false, got {value!r}")


def _to_str(key: str, value: Any, origin: str) -> str:
    if isinstance(value, (Mapping, list, tuple)) or value is None:
        raise ConfigError(f"{origin}: {key} must be a single value, got {value!r}")
    return str(value)


def _to_names(key: str, value: Any, origin: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"{origin}: {key} must be a comma-separated list, got {value!r}")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _to_floats(key: str, value: Any, origin: str) -> tuple[float, ...]:
    return tuple(_to_float(key, item, origin) for item in _to_names(key, value, origin))


def _to_assignments(key: str, value: Any, origin: str) -> dict[str, Any]:
    """``set``/``range``: a mapping, or ``key=value`` strings (the command line's form)."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"{origin}: {key} must be a mapping or a list of key=value, got {value!r}")
    parsed: dict[str, Any] = {}
    for item in items:
        name, sep, text = str(item).partition("=")
        if not sep or not name.strip() or not text.strip():
            raise ConfigError(f"{origin}: {_flag(key)} expects key=value, got {item!r}")
        parsed[name.strip()] = text.strip()
    return parsed


def _choice(choices: Sequence[str]) -> Callable[[str, Any, str], str]:
    def convert(key: str, value: Any, origin: str) -> str:
        text = _to_str(key, value, origin)
        if text not in choices:
            raise ConfigError(f"{origin}: {key}={text!r} is not one of {', '.join(choices)}")
        return text

    return convert


def _search_optimizer(key: str, value: Any, origin: str) -> str:
    """``optimizer`` of ``greenshift search`` is the search optimiser; a training optimiser gets a hint."""
    text = _to_str(key, value, origin)
    if text not in SEARCH_OPTIMIZERS and text in TRAINING_OPTIMIZERS:
        raise ConfigError(
            f"{origin}: optimizer={text!r} is a training optimiser, but optimizer here is the search "
            f"optimiser ({', '.join(SEARCH_OPTIMIZERS)}); fix the training optimiser with set: {{optimizer: {text}}}"
        )
    return _choice(SEARCH_OPTIMIZERS)(key, value, origin)


_SEARCH_TYPES: dict[str, Callable[[str, Any, str], Any]] = {
    "dataset": _to_str,
    "backbone": _to_str,
    "out": _to_str,
    "data_dir": _to_str,
    "image_size": _to_int,
    "optimizer": _search_optimizer,
    "objectives": _to_names,
    "objective_weights": _to_floats,
    "trials": _to_int,
    "min_epochs": _to_int,
    "max_epochs": _to_int,
    "eta": _to_int,
    "walltime": _to_float,
    "max_total_epochs": _to_int,
    "workers": _to_int,
    "scheduler": _to_str,
    "threads_per_trial": _to_int,
    "seed": _to_int,
    "device": _to_str,
    "set": _to_assignments,
    "range": _to_assignments,
    "space": _to_str,
    "continue_promoted": _to_bool,
    "keep_models": _choice(KEEP_MODELS),
    "trial_timeout": _to_float,
    "energy_table": _to_str,
    "meter": _choice(METERS),
    "country": _to_str,
    "force_new": _to_bool,
    "verbose": _to_bool,
    "isolate_trials": _to_bool,
}

_TRAIN_TYPES: dict[str, Callable[[str, Any, str], Any]] = {
    "dataset": _to_str,
    "backbone": _to_str,
    "epochs": _to_int,
    "data_dir": _to_str,
    "image_size": _to_int,
    "device": _to_str,
    "seed": _to_int,
    "set": _to_assignments,
}


def _merge(
    layers: Sequence[tuple[str, Mapping[str, Any]]],
    types: Mapping[str, Callable[[str, Any, str], Any]],
    defaults: Mapping[str, Any],
) -> dict[str, Any]:
    """Merge ``(origin, values)`` layers, lowest precedence first; ``set``/``range`` merge key by key."""
    merged = dict(defaults)
    merged["set"] = dict(defaults.get("set", {}))
    if "range" in defaults:
        merged["range"] = dict(defaults["range"])
    for origin, values in layers:
        for key, value in values.items():
            if value is None:
                continue
            converted = types[key](key, value, origin)
            merged[key] = {**merged[key], **converted} if key in ("set", "range") else converted
    return merged


def _config_file_layer(
    path: str | None, allowed: Sequence[str], *, extra_ok: Sequence[str] = ()
) -> dict[str, Any]:
    """The settings of ``--config`` (keys in ``allowed``; ``extra_ok`` keys are passed on untouched)."""
    if path is None:
        return {}
    values = dict(load_config_file(path))
    # Paths in a config file name files next to it, wherever the command is run from.
    for key in _CONFIG_PATH_KEYS:
        value = values.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            values[key] = str(Path(path).parent / value)
    unknown = sorted(k for k in values if k not in allowed and k not in extra_ok)
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown key(s) {', '.join(map(str, unknown))}; valid: {', '.join([*allowed, *extra_ok])}"
        )
    return dict(values)


#: Config-file keys that name input files or folders: relative to the config file's folder. ``out``, the
#: run directory written, stays relative to the current directory like the --out flag.
_CONFIG_PATH_KEYS = ("data_dir", "space", "energy_table")


def _cli_layer(args: argparse.Namespace, keys: Sequence[str]) -> dict[str, Any]:
    """The flags given on the command line (``None`` for those left out)."""
    values = {key: getattr(args, key, None) for key in keys}
    if "set" in values:
        values["set"] = parse_assignments(values["set"])
    if "range" in values:
        values["range"] = _to_assignments("range", values["range"], "command line")
    return values


def _require(settings: Mapping[str, Any], keys: Sequence[str]) -> None:
    for key in keys:
        if settings.get(key) in (None, ""):
            raise ConfigError(f"{_flag(key)} is required (on the command line or in a --config file)")


def _config_from(fixed: Mapping[str, Any]) -> DSNNConfig:
    """The default configuration changed by ``fixed`` (validated, strings coerced)."""
    return DSNNConfig.from_dict({**DSNNConfig().to_dict(), **fixed})


def _check_depth(config: DSNNConfig, backbone: str) -> int:
    """Validate ``backbone`` and ``shift_depth`` before any data is loaded; returns the shifted layers."""
    from greenshift.models import get_model
    from greenshift.train import resolve_shift_depth

    return resolve_shift_depth(config, get_model(backbone, num_classes=10, in_channels=3), backbone)


# --------------------------------------------------------------------------------------------------
# output helpers
# --------------------------------------------------------------------------------------------------
def _console(*, stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Off a terminal rich assumes 80 columns, which wraps the wide tables in logs; COLUMNS still wins.
    width = None if stream.isatty() or "COLUMNS" in os.environ else 140
    return Console(stderr=stderr, highlight=False, width=width)


def _print_json(data: Any) -> None:
    print(json.dumps(jsonable(data), indent=2, allow_nan=False))


_SI_PREFIXES = ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"), (1e-15, "f"))


def _si(value: float, unit: str) -> str:
    if value == 0:
        return f"0 {unit}"
    for scale, prefix in _SI_PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.4g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _objective_text(name: str, value: Any) -> str:
    """An objective value with its unit (names carry units: docs/architecture.md)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    value = float(value)
    if name == "loss":
        return f"{value:.4f}"
    if name.endswith("_j"):
        return _si(value, "J")
    if name.endswith("_kg"):
        return _si(value * 1000.0, "g")
    if name.endswith("_ms"):
        return f"{value:.4g} ms"
    if name.endswith("_bits"):
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f} %"


def _config_value(config: Mapping[str, Any], key: str) -> str:
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


def _front_table(title: str, rows: Sequence[Any], objectives: Sequence[str], default: Any | None) -> Any:
    """A table of trials (TrialRecord or report Entry): id, budget, objectives, key hyperparameters.

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
            *[_objective_text(n, row.objectives.get(n)) for n in objectives],
            *[_config_value(row.config, k) for k in KEY_HYPERPARAMETERS],
        )

    ordered = sorted(rows, key=lambda r: ([float(r.objectives[n]) for n in objectives], r.trial_id))
    for row in ordered:
        add(row)
    if default is not None and all(row.trial_id != default_id for row in rows):
        table.add_section()
        add(default)
    return table


def _key_value_table(title: str, values: Mapping[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("key")
    table.add_column("value")
    for key, value in values.items():
        table.add_row(str(key), value if isinstance(value, str) else json.dumps(jsonable(value)))
    return table


def _record_json(record: Any) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "trial_id": record.trial_id,
        "budget_epochs": record.budget_epochs,
        "objectives": dict(record.objectives),
        "config": dict(record.config),
        "is_default": bool(record.is_default),
        "checkpoint": record.checkpoint,
    }


def _beats(candidate: Mapping[str, float], reference: Mapping[str, float], objectives: Sequence[str]) -> bool:
    """Strictly better than ``reference`` in every objective."""
    return all(float(candidate[n]) < float(reference[n]) for n in objectives)


# --------------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------------
def cmd_datasets(args: argparse.Namespace) -> int:
    """``greenshift datasets``."""
    from greenshift.data import list_datasets

    infos = list_datasets()
    if args.json:
        _print_json(
            [
                {
                    "name": i.name,
                    "description": i.description,
                    "needs_data_dir": i.needs_data_dir,
                    "default_image_size": i.default_image_size,
                }
                for i in infos
            ]
        )
        return 0
    from rich.table import Table

    table = Table(title="data sets", title_justify="left")
    for column in ("name", "image size", "needs --data-dir", "description"):
        table.add_column(column)
    for i in infos:
        table.add_row(i.name, str(i.default_image_size), "yes" if i.needs_data_dir else "no", i.description)
    _console().print(table)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """``greenshift models``."""
    from greenshift.models import list_models, model_info

    infos = [model_info(name) for name in list_models(include_tiny=args.all)]
    if args.json:
        _print_json([{"name": i.name, "description": i.description, "tiny": i.tiny} for i in infos])
        return 0
    from rich.table import Table

    table = Table(title="backbones", title_justify="left")
    table.add_column("name")
    table.add_column("description")
    for i in infos:
        table.add_row(i.name + (" (test only)" if i.tiny else ""), i.description)
    console = _console()
    console.print(table)
    if not args.all:
        console.print("tiny test-only variants are hidden; --all shows them")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``greenshift train``: one configuration, a progress bar per epoch, then accuracy and time."""
    origin = f"config file {args.config}"
    file_values = _config_file_layer(args.config, list(TRAIN_DEFAULTS), extra_ok=_CONFIG_FIELDS)
    if "optimizer" in file_values:
        # At the top of a config file, optimizer is the search optimiser (greenshift search --optimizer);
        # one meaning per key, so the training optimiser of train goes under set: as in a search file.
        raise ConfigError(
            f"{origin}: a top-level optimizer means the search optimiser of greenshift search; "
            f"put the training optimiser under set: (set: {{optimizer: {file_values['optimizer']}}})"
        )
    file_layer = {k: v for k, v in file_values.items() if k in TRAIN_DEFAULTS}
    # Hyperparameters may stand at the top level of the file or under "set" (which wins).
    hyperparameters = {k: v for k, v in file_values.items() if k in _CONFIG_FIELDS}
    file_layer["set"] = {**hyperparameters, **_to_assignments("set", file_values.get("set") or {}, origin)}
    settings = _merge(
        [(origin, file_layer), ("command line", _cli_layer(args, list(TRAIN_DEFAULTS)))],
        _TRAIN_TYPES,
        TRAIN_DEFAULTS,
    )
    _require(settings, ("dataset", "backbone", "epochs"))
    if settings["epochs"] < 1:
        raise ConfigError(f"--epochs must be at least 1, got {settings['epochs']}")
    config = _config_from(settings["set"])
    depth = _check_depth(config, settings["backbone"])

    from greenshift.data import load_dataset
    from greenshift.train import resolve_device, train

    device = resolve_device(settings["device"])
    dataset = load_dataset(
        settings["dataset"], data_dir=settings["data_dir"], image_size=settings["image_size"]
    )
    started = time.perf_counter()
    with _EpochProgress(settings["epochs"]) as progress:
        result = train(
            config,
            dataset,
            settings["epochs"],
            device,
            settings["seed"],
            backbone=settings["backbone"],
            progress=progress.update,
        )
    wall = time.perf_counter() - started
    final_config = {**config.to_dict(), "shift_depth": depth}
    summary = {
        "dataset": dataset.name,
        "backbone": settings["backbone"],
        "epochs": settings["epochs"],
        "epochs_completed": result.epochs_completed,
        "device": str(device),
        "seed": settings["seed"],
        "status": result.status,
        "message": result.message,
        "val_accuracy": result.final_accuracy,
        "val_cross_entropy": result.final_cross_entropy,
        "train_time_s": result.train_time_s,
        "wall_time_s": wall,
        "config": final_config,
        "history": {
            "val_accuracy": result.val_accuracy,
            "val_cross_entropy": result.val_cross_entropy,
            "train_cross_entropy": result.train_cross_entropy,
        },
    }
    if args.json:
        _print_json(summary)
        return 0
    console = _console()
    if result.status != "ok":
        console.print(f"[yellow]{result.message}")
    accuracy = result.final_accuracy
    console.print(
        f"{dataset.name} / {settings['backbone']}: validation accuracy "
        f"{'-' if math.isnan(accuracy) else f'{accuracy:.4f}'} after {result.epochs_completed} epoch(s) "
        f"on {device} (validation cross-entropy {result.final_cross_entropy:.4f})"
    )
    console.print(f"training time {result.train_time_s:.1f} s, wall time {wall:.1f} s")
    console.print(_key_value_table("configuration", final_config))
    return 0


class _EpochProgress:
    """A rich progress bar on stderr, advanced by ``train``'s per-epoch callback."""

    def __init__(self, epochs: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=_console(stderr=True),
        )
        self._task = self._progress.add_task("train", total=epochs, status="")

    def __enter__(self) -> _EpochProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Called after each epoch with its validation accuracy and loss."""
        status = f"val acc {metrics['val_accuracy']:.4f} | val cross-entropy {metrics['val_cross_entropy']:.4f} | lr {metrics['lr']:.3g}"
        self._progress.update(self._task, completed=epoch, status=status)


def cmd_profile(args: argparse.Namespace) -> int:
    """``greenshift profile``: per-layer modelled energy of an untrained configuration."""
    config = _config_from(parse_assignments(args.set))
    _check_depth(config, args.backbone)

    from greenshift.objectives import load_energy_table, profile_model, profile_rows
    from greenshift.train import build_model

    table = load_energy_table(args.energy_table)
    shape, num_classes, source = _profile_input(args)
    model = build_model(config, args.backbone, num_classes, shape[0])
    profile = profile_model(model, shape, energy_table=table)
    totals = profile.totals()
    if args.json:
        _print_json(
            {
                "backbone": args.backbone,
                "dataset": source,
                "config": config.to_dict(),
                "layers": profile_rows(profile),
                "totals": totals,
            }
        )
        return 0
    from rich.table import Table

    out = Table(
        title=f"{args.backbone} on {source} {shape}: modelled energy per image ({profile.table_name})",
        title_justify="left",
    )
    for column, justify in (
        ("layer", "left"),
        ("op", "left"),
        ("kind", "left"),
        ("MACs", "right"),
        ("energy", "right"),
        ("share", "right"),
        ("weight bits", "right"),
    ):
        out.add_column(column, justify=justify)  # type: ignore[arg-type]
    for layer in profile:
        out.add_row(
            layer.name,
            layer.op,
            layer.kind,
            f"{layer.macs:,}",
            _si(layer.energy_j, "J"),
            f"{100 * layer.share:.1f} %",
            "-" if layer.weight_bits is None else str(layer.weight_bits),
        )
    out.add_section()
    out.add_row("total", "", "", f"{totals['macs']:,}", _si(totals["energy_j"], "J"), "100.0 %", "")
    console = _console()
    console.print(out)
    console.print(
        f"compute {_si(totals['compute_j'], 'J')}, weight memory {_si(totals['weight_memory_j'], 'J')}, "
        f"activation memory {_si(totals['activation_memory_j'], 'J')}; "
        f"shift layers do {totals['shift_macs']:,} of {totals['macs']:,} MACs "
        f"and take {100 * totals['shift_energy_share']:.1f} % of the energy"
    )
    return 0


def _profile_input(args: argparse.Namespace) -> tuple[tuple[int, int, int], int, str]:
    """``(input shape, classes, what they came from)`` of ``greenshift profile``.

    --input-shape needs no files; --dataset loads the data set (its files, for those that need them).
    """
    if (args.dataset is None) == (args.input_shape is None):
        raise ConfigError("give either --dataset or --input-shape C,H,W (the shape needs no data files)")
    if args.input_shape is not None:
        if args.image_size is not None or args.data_dir is not None:
            raise ConfigError("--image-size and --data-dir go with --dataset, not with --input-shape")
        parts = [
            _to_int("--input-shape", v, "command line")
            for v in _to_names("--input-shape", args.input_shape, "")
        ]
        if len(parts) != 3 or min(parts) < 1:
            raise ConfigError(
                f"--input-shape expects three positive integers C,H,W, got {args.input_shape!r}"
            )
        classes = 10 if args.classes is None else args.classes
        if classes < 2:
            raise ConfigError(f"--classes must be at least 2, got {classes}")
        return (parts[0], parts[1], parts[2]), classes, "input " + "x".join(map(str, parts))
    if args.classes is not None:
        raise ConfigError("--classes goes with --input-shape; a data set knows its classes")
    from greenshift.data import load_dataset

    dataset = load_dataset(args.dataset, data_dir=args.data_dir, image_size=args.image_size)
    shape = (dataset.in_channels, dataset.image_size, dataset.image_size)
    return shape, dataset.num_classes, dataset.name


def search_settings(args: argparse.Namespace) -> Any:
    """The :class:`~greenshift.search.SearchSettings` of a ``greenshift search`` command line."""
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if args.preset:
        layers.append((f"preset {args.preset}", PRESETS[args.preset]))
    if args.config:
        layers.append((f"config file {args.config}", _config_file_layer(args.config, list(SEARCH_DEFAULTS))))
    layers.append(("command line", _cli_layer(args, list(SEARCH_DEFAULTS))))
    merged = _merge(layers, _SEARCH_TYPES, SEARCH_DEFAULTS)
    _require(merged, ("dataset", "backbone", "out"))

    from greenshift.objectives import check_objectives
    from greenshift.search import SearchSettings

    merged["objectives"] = tuple(check_objectives(list(merged["objectives"])))
    if not merged["scheduler"]:
        # With --scheduler the trials run elsewhere, so the device is only checked locally.
        from greenshift.train import resolve_device

        resolve_device(merged["device"])
    return SearchSettings(**{SEARCH_FIELDS[key]: value for key, value in merged.items()})


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
    settings = search_settings(args)

    from greenshift.search import DSNNSearch
    from greenshift.search import run_trial as default_trial
    from greenshift.store import failure_groups

    progress = _TrackingProgress()
    search = DSNNSearch(settings, trial_function=_trial_function or default_trial, progress=progress)
    try:
        result = search.run()
    finally:
        progress.close()
    objectives = list(result.objectives)
    default = result.default
    beating = [
        r
        for r in result.pareto
        if default is not None and _beats(r.objectives, default.objectives, objectives)
    ]
    finished = len(result.completed)
    resumed = progress.done_at_start or 0
    failures = failure_groups(result.trials)
    code = 130 if search.stop_requested else 0
    if args.json:
        _print_json(
            {
                "run_dir": str(result.run_dir),
                "stop_reason": result.stop_reason,
                "objectives": objectives,
                "max_epochs": result.max_epochs,
                "trials_finished": finished,
                "trials_resumed": resumed,
                "trials_new": finished - resumed,
                "pareto": [_record_json(r) for r in result.pareto],
                "default": _record_json(default),
                "baseline_outside_space": result.baseline_outside,
                "beat_default": len(beating),
                "failures": [group.to_dict() for group in failures],
                "stopped_by_user": search.stop_requested,
            }
        )
        return code
    console = _console()
    if resumed:
        console.print(
            f"resumed {result.run_dir}: {resumed} trial(s) were already done, {finished - resumed} new"
        )
    console.print(
        f"{finished} trial(s) finished in {result.run_dir}"
        + (f"; {result.stop_reason}" if result.stop_reason else "")
    )
    if result.pareto:
        console.print(
            _front_table(
                f"Pareto front at {result.max_epochs} epochs ({len(result.pareto)} configurations; * = default)",
                result.pareto,
                objectives,
                default,
            )
        )
    else:
        console.print("no trial finished at the full budget yet: there is no Pareto front")
    if default is None:
        console.print("the default configuration has no result at the full budget: nothing to compare with")
    else:
        values = ", ".join(f"{n} {_objective_text(n, default.objectives[n])}" for n in objectives)
        console.print(f"default configuration (trial {default.trial_id}): {values}")
        console.print(
            f"{len(beating)} of {len(result.pareto)} front configurations beat the default on every objective"
        )
    _print_baseline_outside(console, result.baseline_outside)
    _print_failures(console, failures, str(result.run_dir))
    console.print(f"next: greenshift report {result.run_dir}")
    return code


def _print_baseline_outside(console: Any, outside: Mapping[str, str]) -> None:
    """Say prominently when the baseline lies outside the searched space (--range, --space)."""
    from greenshift.report.data import baseline_outside_text

    if outside:
        console.print(f"[yellow]{baseline_outside_text(outside)}")


def _print_failures(console: Any, failures: Sequence[Any], run_dir: str) -> None:
    """Failed trials grouped by their error, the most frequent first."""
    if not failures:
        return
    total = sum(group.count for group in failures)
    console.print(f"[red]{total} trial(s) failed:")
    for group in failures:
        ids = ", ".join(str(i) for i in group.trial_ids[:8]) + (" ..." if len(group.trial_ids) > 8 else "")
        console.print(f"  {group.count} x {'/'.join(group.statuses)}: {group.error} (trials {ids})")
    console.print(f"  every failed trial with its error: greenshift trials {run_dir} --failed")


def cmd_trials(args: argparse.Namespace) -> int:
    """``greenshift trials``: every trial of a run, filtered, as a table, JSON or CSV."""
    from greenshift.store import RunStore, error_headline

    wanted = set(_to_names("--status", args.status, "command line")) if args.status else None
    unknown = sorted((wanted or set()) - set(TRIAL_STATUSES))
    if unknown:
        raise ConfigError(f"--status {', '.join(unknown)}: not a status; valid: {', '.join(TRIAL_STATUSES)}")
    if args.failed:
        wanted = (wanted or set(FAILED)) & set(FAILED)
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
        _print_json([r.to_dict() for r in records])
        return 0
    columns = ["trial", "default", "status", "budget_epochs", *objectives, "duration_s", "error"]
    rows = [
        [
            r.trial_id,
            "yes" if r.is_default else "",
            r.status.value,
            f"{r.budget_epochs:g}",
            *[r.objectives.get(n) for n in objectives],
            None if r.duration_s is None else round(float(r.duration_s), 3),
            error_headline(r.error),
        ]
        for r in records
    ]
    if args.csv:
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
        return 0
    from rich.table import Table

    table = Table(title=f"{len(records)} trial(s) of {args.run_dir}", title_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column in ("status", "error") else "right")
    for row in rows:
        cells = [str(v) for v in row[:4]]
        cells += [
            _objective_text(n, v) for n, v in zip(objectives, row[4 : 4 + len(objectives)], strict=True)
        ]
        cells += ["-" if row[-2] is None else f"{row[-2]:.1f} s", row[-1] or ""]
        table.add_row(*cells)
    _console().print(table)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``greenshift report``: write the report files and print the headline figures."""
    from greenshift.report import add_crosscheck, load_report, report_json, write_report

    crosscheck: bool | dict[str, Any] = False
    if not args.no_crosscheck:
        # Re-measuring a kept model takes seconds to a minute per model; the result is cached in the run.
        progress = None if args.json else _console().print
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
        _print_json(report_json(report))
        return 0
    _print_report(report, paths, args.run_dir, remeasure=args.remeasure)
    return 0


def _print_report(report: Any, paths: Mapping[str, Path], run_dir: str, *, remeasure: bool = False) -> None:
    console = _console()
    names = list(report.objective_names)
    meta = " / ".join(str(report.meta[k]) for k in ("dataset", "backbone", "optimizer") if report.meta.get(k))
    counts = ", ".join(f"{count} {status}" for status, count in sorted(report.status_counts.items()))
    console.print(f"[bold]{run_dir}[/bold] {meta}: {counts}; {report.total_epochs:g} epochs in all")
    from greenshift.report.data import baseline_outside_text

    if report.baseline_outside:
        console.print(f"[yellow]{baseline_outside_text(report.baseline_outside)}")
    console.print(
        _front_table(
            f"Pareto front at {report.max_budget:g} epochs ({len(report.front)} configurations; * = default)",
            report.front,
            names,
            report.default,
        )
    )
    if report.default is None:
        console.print("no default configuration at the full budget: no improvement figures")
    else:
        values = ", ".join(f"{n} {_objective_text(n, report.default.objectives[n])}" for n in names)
        console.print(f"default configuration (trial {report.default.trial_id}): {values}")
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
            console.print(f"  {line}")
    ref = report.reference_point
    ref_values = ", ".join(f"{n} {_objective_text(n, ref.values.get(n))}" for n in names)
    console.print(
        f"hypervolume {report.hypervolume:.4g} (reference point {ref_values}: {ref.rule}"
        + ("" if ref.comparable else "; not comparable between runs")
        + ")"
    )
    if report.knee is not None:
        console.print(f"knee of the front: trial {report.knee.trial_id}")
    importance = report.importance
    for objective in importance.values:
        # Only hyperparameters above the random probe's importance: the others are indistinguishable from noise.
        floor = importance.noise_floor.get(objective)
        if floor is None:  # no analysis ran (too few configurations, nothing varies): no figures to show
            console.print(f"importance for {objective}: not estimated")
            continue
        top = list(importance.reliable_values(objective).items())[:3]
        console.print(
            f"importance for {objective}: "
            + (", ".join(f"{k} {v:.2f}" for k, v in top) or "nothing above noise")
            + f" (noise floor {floor:.2f})"
            + (" (only the hyperparameters it depends on)" if importance.excluded.get(objective) else "")
        )
    if not importance.reliable:
        console.print(f"[yellow]importance is not reliable: {importance.note}")
    if report.crosscheck is not None:
        console.print(f"modelled vs measured energy: {report.crosscheck.trust.statement}")
        if any(r.energy_measured_j is None for r in report.crosscheck.rows) and not remeasure:
            console.print(
                "  some models have no measured energy yet: 'greenshift report --remeasure' measures them "
                "(seconds to a minute per model, cached in the run)"
            )
    _print_failures(console, report.failures, run_dir)
    console.print("files: " + ", ".join(str(p) for p in paths.values()))


def _headline_text(headline: Any, condition: str) -> str:
    return (
        f"{headline.objective} {_percent(headline.percent_change)} vs the default "
        f"({_objective_text(headline.objective, headline.value)} instead of "
        f"{_objective_text(headline.objective, headline.default_value)}), trial {headline.trial_id}, {condition}"
    )


def cmd_pick(args: argparse.Namespace) -> int:
    """``greenshift pick``: one configuration of the front by a bound or the knee."""
    from greenshift.report import load_report, pick

    report = load_report(args.run_dir)
    chosen = pick(
        report,
        max_loss=args.max_loss,
        max_energy=args.max_energy,
        energy_objective=args.energy_objective,
        knee=args.knee,
    )
    if args.json:
        _print_json(
            {
                "trial_id": chosen.trial_id,
                "reason": chosen.reason,
                "objectives": chosen.objectives,
                "config": chosen.config,
            }
        )
        return 0
    console = _console()
    values = ", ".join(f"{n} {_objective_text(n, v)}" for n, v in chosen.objectives.items())
    console.print(f"trial {chosen.trial_id} ({chosen.reason}): {values}")
    console.print(_key_value_table("configuration", chosen.config))
    console.print(
        f"export it with: greenshift export {args.run_dir} --trial {chosen.trial_id} --out model.pt"
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``greenshift compare``: hypervolume over budget and fronts of several runs."""
    from greenshift.report import compare_runs, load_report, write_comparison

    names = _run_names(args.run_dirs)
    comparison = compare_runs(
        [(name, load_report(path)) for name, path in zip(names, args.run_dirs, strict=True)]
    )
    paths = write_comparison(comparison, args.out)
    runs = [
        {
            "name": run.name,
            "run_dir": path,
            "final_hypervolume": run.final_hypervolume,
            "trials": run.n_trials,
            "epochs": run.epochs,
            "front_size": len(run.report.front),
        }
        for run, path in zip(comparison.runs, args.run_dirs, strict=True)
    ]
    if args.json:
        _print_json(
            {
                "objectives": list(comparison.objective_names),
                "reference_point": comparison.reference_point,
                "comparable": comparison.comparable,
                "runs": runs,
                "files": {k: str(v) for k, v in paths.items()},
            }
        )
        return 0
    from rich.table import Table

    table = Table(title="runs", title_justify="left")
    for column, justify in (
        ("run", "left"),
        ("trials", "right"),
        ("epochs", "right"),
        ("front", "right"),
        ("hypervolume", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for run in runs:
        table.add_row(
            run["name"],
            str(run["trials"]),
            f"{run['epochs']:g}",
            str(run["front_size"]),
            f"{run['final_hypervolume']:.4g}",
        )
    console = _console()
    console.print(table)
    ref = ", ".join(f"{n} {_objective_text(n, v)}" for n, v in comparison.reference_point.items())
    console.print(f"common reference point: {ref}")
    if not comparison.comparable:
        console.print("[yellow]the runs' reference points differ: hypervolumes are indicative only")
    console.print("files: " + ", ".join(str(p) for p in paths.values()))
    return 0


def _run_names(run_dirs: Sequence[str]) -> list[str]:
    """Short names of runs: folder names, the full paths where two share one."""
    short = [Path(p).resolve().name or str(p) for p in run_dirs]
    return [name if short.count(name) == 1 else str(path) for name, path in zip(short, run_dirs, strict=True)]


def cmd_export(args: argparse.Namespace) -> int:
    """``greenshift export``: the model of one trial as a compact model file."""
    from greenshift.export import export_trial

    if args.format == "onnx":
        return _export_onnx(args)

    info = export_trial(
        args.run_dir,
        args.trial,
        args.out,
        retrain_if_missing=not args.no_retrain,
        data_dir=args.data_dir,
        device=args.device,
    )
    provenance = info.meta.provenance
    if args.json:
        _print_json(
            {
                "path": str(info.path),
                "trial_id": info.trial_id if info.trial_id is not None else provenance.get("trial_id"),
                "source": info.source,
                "size_bytes": info.size_bytes,
                "float_size_bytes": info.float_size_bytes,
                "packed_shift_bytes": info.packed_shift_bytes,
                "compression": info.compression,
                "backbone": info.meta.backbone,
                "dataset": info.meta.dataset,
                "config": info.meta.config,
                "objectives": info.meta.objectives,
            }
        )
        return 0
    if info.source == "retrained":
        source = f"retrained ({provenance.get('budget_epochs', 0):g} epochs, seed {provenance.get('seed')})"
    else:
        source = "from the model the search kept"
    console = _console()
    console.print(f"exported trial {args.trial} of {args.run_dir} to {info.path}, {source}")
    console.print(
        f"file size {_bytes(info.size_bytes)} vs {_bytes(info.float_size_bytes)} for the float32 weights "
        f"(compression {info.compression:.1f}x; {_bytes(info.packed_shift_bytes)} of packed shift weights)"
    )
    console.print(f"evaluate it with: greenshift evaluate {info.path} --split test")
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    """``greenshift export --format onnx``: the trial as an ONNX model, its float twin and its agreement."""
    from greenshift.export import export_trial_onnx

    info, source = export_trial_onnx(
        args.run_dir,
        args.trial,
        args.out,
        retrain_if_missing=not args.no_retrain,
        data_dir=args.data_dir,
        device=args.device,
    )
    agreement = info.agreement.to_dict() if info.agreement is not None else None
    if args.json:
        _print_json(
            {
                "path": str(info.path),
                "float_path": str(info.float_path) if info.float_path else None,
                "trial_id": args.trial,
                "source": source.source,
                "size_bytes": info.size_bytes,
                "float_size_bytes": info.float_size_bytes,
                "weight_types": info.weight_types,
                "layers": info.layers,
                "agreement": agreement,
            }
        )
        return 0
    console = _console()
    console.print(f"exported trial {args.trial} of {args.run_dir} to {info.path} ({_bytes(info.size_bytes)})")
    if info.float_path is not None and info.float_size_bytes is not None:
        console.print(f"float twin {info.float_path} ({_bytes(info.float_size_bytes)})")
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(info.weight_types.items()))
    console.print(f"shift layers by weight type: {kinds or 'none'}")
    if agreement is not None:
        console.print(
            f"onnxruntime vs simulated model on {agreement['n']} {agreement['split']} images: "
            f"{100 * agreement['agreement']:.2f} % same predictions, largest logit difference "
            f"{agreement['max_logit_diff']:.3g}; accuracy {agreement['accuracy_onnx']:.4f} "
            f"(simulated {agreement['accuracy_simulated']:.4f})"
        )
    console.print(f"evaluate it with: greenshift evaluate {info.path} --split test")
    return 0


def _bytes(count: int) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``greenshift evaluate``: accuracy of an exported model."""
    from greenshift.export import evaluate_exported, read_exported

    if Path(args.model).suffix == ".onnx":
        return _evaluate_onnx(args)
    dataset = args.dataset or read_exported(args.model)[0].dataset
    scores = evaluate_exported(
        args.model,
        args.dataset,
        data_dir=args.data_dir,
        integer=args.integer,
        split=args.split,
        device=args.device,
    )
    result = {
        **scores,
        "model": str(args.model),
        "dataset": dataset,
        "size_bytes": Path(args.model).stat().st_size,
    }
    if args.json:
        _print_json(result)
        return 0
    mode = "integer reference" if args.integer else "float simulation"
    _console().print(
        f"{args.model} ({_bytes(result['size_bytes'])}) on {dataset} {args.split} ({scores['n']} images, {mode}): "
        f"accuracy {scores['accuracy']:.4f}, cross-entropy {scores['cross_entropy']:.4f}"
    )
    return 0


def _evaluate_onnx(args: argparse.Namespace) -> int:
    """``greenshift evaluate model.onnx``: accuracy and latency in onnxruntime, next to the float twin."""
    from greenshift.export import evaluate_onnx

    if args.repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {args.repeats}")
    result = evaluate_onnx(
        args.model,
        dataset=args.dataset,
        data_dir=args.data_dir,
        split=args.split,
        float_path=args.float_model,
        repeats=args.repeats,
    )
    if args.json:
        _print_json(result)
        return 0
    console = _console()
    console.print(f"onnxruntime on {result['dataset']} {result['split']} ({result['n']} images)")
    for key in ("model", "float"):
        entry = result[key]
        if entry is None:
            console.print("no float twin found (pass --float-model)")
            continue
        times = ", ".join(f"batch {b} {v['median_ms']:.3g} ms" for b, v in entry["latency"].items())
        console.print(
            f"{entry['path']} ({_bytes(entry['size_bytes'])}): accuracy {entry['accuracy']:.4f}; median {times}"
        )
    if result["speedup"]:
        ratios = ", ".join(f"batch {b} {v:.2f}x" for b, v in result["speedup"].items())
        console.print(f"speed-up over the float model: {ratios}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``greenshift calibrate``: time the energy model's operations here and write the tables."""
    from greenshift.deploy.calibrate import calibrate

    meter = None
    if args.meter:
        from greenshift.objectives import choose_meter

        meter, _ = choose_meter(args.meter)
    result = calibrate(rounds=args.rounds, threads=args.threads, watts=args.watts, meter=meter)
    energy, latency = result.write(args.out)
    if args.json:
        _print_json(
            {
                "energy_table": str(energy),
                "latency_table": str(latency),
                "watts": result.watts,
                "power_source": result.power_source,
                "ns": result.ns,
            }
        )
        return 0
    console = _console()
    ns = result.ns
    console.print(
        f"per multiply-accumulate: float {2 * ns['fp_add'][32]:.4g} ns; shift "
        + ", ".join(f"{b} bits {2 * v:.4g} ns" for b, v in ns["shift"].items())
    )
    console.print(f"power {result.watts:.3g} W ({result.power_source})")
    console.print(f"wrote {energy} (pJ) and {latency} (ns); use them with --energy-table")
    return 0


__all__ = ["PRESETS", "build_parser", "main", "search_settings"]
