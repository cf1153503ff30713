"""``greenshift export``, ``evaluate`` and ``calibrate``: models as files, scored, and this machine priced."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from greenshift.cli.common import METERS, AddCommand, console, print_json, size_text
from greenshift.errors import ConfigError


def add_commands(command: AddCommand) -> None:
    """Add ``export``, ``evaluate`` and ``calibrate``."""
    _add_export(command)
    _add_evaluate(command)
    _add_calibrate(command)


def _add_export(command: AddCommand) -> None:
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


def _add_evaluate(command: AddCommand) -> None:
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


def _add_calibrate(command: AddCommand) -> None:
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


# -- export ----------------------------------------------------------------------------------------
def _retraining(args: argparse.Namespace) -> dict[str, Any]:
    """How to retrain a trial whose model the search did not keep."""
    return {"retrain_if_missing": not args.no_retrain, "data_dir": args.data_dir, "device": args.device}


def cmd_export(args: argparse.Namespace) -> int:
    """``greenshift export``: the model of one trial as a compact model file."""
    from greenshift.export import export_trial

    if args.format == "onnx":
        return _export_onnx(args)
    info = export_trial(args.run_dir, args.trial, args.out, **_retraining(args))
    provenance = info.meta.provenance
    if args.json:
        print_json(
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
    out = console()
    out.print(f"exported trial {args.trial} of {args.run_dir} to {info.path}, {source}")
    out.print(
        f"file size {size_text(info.size_bytes)} vs {size_text(info.float_size_bytes)} for the float32 weights "
        f"(compression {info.compression:.1f}x; {size_text(info.packed_shift_bytes)} of packed shift weights)"
    )
    out.print(f"evaluate it with: greenshift evaluate {info.path} --split test")
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    """``greenshift export --format onnx``: the trial as an ONNX model, its float twin and its agreement."""
    from greenshift.export import export_trial_onnx

    info, source = export_trial_onnx(args.run_dir, args.trial, args.out, **_retraining(args))
    agreement = info.agreement.to_dict() if info.agreement is not None else None
    if args.json:
        print_json(
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
    out = console()
    out.print(f"exported trial {args.trial} of {args.run_dir} to {info.path} ({size_text(info.size_bytes)})")
    if info.float_path is not None and info.float_size_bytes is not None:
        out.print(f"float twin {info.float_path} ({size_text(info.float_size_bytes)})")
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(info.weight_types.items()))
    out.print(f"shift layers by weight type: {kinds or 'none'}")
    if agreement is not None:
        out.print(
            f"onnxruntime vs simulated model on {agreement['n']} {agreement['split']} images: "
            f"{100 * agreement['agreement']:.2f} % same predictions, largest logit difference "
            f"{agreement['max_logit_diff']:.3g}; accuracy {agreement['accuracy_onnx']:.4f} "
            f"(simulated {agreement['accuracy_simulated']:.4f})"
        )
    out.print(f"evaluate it with: greenshift evaluate {info.path} --split test")
    return 0


# -- evaluate --------------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    """``greenshift evaluate``: accuracy of an exported model."""
    from greenshift.export import evaluate_exported
    from greenshift.export.format import read_exported

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
        print_json(result)
        return 0
    mode = "integer reference" if args.integer else "float simulation"
    console().print(
        f"{args.model} ({size_text(result['size_bytes'])}) on {dataset} {args.split} ({scores['n']} images, {mode}): "
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
        print_json(result)
        return 0
    out = console()
    out.print(f"onnxruntime on {result['dataset']} {result['split']} ({result['n']} images)")
    for key in ("model", "float"):
        entry = result[key]
        if entry is None:
            out.print("no float twin found (pass --float-model)")
            continue
        times = ", ".join(f"batch {b} {v['median_ms']:.3g} ms" for b, v in entry["latency"].items())
        out.print(
            f"{entry['path']} ({size_text(entry['size_bytes'])}): accuracy {entry['accuracy']:.4f}; median {times}"
        )
    if result["speedup"]:
        ratios = ", ".join(f"batch {b} {v:.2f}x" for b, v in result["speedup"].items())
        out.print(f"speed-up over the float model: {ratios}")
    return 0


# -- calibrate -------------------------------------------------------------------------------------
def cmd_calibrate(args: argparse.Namespace) -> int:
    """``greenshift calibrate``: time the energy model's operations here and write the tables."""
    from greenshift.deploy.calibrate import calibrate

    meter = None
    if args.meter:
        from greenshift.objectives.meters import choose_meter

        meter, _ = choose_meter(args.meter)
    result = calibrate(rounds=args.rounds, threads=args.threads, watts=args.watts, meter=meter)
    energy, latency = result.write(args.out)
    if args.json:
        print_json(
            {
                "energy_table": str(energy),
                "latency_table": str(latency),
                "watts": result.watts,
                "power_source": result.power_source,
                "ns": result.ns,
            }
        )
        return 0
    out, ns = console(), result.ns
    out.print(
        f"per multiply-accumulate: float {2 * ns['fp_add'][32]:.4g} ns; shift "
        + ", ".join(f"{b} bits {2 * v:.4g} ns" for b, v in ns["shift"].items())
    )
    out.print(f"power {result.watts:.3g} W ({result.power_source})")
    out.print(f"wrote {energy} (pJ) and {latency} (ns); use them with --energy-table")
    return 0
