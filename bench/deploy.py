"""Deployment speed: float vs DSNN ResNet20 in onnxruntime and in eager PyTorch, batch 1 and 64.

Variants (ResNet20, 3x32x32 inputs, freshly initialised: latency does not depend on the weights'
values, and the reported weight types are those of the initial weights):

- ``float``: the float network, exported by ``greenshift.deploy.onnx.to_onnx_bytes`` (batch norm folded);
- DSNNs: DeepShift-Q and -PS at a few weight bits, activation widths (8 bits: int8; 16: int16; 32:
  float32 rounding) and shift depths (20 = every layer), exported with integer shift weights.

Each variant is timed in onnxruntime (CPU, greenshift's session: ``session.disable_quant_qdq``, see
``greenshift.deploy.onnx.FAST_SESSION_CONFIG``; and once without it for the headline DSNN) and in eager
PyTorch (the simulated model under ``torch.no_grad``), at batch 1 and 64. Rounds are interleaved (one
run of every variant per round, order rotating) so load from other processes hits all alike; the
medians are turned into ratios to the float model in the same runtime.

A kernel section times one ResNet20 stage-1 convolution (16->16, 3x3, 32x32, batch 64) as onnxruntime's
float ``Conv``, ``ConvInteger`` (int8 x int8 -> exact int32, what an exact integer shift layer needs)
and ``QLinearConv`` (uint8 x int8 -> uint8, requantised per tensor), to show what limits an integer
DSNN on this CPU.

Run ``python bench/deploy.py`` (a few minutes) or ``--quick``; writes ``bench/results/deploy.json``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from common import add_threads_flag, write_result
from greenshift.config import DSNNConfig
from greenshift.deploy.calibrate import median_ns
from greenshift.deploy.onnx import INPUT_NAME, session, to_onnx_bytes
from greenshift.models import get_model
from greenshift.train import build_model

THREADS = 2
SHAPE = (3, 32, 32)
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
BATCHES = (1, 64)
# name -> DSNNConfig settings (None: the float network)
VARIANTS: dict[str, dict[str, Any] | None] = {
    "float": None,
    "Q w4 a8 depth20": {
        "shift_type": "Q",
        "weight_bits": 4,
        "activation_integer_bits": 4,
        "activation_fraction_bits": 4,
    },
    "Q w4 a8 depth10": {
        "shift_type": "Q",
        "weight_bits": 4,
        "shift_depth": 10,
        "activation_integer_bits": 4,
        "activation_fraction_bits": 4,
    },
    "PS w5 a8 depth20": {
        "shift_type": "PS",
        "weight_bits": 5,
        "activation_integer_bits": 4,
        "activation_fraction_bits": 4,
    },
    "Q w4 a16 depth20": {
        "shift_type": "Q",
        "weight_bits": 4,
        "activation_integer_bits": 8,
        "activation_fraction_bits": 8,
    },
    "PS w5 a32 depth20": {
        "shift_type": "PS",
        "weight_bits": 5,
        "activation_integer_bits": 16,
        "activation_fraction_bits": 16,
    },
}
HEADLINE = "Q w4 a8 depth20"


def _model(settings: dict[str, Any] | None) -> torch.nn.Module:
    torch.manual_seed(0)
    if settings is None:
        return get_model("resnet20", num_classes=10, in_channels=3).eval()
    return build_model(DSNNConfig(**settings), "resnet20", 10, 3).eval()


def _interleaved(fns: dict[str, Any], rounds: int) -> dict[str, float]:
    """Median milliseconds of each function over interleaved rounds (greenshift calibrate's timer)."""
    return median_ns(fns, dict.fromkeys(fns, 1e6), rounds)


def _kernels(rounds: int, threads: int) -> dict[str, Any]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    n, c, hw = 64, 16, 32
    weight = rng.integers(-64, 65, (c, c, 3, 3)).astype(np.int8)

    def build(nodes, x_type, y_type, inits):
        graph = helper.make_graph(
            nodes,
            "kernel",
            [helper.make_tensor_value_info("x", x_type, [n, c, hw, hw])],
            [helper.make_tensor_value_info("y", y_type, [n, c, hw, hw])],
            inits,
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]).SerializeToString()

    pads = {"pads": [1, 1, 1, 1]}
    models = {
        "float Conv": (
            build(
                [helper.make_node("Conv", ["x", "w"], ["y"], **pads)],
                TensorProto.FLOAT,
                TensorProto.FLOAT,
                [numpy_helper.from_array(weight.astype(np.float32), "w")],
            ),
            rng.standard_normal((n, c, hw, hw)).astype(np.float32),
        ),
        "ConvInteger int8": (
            build(
                [helper.make_node("ConvInteger", ["x", "w"], ["y"], **pads)],
                TensorProto.INT8,
                TensorProto.INT32,
                [numpy_helper.from_array(weight, "w")],
            ),
            rng.integers(-128, 128, (n, c, hw, hw)).astype(np.int8),
        ),
        "QLinearConv uint8": (
            build(
                [
                    helper.make_node(
                        "QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], **pads
                    )
                ],
                TensorProto.UINT8,
                TensorProto.UINT8,
                [
                    numpy_helper.from_array(weight, "w"),
                    numpy_helper.from_array(np.float32(1 / 16), "xs"),
                    numpy_helper.from_array(np.uint8(128), "xz"),
                    numpy_helper.from_array(np.float32(1 / 64), "ws"),
                    numpy_helper.from_array(np.int8(0), "wz"),
                    numpy_helper.from_array(np.float32(1.0), "ys"),
                    numpy_helper.from_array(np.uint8(128), "yz"),
                ],
            ),
            rng.integers(0, 256, (n, c, hw, hw)).astype(np.uint8),
        ),
    }
    fns = {}
    for name, (model, x) in models.items():
        onnx.checker.check_model(onnx.load_from_string(model))
        sess = session(model, threads=threads)
        fns[name] = lambda sess=sess, x=x: sess.run(None, {"x": x})
    times = _interleaved(fns, rounds)
    return {"ms": times, "ratio_to_float": {k: v / times["float Conv"] for k, v in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few rounds")
    add_threads_flag(parser, THREADS)
    args = parser.parse_args()
    rounds = 3 if args.quick else 15
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = {b: rng.integers(0, 256, (b, *SHAPE)).astype(np.uint8) for b in BATCHES}
    mean = torch.tensor(MEAN).view(1, -1, 1, 1)
    std = torch.tensor(STD).view(1, -1, 1, 1)
    inputs = {b: ((torch.from_numpy(x).float() / 255 - mean) / std) for b, x in images.items()}

    ort_fns: dict[str, Any] = {}
    eager_fns: dict[str, Any] = {}
    weight_types: dict[str, dict[str, int]] = {}
    export_s: dict[str, float] = {}
    for name, settings in VARIANTS.items():
        model = _model(settings)
        start = time.perf_counter()
        exported = to_onnx_bytes(model, SHAPE, mean=MEAN, std=STD)
        export_s[name] = time.perf_counter() - start
        weight_types[name] = exported.summary()
        sessions = {"": session(exported.model_bytes, threads=args.threads)}
        if name == HEADLINE:
            sessions[" (QDQ kept)"] = session(exported.model_bytes, threads=args.threads, fast=False)
        for suffix, sess in sessions.items():
            for b in BATCHES:
                ort_fns[f"{name}{suffix}|{b}"] = lambda sess=sess, x=images[b]: sess.run(
                    None, {INPUT_NAME: x}
                )
        for b in BATCHES:

            def eager(model=model, x=inputs[b]):
                with torch.no_grad():
                    model(x)

            eager_fns[f"{name}|{b}"] = eager

    ort_ms = _interleaved(ort_fns, rounds)
    eager_ms = _interleaved(eager_fns, max(3, rounds // 3))
    table: dict[str, dict[str, Any]] = {}
    for key, value in ort_ms.items():
        name, b = key.split("|")
        row = table.setdefault(name, {})
        row[f"ort_ms_b{b}"] = value
        row[f"ort_speedup_vs_float_b{b}"] = ort_ms[f"float|{b}"] / value
        if f"{name}|{b}" in eager_ms:
            row[f"eager_ms_b{b}"] = eager_ms[f"{name}|{b}"]
            row[f"eager_speedup_vs_float_b{b}"] = eager_ms[f"float|{b}"] / eager_ms[f"{name}|{b}"]
            row[f"ort_speedup_vs_eager_b{b}"] = eager_ms[f"{name}|{b}"] / value
    kernels = _kernels(rounds, args.threads)
    headline = table[HEADLINE]["ort_speedup_vs_float_b64"]
    result = {
        "threads": args.threads,
        "rounds": rounds,
        "onnxruntime": __import__("onnxruntime").__version__,
        "variants": table,
        "weight_types": weight_types,
        "export_s": export_s,
        "kernels": kernels,
        "headline": {"variant": HEADLINE, "ort_speedup_vs_float_b64": headline, "goal": 1.5},
    }
    path = write_result("deploy", result)
    print(
        f"{'variant':<28} {'ORT b1':>8} {'ORT b64':>8} {'xfloat b64':>10} {'eager b64':>10} {'ORT/eager b64':>13}"
    )
    for name, row in table.items():
        print(
            f"{name:<28} {row['ort_ms_b1']:8.2f} {row['ort_ms_b64']:8.1f} {row['ort_speedup_vs_float_b64']:10.2f} "
            f"{row.get('eager_ms_b64', float('nan')):10.1f} {row.get('ort_speedup_vs_eager_b64', float('nan')):13.2f}"
        )
    print("kernels (ms):", {k: round(v, 2) for k, v in kernels["ms"].items()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
