"""``greenshift train`` and ``greenshift profile``: one configuration, trained or priced."""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from typing import Any

from greenshift.cli.common import (
    SET_HELP,
    AddCommand,
    add_data_options,
    console,
    given,
    key_value_table,
    print_json,
    si,
    table,
)
from greenshift.config import DSNNConfig, parse_assignments
from greenshift.train.settings import TRAIN_KEYS, train_defaults


def add_commands(command: AddCommand) -> None:
    """Add ``train`` and ``profile``."""
    _add_train(command)
    _add_profile(command)


def _add_train(command: AddCommand) -> None:
    defaults = train_defaults()
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
    add_data_options(p)
    p.add_argument("--backbone", metavar="NAME", help="backbone (see 'greenshift models'); required")
    p.add_argument("--epochs", type=int, metavar="N", help="epochs to train; required")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--config", metavar="FILE", help="YAML/JSON file of settings and hyperparameters")
    p.add_argument(
        "--device", metavar="auto|cpu|cuda", help=f"device to train on (default: {defaults['device']})"
    )
    p.add_argument("--seed", type=int, metavar="S", help=f"random seed (default: {defaults['seed']})")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(handler=cmd_train)


def _add_profile(command: AddCommand) -> None:
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
    add_data_options(p, needed="or --input-shape")
    p.add_argument(
        "--input-shape",
        metavar="C,H,W",
        help="input shape instead of --dataset (channels, height, width), e.g. 3,32,32",
    )
    p.add_argument(
        "--classes", type=int, metavar="N", help="number of classes with --input-shape (default: 10)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument(
        "--energy-table", metavar="FILE", help="JSON energy table (default: the shipped 45 nm table)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=cmd_profile)


def cmd_train(args: argparse.Namespace) -> int:
    """``greenshift train``: one configuration, a progress bar per epoch, then accuracy and time."""
    from greenshift.train.settings import resolve_train_settings, run_training

    settings = resolve_train_settings(config_file=args.config, overrides=given(args, TRAIN_KEYS))
    progress = _EpochProgress(settings.epochs)
    try:
        run = run_training(settings, started=progress.start, progress=progress.update)
    finally:
        progress.stop()
    if args.json:
        print_json(run.to_dict())
        return 0
    result, out = run.result, console()
    if result.status != "ok":
        out.print(f"[yellow]{result.message}")
    accuracy = result.final_accuracy
    out.print(
        f"{run.dataset_name} / {settings.backbone}: validation accuracy "
        f"{'-' if math.isnan(accuracy) else f'{accuracy:.4f}'} after {result.epochs_completed} epoch(s) "
        f"on {run.device} (validation cross-entropy {result.final_cross_entropy:.4f})"
    )
    out.print(f"training time {result.train_time_s:.1f} s, wall time {run.wall_time_s:.1f} s")
    out.print(key_value_table("configuration", run.final_config))
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
            console=console(stderr=True),
        )
        self._task = self._progress.add_task("train", total=epochs, status="")
        self._started = False

    def start(self) -> None:
        """Show the bar (once the data set is loaded)."""
        self._started = True
        self._progress.start()

    def stop(self) -> None:
        """Hide the bar, if it was shown."""
        if self._started:
            self._progress.stop()

    def update(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Called after each epoch with its validation accuracy and loss."""
        status = f"val acc {metrics['val_accuracy']:.4f} | val cross-entropy {metrics['val_cross_entropy']:.4f} | lr {metrics['lr']:.3g}"
        self._progress.update(self._task, completed=epoch, status=status)


def cmd_profile(args: argparse.Namespace) -> int:
    """``greenshift profile``: per-layer modelled energy of an untrained configuration."""
    from greenshift.objectives import profile_configuration

    config = DSNNConfig().replace(**parse_assignments(args.set))
    profiled = profile_configuration(
        config,
        args.backbone,
        **given(args, ("dataset", "data_dir", "image_size", "input_shape", "classes", "energy_table")),
    )
    if args.json:
        print_json(profiled.to_dict())
        return 0
    profile, totals = profiled.profile, profiled.profile.totals()
    title = f"{args.backbone} on {profiled.source} {profiled.input_shape}: modelled energy per image ({profile.table_name})"
    out = console()
    out.print(table(title, _PROFILE_COLUMNS, _profile_rows(profile, totals)))
    out.print(
        f"compute {si(totals['compute_j'], 'J')}, weight memory {si(totals['weight_memory_j'], 'J')}, "
        f"activation memory {si(totals['activation_memory_j'], 'J')}; "
        f"shift layers do {totals['shift_macs']:,} of {totals['macs']:,} MACs "
        f"and take {100 * totals['shift_energy_share']:.1f} % of the energy"
    )
    return 0


_PROFILE_COLUMNS = [
    ("layer", "left"),
    ("op", "left"),
    ("kind", "left"),
    ("MACs", "right"),
    ("energy", "right"),
    ("share", "right"),
    ("weight bits", "right"),
]


def _profile_rows(profile: Any, totals: Mapping[str, Any]) -> list[tuple[str, ...] | None]:
    """One row per layer, ``None`` for the section line, then the total."""
    rows: list[tuple[str, ...] | None] = [
        (
            layer.name,
            layer.op,
            layer.kind,
            f"{layer.macs:,}",
            si(layer.energy_j, "J"),
            f"{100 * layer.share:.1f} %",
            "-" if layer.weight_bits is None else str(layer.weight_bits),
        )
        for layer in profile
    ]
    rows.append(None)
    rows.append(("total", "", "", f"{totals['macs']:,}", si(totals["energy_j"], "J"), "100.0 %", ""))
    return rows
