"""Cost of shift layers: ResNet20 float vs fully shifted DeepShift-Q and DeepShift-PS on the CPU.

Measures, with ``torch.set_num_threads(2)``:

- the median time of one training step (forward + backward + SGD step) at batch 128, 32x32 inputs;
- the median time of one eval-mode inference batch of 1000 under ``torch.inference_mode()``;
- the peak resident memory of each variant.

Times of the three variants are interleaved (one measurement of each per round, the order rotating
every round) so that load from other processes on a shared machine hits all variants alike; the
median of the rounds is reported and turned into a ratio to float. Two further views help on a busy
machine: the ratio of the minima (the least disturbed rounds) and the median of the per-round ratios
(each variant against the float measurement of the same round).

Peak memory is the resident-set high-water mark (``VmHWM`` of ``/proc/self/status``) of a fresh
subprocess per variant and phase that builds the model, runs the phase (two training steps, so that
the second includes the optimiser's momentum buffers; one inference batch) and reports it. ``VmHWM`` is used rather than
``getrusage().ru_maxrss`` because Linux carries ``ru_maxrss`` across ``exec`` from the forking parent,
which would report the parent's size; ``ru_maxrss`` is the fallback where ``/proc`` is missing. The
number includes the interpreter and the torch libraries (the same for all variants); the baseline of
a subprocess that only builds the model is reported too, so a phase's own growth is the difference.

Three diagnostic Q variants join the interleaved training rounds, to show where the training overhead
goes: the layer input copied into the layer's buffer instead of rounded; the layer input passed to the
convolution unrounded (weight rounding and the fused autograd node only); and the layer input rounded
in place, behind autograd's back, which is how the reference DeepShift code avoids a second tensor
(it changes what every other reader of that tensor sees, so greenshift does not do it).
They patch greenshift's layer module for the duration of their step and are not models anyone ships.

Two float diagnostics bound what any implementation can reach on the machine at hand. Both are the
float ResNet20 with one change: every convolution reads its input from a buffer of its own, reused
from step to step, into which the input is copied (the least work of any implementation that hands
the convolution a rounded tensor and leaves the producer's tensor alone), or rounded to fixed point
with greenshift's rounding (the input rounding alone, without shift weights). Rounding the producer's
tensor in place instead would also change what the residual shortcut and the producer's backward
pass read (ReLU keeps its output for the gradient).

Two more train the float and the Q network in channels-last layout (model and batch), which the CPU
convolutions run faster; their ratio to each other is the shift overhead for a channels-last user.

Run ``python bench/shift_layers.py`` (a few minutes on an idle machine) or ``--quick`` for a smoke run. The result
is printed and written to ``bench/results/shift_layers.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from greenshift.models import get_model
from greenshift.shift import convert_to_shift, count_shiftable_layers, layers
from greenshift.shift.quantize import round_fixed_point

VARIANTS = ("float", "Q", "PS")
TRAIN_BATCH = 128
INFER_BATCH = 1000
THREADS = 2
TARGETS = {"train_ratio": 1.05, "inference_ratio": 1.2}
RESULT = Path(__file__).resolve().parent / "results" / "shift_layers.json"


def build(variant: str) -> nn.Module:
    """ResNet20 for 10 classes; fully shifted (every shiftable layer) unless ``variant`` is float."""
    torch.manual_seed(0)
    model = get_model("resnet20", num_classes=10, in_channels=3)
    if variant != "float":
        model = convert_to_shift(model, count_shiftable_layers(model), shift_type=variant)
    return model


def train_step_fn(model: nn.Module, channels_last: bool = False) -> Callable[[], None]:
    """One SGD training step on a fixed random batch (model and batch in channels-last layout if asked)."""
    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(TRAIN_BATCH, 3, 32, 32, generator=generator)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (TRAIN_BATCH,), generator=generator)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimiser.step()

    return step


BREAKDOWN = {
    "Q_input_copied": "Q, layer input copied into the layer's buffer instead of rounded",
    "Q_input_unrounded": "Q, layer input not rounded (weight rounding and autograd node only)",
    "Q_input_in_place": "Q, layer input rounded in place (the reference DeepShift's technique)",
}


@contextlib.contextmanager
def input_rounding_replaced(variant: str) -> Iterator[None]:
    """Replace the fixed-point rounding of shift-layer inputs as ``variant`` of :data:`BREAKDOWN` says."""
    rounded = layers._round_fixed_point_by

    def copied(x, integer_bits, fraction_bits, two_op, out=None):
        return x.clone() if out is None else out.copy_(x)

    def unrounded(x, integer_bits, fraction_bits, two_op, out=None):
        return x

    def in_place(x, integer_bits, fraction_bits, two_op, out=None):
        # ``.data`` has its own version counter, so autograd does not notice the write (as in the reference).
        return rounded(x.data, integer_bits, fraction_bits, two_op, out=x.data)

    if variant == "Q_input_in_place":
        with mock.patch.object(layers, "_round_fixed_point_by", in_place):
            yield
        return
    replacement = copied if variant == "Q_input_copied" else unrounded
    with (
        mock.patch.object(layers, "_round_fixed_point_by", replacement),
        mock.patch.object(layers, "_two_op_applies", lambda x, integer_bits, fraction_bits: False),
    ):
        yield


class _IntoBuffer(torch.autograd.Function):
    """``fill(x, buffer)`` and return ``buffer``; the gradient passes to ``x`` unchanged."""

    @staticmethod
    def forward(ctx, x, buffer, fill):  # type: ignore[override]
        fill(x, buffer)
        ctx.mark_dirty(buffer)
        return buffer

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad, None, None


def _rounded_as_converted(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``x`` rounded into ``out`` at the activation format of :func:`build`'s shift layers (16+16 bits)."""
    return round_fixed_point(x, 16, 16, out=out)


def _copied(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return out.copy_(x)


FLOAT_BOUNDS = {
    "float_input_copied": ("float, every convolution input copied into a reused buffer", _copied),
    "float_input_rounded": (
        "float, every convolution input rounded to fixed point into a reused buffer",
        _rounded_as_converted,
    ),
}


def float_bound_model(variant: str) -> nn.Module:
    """Float ResNet20 whose convolutions read their input from buffers filled as :data:`FLOAT_BOUNDS` says."""
    fill = FLOAT_BOUNDS[variant][1]
    model = build("float")
    buffers: dict[nn.Module, torch.Tensor] = {}

    def buffered_input(module: nn.Module, args: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
        (x,) = args
        buffer = buffers.get(module)
        if buffer is None or buffer.shape != x.shape:
            buffer = buffers[module] = torch.empty_like(x)
        # A fresh alias per step, so that the kept buffer never joins an autograd graph itself.
        return (_IntoBuffer.apply(x, buffer.detach(), fill),)

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_pre_hook(buffered_input)
    return model


# The same networks in channels-last layout, which the CPU convolutions run faster; a shift layer
# keeps its input's layout, so the shifted network stays channels-last too.
CHANNELS_LAST = {
    "float_channels_last": "float, model and batch channels-last",
    "Q_channels_last": "Q, model and batch channels-last",
}


def breakdown_step_fn(variant: str) -> Callable[[], None]:
    """A diagnostic training step: a float bound of :data:`FLOAT_BOUNDS`, a channels-last network of
    :data:`CHANNELS_LAST`, or a Q step (:func:`train_step_fn`) with its input rounding replaced for
    ``variant`` of :data:`BREAKDOWN`."""
    if variant in FLOAT_BOUNDS:
        return train_step_fn(float_bound_model(variant))
    if variant in CHANNELS_LAST:
        return train_step_fn(build(variant.removesuffix("_channels_last")), channels_last=True)
    step = train_step_fn(build("Q"))

    def patched_step() -> None:
        with input_rounding_replaced(variant):
            step()

    return patched_step


DIAGNOSTIC_LABELS = {
    **BREAKDOWN,
    **{v: label for v, (label, _) in FLOAT_BOUNDS.items()},
    **CHANNELS_LAST,
}
DIAGNOSTICS = tuple(DIAGNOSTIC_LABELS)


def inference_fn(model: nn.Module) -> Callable[[], None]:
    """One eval-mode forward pass of a batch of 1000 without autograd."""
    model.eval()
    images = torch.randn(INFER_BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(2))

    def infer() -> None:
        with torch.inference_mode():
            model(images)

    return infer


def interleaved_times(fns: dict[str, Callable[[], None]], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each function in every round, measured in rotating interleaved rounds."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def _ratio_of_minima(times: dict[str, list[float]]) -> dict[str, float]:
    return {v: min(t) / min(times["float"]) for v, t in times.items()}


def _paired_ratio(times: dict[str, list[float]]) -> dict[str, float]:
    return {
        v: statistics.median([a / b for a, b in zip(t, times["float"], strict=True)])
        for v, t in times.items()
    }


def peak_rss_mib(variant: str, phase: str) -> float:
    """Peak RSS of a fresh subprocess running ``phase`` ("build", "train" or "inference")."""
    out = subprocess.run(
        [sys.executable, __file__, "--memory-probe", variant, phase],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _high_water_mib() -> float:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # reported in kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def memory_probe(variant: str, phase: str) -> None:
    """Subprocess body of :func:`peak_rss_mib`: print the resident high-water mark in MiB."""
    torch.set_num_threads(THREADS)
    model = build(variant)
    if phase == "train":
        step = train_step_fn(model)
        step()
        step()
    elif phase == "inference":
        inference_fn(model)()
    print(_high_water_mib())


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the benchmark, print a summary and write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds, for a smoke run")
    parser.add_argument("--out", type=Path, default=RESULT, help="where to write the JSON result")
    parser.add_argument("--memory-probe", nargs=2, metavar=("VARIANT", "PHASE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:
        memory_probe(*args.memory_probe)
        return {}

    torch.set_num_threads(THREADS)
    train_rounds, infer_rounds, warmup = (3, 2, 1) if args.quick else (21, 9, 2)
    memory = {
        v: {phase: peak_rss_mib(v, phase) for phase in ("build", "train", "inference")} for v in VARIANTS
    }
    models = {variant: build(variant) for variant in VARIANTS}
    train_fns = {v: train_step_fn(copy.deepcopy(m)) for v, m in models.items()}
    train_fns.update({v: breakdown_step_fn(v) for v in DIAGNOSTICS})
    train_times = interleaved_times(train_fns, train_rounds, warmup)
    breakdown_times = {v: train_times.pop(v) for v in DIAGNOSTICS}
    breakdown = {
        v: statistics.median(t) / statistics.median(train_times["float"]) for v, t in breakdown_times.items()
    }
    breakdown_paired = _paired_ratio({**breakdown_times, "float": train_times["float"]})
    del breakdown_paired["float"]
    infer_times = interleaved_times({v: inference_fn(m) for v, m in models.items()}, infer_rounds, warmup)
    train = {v: statistics.median(t) for v, t in train_times.items()}
    infer = {v: statistics.median(t) for v, t in infer_times.items()}

    train_min = _ratio_of_minima(train_times)
    infer_min = _ratio_of_minima(infer_times)
    train_paired = _paired_ratio(train_times)
    infer_paired = _paired_ratio(infer_times)
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result: dict[str, object] = {
        "model": "resnet20",
        "threads": THREADS,
        "train_batch": TRAIN_BATCH,
        "inference_batch": INFER_BATCH,
        "quick": args.quick,
        "rounds": {"train": train_rounds, "inference": infer_rounds, "warmup": warmup},
        "train_step_s": train,
        "inference_s": infer,
        "train_ratio": {v: train[v] / train["float"] for v in VARIANTS},
        "train_breakdown_ratio": breakdown,
        "train_breakdown_paired_ratio": breakdown_paired,
        "train_ratio_channels_last": breakdown["Q_channels_last"] / breakdown["float_channels_last"],
        "inference_ratio": {v: infer[v] / infer["float"] for v in VARIANTS},
        "train_ratio_of_minima": train_min,
        "inference_ratio_of_minima": infer_min,
        "train_paired_ratio": train_paired,
        "inference_paired_ratio": infer_paired,
        "train_step_all_s": train_times,
        "inference_all_s": infer_times,
        "load_average_after": load,
        "peak_rss_mib": memory,
        "targets": TARGETS,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(f"ResNet20, {THREADS} threads, medians of interleaved rounds{' (quick)' if args.quick else ''}")
    print("ratio: of medians; min: of minima; pair: median of per-round ratios")
    print(
        "variant    train s  ratio    min   pair    infer s  ratio    min   pair   RSS MiB build/train/infer"
    )
    for v in VARIANTS:
        rss = "/".join(f"{memory[v][p]:.0f}" for p in ("build", "train", "inference"))
        print(
            f"{v:8s} {train[v]:9.3f} {train[v] / train['float']:6.3f} {train_min[v]:6.3f} {train_paired[v]:6.3f} "
            f"{infer[v]:9.3f} {infer[v] / infer['float']:6.3f} {infer_min[v]:6.3f} {infer_paired[v]:6.3f}   {rss}"
        )
    for v, ratio in breakdown.items():
        print(f"{DIAGNOSTIC_LABELS[v]}: train ratio {ratio:.3f} (pair {breakdown_paired[v]:.3f})")
    print(f"Q vs float, both channels-last: train ratio {result['train_ratio_channels_last']:.3f}")
    print(f"load average after the run: {load}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
