"""Write docs/results.md from the benchmark results in bench/results/*.json (no hand-typed figures).

python scripts/results.py            # after `make bench` (or single bench/*.py runs)
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def load(name: str) -> dict[str, Any] | None:
    """One benchmark's JSON, or None when it has not been run."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def machine_line(data: dict[str, Any]) -> str:
    """Where and when the figures were measured, from whatever the benchmark recorded."""
    machine = data.get("machine")
    if isinstance(machine, dict):
        return (
            f"Measured on {machine.get('cores')} cores ({machine.get('cpu')}), torch {machine.get('torch')}, "
            f"{machine.get('date')}, load average {machine.get('load_average', 0):.1f} at the end"
            + (f", code at commit `{machine['commit']}`." if machine.get("commit") else ".")
        )
    env = data.get("environment") or {}
    torch_version = data.get("torch") or env.get("torch")
    threads = data.get("threads") or env.get("threads")
    return f"Measured with torch {torch_version}, {threads} threads, {data.get('machine') or env.get('processor')}."


def shift_layers(d: dict[str, Any]) -> list[str]:
    """Train-step and inference ratios of shifted vs float ResNet20."""
    rows = [
        "| variant | train step (s) | train ratio | inference (s) | inference ratio |",
        "|---|---|---|---|---|",
    ]
    for v in ("float", "Q", "PS"):
        rows.append(
            f"| {v} | {d['train_step_s'][v]:.3f} | {d['train_ratio'][v]:.3f} | "
            f"{d['inference_s'][v]:.3f} | {d['inference_ratio'][v]:.3f} |"
        )
    breakdown = d.get("train_breakdown_ratio") or {}
    labels = {
        "Q_input_copied": "Q with the layer input copied into its buffer instead of rounded",
        "Q_input_unrounded": "Q with the layer input not rounded at all",
        "Q_input_in_place": "Q with the layer input rounded in place (the reference DeepShift's technique)",
        "float_input_copied": "float with every convolution input copied into a reused buffer "
        "(the least any implementation that leaves the producer's tensor alone must add)",
        "float_input_rounded": "float with every convolution input rounded to fixed point into a reused buffer",
        "float_channels_last": "float, model and batch channels-last",
        "Q_channels_last": "Q, model and batch channels-last",
    }
    explained = []
    if breakdown:
        explained = [
            "Where the training overhead goes (diagnostic variants timed in the same interleaved rounds; "
            "ratio of medians to float):",
            "",
            *(f"- {labels.get(v, v)}: {ratio:.3f}" for v, ratio in breakdown.items()),
            "",
        ]
        if "train_ratio_channels_last" in d:
            explained += [
                f"Q against float with both channels-last: {d['train_ratio_channels_last']:.3f}.",
                "",
            ]
    memory = d.get("peak_rss_mib") or {}
    extra = []
    if memory:
        extra = [
            "Peak resident memory of a fresh process per variant and phase (MiB; interpreter and torch "
            "included, so compare within a column):",
            "",
            "| variant | model built | after 2 training steps | after 1 inference batch |",
            "|---|---|---|---|",
            *(
                f"| {v} | {memory[v]['build']:.0f} | {memory[v]['train']:.0f} | {memory[v]['inference']:.0f} |"
                for v in ("float", "Q", "PS")
                if v in memory
            ),
        ]
    return [
        f"ResNet20, batch {d['train_batch']} (train) / {d['inference_batch']} (inference), 32x32, "
        f"{d['threads']} threads; medians of interleaved rounds. Targets: train <= 1.05x, inference <= 1.2x.",
        "",
        *rows,
        "",
        *explained,
        *extra,
    ]


def train_loop(d: dict[str, Any]) -> list[str]:
    """Tensor-resident loop vs a DataLoader with per-sample augmentation."""
    rows = [
        "| model | greenshift s/epoch (channels-last) | greenshift NCHW s/epoch | DataLoader s/epoch "
        "| DataLoader / greenshift NCHW | NCHW / channels-last |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in d["results"].items():
        rows.append(
            f"| {name} | {r['greenshift_epoch_s']:.2f} | {r['greenshift_nchw_epoch_s']:.2f} "
            f"| {r['dataloader_epoch_s']:.2f} | {r['dataloader_over_greenshift_nchw']:.2f} "
            f"| {r['nchw_over_channels_last']:.2f} |"
        )
    return [
        f"{d.get('backbone', 'resnet20')}, {d['images']} CIFAR-shaped images, batch {d['batch_size']}, "
        f"{d['threads']} threads.",
        "",
        *rows,
    ]


def energy_meters(d: dict[str, Any]) -> list[str]:
    """Repeatability and overhead of measured energy."""
    rows = [
        "| model | mean J/image | CV over repeats | meter time overhead |",
        "|---|---|---|---|",
    ]
    for m in d["models"]:
        rows.append(
            f"| {m['model']} | {m['mean_j_per_image']:.3g} | {m['cv']:.1%} | {m['median_time_overhead_fraction']:.1%} |"
        )
    return [f"Meter: {d['meter_method']}.", "", *rows]


def search_overhead(d: dict[str, Any]) -> list[str]:
    """Share of search wall time outside trials."""
    return [
        f"{d['trials']} trials of {d['backbone']} on digits ({d['min_epochs']} to {d['max_epochs']} epochs): wall "
        f"{d['wall_s']:.1f} s (start-up {d['startup_s']:.1f} s), search loop {d['loop_s']:.1f} s, inside trials "
        f"{d['inside_trials_s']:.1f} s: **loop overhead {d['loop_overhead_share']:.1%}** (target <= "
        f"{d['target']:.0%}), {d['overhead_ms_per_trial']:.0f} ms per trial; whole call {d['overhead_share']:.1%}"
        + (" (trials in trial processes, the default)." if d.get("isolate_trials") else "."),
        *(
            [
                "",
                f"The same search with trials in the search's own process (`--no-isolate-trials`): loop overhead "
                f"{d['runs']['in_process']['loop_overhead_share']:.1%}, "
                f"{d['runs']['in_process']['overhead_ms_per_trial']:.0f} ms per trial; process isolation costs "
                f"**{d['isolation_cost_ms_per_trial']:.0f} ms per trial**.",
            ]
            if "isolation_cost_ms_per_trial" in d
            else []
        ),
        *facade_costs(d),
        *latency_ort_cost(d),
    ]


def facade_costs(d: dict[str, Any]) -> list[str]:
    """Search time per trial of SMAC variants (``--facades``), when the run compared them."""
    if "facades" not in d:
        return []
    rows = [
        "",
        "SMAC variants of bench/smac_settings.py, same search in trial processes, rounds in a rotating order:",
        "",
        "| variant | search time per trial, median (ms) | vs greenshift | share of the search loop |",
        "|---|---|---|---|",
    ]
    for name, f in d["facades"].items():
        rows.append(
            f"| {name} | {f['median_ms']:.0f} | {f['over_greenshift']:.2f}x | {f['median_loop_overhead_share']:.1%} |"
        )
    return rows


def latency_ort_cost(d: dict[str, Any]) -> list[str]:
    """What the measured deployment objective latency_ort_ms adds per trial (when the run measured it)."""
    if "latency_ort_ms_cost_ms_per_trial" not in d:
        return []
    return [
        "",
        f"The objective `latency_ort_ms` (ONNX export, onnxruntime session, 3 + 20 timed batches of 64) adds "
        f"**{d['latency_ort_ms_cost_ms_per_trial']:.0f} ms per trial** for a {d['backbone']} DSNN, "
        f"{d['latency_ort_ms_cost_share_of_mean_trial']:.0%} of this search's mean trial"
        + (
            f" (measured {d['latency_ort_ms_machine']['date']}, load average "
            f"{d['latency_ort_ms_machine']['load_average']:.1f})."
            if "latency_ort_ms_machine" in d
            else "."
        ),
    ]


def calibration(d: dict[str, Any]) -> list[str]:
    """Measured time per image next to modelled energy (shipped and calibrated tables), Spearman rho."""
    rows = [
        "| configuration | measured (ms/image) | shipped table (J) | calibrated table (J) |",
        "|---|---|---|---|",
    ]
    for name in sorted(d["measured_ms_per_image"], key=lambda n: (n != "float", n)):
        measured = d["measured_ms_per_image"][name]
        rows.append(
            f"| {name} | {measured:.3f} | {d['modelled_j']['shipped'][name]:.3g} | "
            f"{d['modelled_j']['calibrated'][name]:.3g} |"
        )
    rho = d["spearman_rho"]
    return [
        *rows,
        "",
        f"Spearman rank correlation with the measured time: shipped 45 nm table **{rho['shipped']:.2f}**, "
        f"calibrated table **{rho['calibrated']:.2f}** (goal {d['goal']}). Eager PyTorch at batch "
        f"{d['batch']}, {d['threads']} thread(s), medians of {d['rounds']} interleaved rounds; input "
        f"{'x'.join(map(str, d['input_shape']))}.",
    ]


def deploy(d: dict[str, Any]) -> list[str]:
    """Float vs DSNN ResNet20 in onnxruntime and eager PyTorch, ratios to float in the same runtime."""
    rows = [
        "| variant | weight types | ORT b1 (ms) | ORT b64 (ms) | speed-up vs float ORT b1 | b64 | "
        "eager b64 (ms) | ORT vs eager b64 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(d["variants"], key=lambda n: (n != "float", n)):
        v = d["variants"][name]
        key = name.removesuffix(" (QDQ kept)")
        types = ", ".join(f"{n} {t}" for t, n in sorted(d["weight_types"].get(key, {}).items())) or "-"
        eager = f"{v['eager_ms_b64']:.1f}" if "eager_ms_b64" in v else "-"
        versus = f"{v['ort_speedup_vs_eager_b64']:.1f}x" if "ort_speedup_vs_eager_b64" in v else "-"
        rows.append(
            f"| {name} | {types} | {v['ort_ms_b1']:.2f} | {v['ort_ms_b64']:.1f} | "
            f"{v['ort_speedup_vs_float_b1']:.2f} | {v['ort_speedup_vs_float_b64']:.2f} | {eager} | {versus} |"
        )
    head = d["headline"]
    kernels = d["kernels"]["ratio_to_float"]
    verdict = "met" if head["ort_speedup_vs_float_b64"] >= head["goal"] else "not met"
    return [
        *rows,
        "",
        f"Goal: {head['variant']} at least {head['goal']}x faster than the float ONNX model at batch 64: "
        f"**{head['ort_speedup_vs_float_b64']:.2f}x, {verdict}**. One ResNet20 convolution at batch 64 as "
        f"onnxruntime kernels, time relative to float `Conv`: "
        + ", ".join(f"{k} {v:.2f}" for k, v in kernels.items())
        + ". An exact integer shift layer needs the int32 output of `ConvInteger`; the fast `QLinearConv` "
        "requantises to 8 bits per tensor, which batch norm and residual sums between shift layers do not "
        "allow, so shift layers run as float convolutions on exactly dequantised weights (docs/deploy.md).",
        "",
        f"onnxruntime {d['onnxruntime']}, {d['threads']} thread(s), medians of {d['rounds']} interleaved rounds.",
    ]


def dask_scaling(d: dict[str, Any]) -> list[str]:
    """Trials per hour with 1 vs 2 workers, at one thread per trial and with all cores in one trial."""
    runs = d["runs"]
    return [
        f"{d['trials']} trials of {d['backbone']}, {d['epochs_per_trial']} epochs each, trials per hour over the "
        f"trial loop (median of {d.get('rounds', 1)} rounds, the three runs in a rotating order):",
        "",
        "| run | trials/h | loop s | start-up s |",
        "|---|---|---|---|",
        *(
            f"| {name.replace('_', ' ')} | {r['trials_per_hour']:.0f} | {r['loop_s']:.1f} | {r['startup_s']:.1f} |"
            for name, r in runs.items()
        ),
        "",
        f"**Scaling with one thread per trial: {d['speedup']:.2f}x** (target >= {d['target']}x; median of the "
        f"rounds' ratios {', '.join(f'{r:.2f}' for r in d.get('speedup_per_round', [d['speedup']]))}). Against one "
        f"trial using all cores of this 2-core machine, two workers give {d['speedup_all_cores']:.2f}x: torch "
        "already spreads one small model over both cores fairly well. Ceiling of this machine measured in the "
        f"same run: two single-thread processes at once do {d['parallel_ceiling']:.2f}x the work of one.",
    ]


def curve_table(summary: dict[str, list[dict[str, float]]]) -> list[str]:
    """Median [min, max] hypervolume per fraction of the budget, one column per variant."""
    names = list(summary)
    rows = ["| budget fraction | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for i, point in enumerate(summary[names[0]]):
        cells = [
            f"{summary[n][i]['median']:.4g} [{summary[n][i]['min']:.4g}, {summary[n][i]['max']:.4g}]"
            for n in names
        ]
        rows.append(f"| {point['fraction']:.2f} | " + " | ".join(cells) + " |")
    return rows


def continue_promoted(d: dict[str, Any]) -> list[str]:
    """Retrain vs continue promoted configurations."""
    return [
        f"{d['backbone']} on digits, {d['budget_epochs']} epochs per search, {d['seeds']} seeds; hypervolume "
        "median [min, max]:",
        "",
        *curve_table(d["summary"]),
        "",
        f"continue / retrain at the full budget: **{d['ratio_continue_over_retrain']:.3f}** -> better: "
        f"**{d['better']}** ({d.get('decided_by', 'median hypervolume at the full budget')}).",
    ]


def search_efficiency(d: dict[str, Any]) -> list[str]:
    """smac vs smac-bo vs random at the same epoch budget."""
    fraction = d.get("median_fraction")
    reach = "never (in most seeds)" if fraction is None else f"{fraction:.2f}"
    return [
        f"{d['backbone']} on digits, {d['budget_epochs']} epochs per search (max {d['max_epochs']} per trial), "
        f"{d['seeds']} seeds; hypervolume median [min, max]:",
        "",
        *curve_table(d["summary"]),
        "",
        f"Budget fraction `smac` needs to reach `random`'s final hypervolume (median): **{reach}** (target <= 0.33); "
        f"per seed (None: never): "
        f"{[None if r is None else round(r, 2) for r in d['smac_fraction_to_reach_random']]}.",
        "",
        f"![hypervolume over epochs](../bench/results/{d['figure']})",
    ]


def smac_settings(d: dict[str, Any]) -> list[str]:
    """greenshift's SMAC settings against their alternatives, seed by seed."""
    finals, reach = d["final_hypervolume"], d["fraction_to_reach_random"]
    seeds = range(d["seeds"])

    def above(name: str, base: str) -> int:
        return sum(v > b for v, b in zip(finals[name], finals[base], strict=True))

    def cell(name: str, seed: int) -> str:
        fraction = reach[name][seed]
        return f"{finals[name][seed]:.3g} ({'never' if fraction is None else f'{fraction:.2f}'})"

    return [
        f"small_cnn on digits, {d['budget_epochs']} epochs per search, {d['seeds']} seeds; per seed the final "
        "hypervolume and, in brackets, the budget fraction at which the variant reaches `random`'s final one:",
        "",
        "| variant | " + " | ".join(f"seed {s}" for s in seeds) + " | larger than greenshift's | "
        "larger than local_searches_10 |",
        "|---" * (d["seeds"] + 3) + "|",
        *(
            f"| {name} | "
            + " | ".join(cell(name, s) for s in seeds)
            + f" | {above(name, 'greenshift')} | {above(name, 'local_searches_10')} |"
            for name in finals
        ),
    ]


def gpu_table(d: dict[str, Any]) -> list[str]:
    """bench/gpu.py's table: time per epoch against float, measured (NVML) and modelled energy per image."""
    rows = [
        "| configuration | s/epoch | time vs float | measured J/image (NVML) | repeat CV | mean power (W) | modelled J/image |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in d["training"].items():
        energy = d["energy"].get(name) or {}
        rows.append(
            f"| {name} | {row['seconds_per_epoch']:.2f} | {row['over_float']:.2f}x | "
            f"{energy.get('measured_j_per_image', float('nan')):.3g} | {100 * (energy.get('repeat_cv') or 0):.1f} % | "
            f"{energy.get('mean_power_w', float('nan')):.0f} | {energy.get('modelled_j_per_image', float('nan')):.3g} |"
        )
    return rows


def gpu(d: dict[str, Any]) -> list[str]:
    """Training time of DSNNs against float and the NVML meter, on a CUDA device."""
    return [
        f"Device: {d['device']}; ResNet20 on CIFAR-10-shaped files, {d['epochs']} epochs per configuration.",
        "",
        *gpu_table(d),
    ]


SECTIONS: list[tuple[str, str, str, Callable[[dict[str, Any]], list[str]]]] = [
    ("shift_layers", "Shift layer overhead", "python bench/shift_layers.py", shift_layers),
    ("train_loop", "Training loop", "python bench/train_loop.py", train_loop),
    ("energy_meters", "Energy meters", "python bench/energy_meters.py", energy_meters),
    (
        "search_overhead",
        "Search overhead",
        "python bench/search_overhead.py --facades plateau_10 local_searches_10",
        search_overhead,
    ),
    ("dask_scaling", "Dask scaling", "python bench/dask_scaling.py", dask_scaling),
    (
        "continue_promoted",
        "Continuing promoted configurations",
        "python bench/continue_promoted.py",
        continue_promoted,
    ),
    (
        "search_efficiency",
        "Search efficiency: smac vs smac-bo vs random",
        "python bench/search_efficiency.py",
        search_efficiency,
    ),
    (
        "smac_settings",
        "SMAC settings against their alternatives",
        "python bench/smac_settings.py",
        smac_settings,
    ),
    ("deploy", "Deployment: onnxruntime and eager PyTorch", "python bench/deploy.py", deploy),
    ("calibration", "Energy model calibrated on this machine", "python bench/calibration.py", calibration),
    ("gpu", "On a GPU: DSNN training time and the NVML meter", "python bench/gpu.py", gpu),
]


SEARCH_BENCHMARKS = (
    "search_overhead",
    "dask_scaling",
    "continue_promoted",
    "search_efficiency",
    "smac_settings",
)
ORDERED_LOCAL_SEARCH = "e69e935"  # from this commit on, SMAC's local searches start in a fixed order


def made_before(commit: str | None, ancestor: str) -> bool:
    """Whether code at ``commit`` predates ``ancestor`` (not a descendant of it; unknown counts as before)."""
    if not commit:
        return True
    done = subprocess.run(
        ["git", "merge-base", "--is-ancestor", ancestor, commit.removesuffix("+changes")],
        cwd=ROOT,
        capture_output=True,
    )
    return done.returncode != 0


def ran_before_ordered_search(data: dict[str, Any]) -> bool:
    """Whether a benchmark's code predates the ordered local search."""
    machine = data.get("machine")
    return made_before(machine.get("commit") if isinstance(machine, dict) else None, ORDERED_LOCAL_SEARCH)


def hash_ordered_note() -> list[str]:
    """A note naming the search benchmarks whose runs depended on Python's hash seed, if any."""
    older = [name for name in SEARCH_BENCHMARKS if (data := load(name)) and ran_before_ordered_search(data)]
    if not older:
        return []
    return [
        f"{', '.join(older)} ran before commit `{ORDERED_LOCAL_SEARCH}`, with SMAC's hash-ordered local",
        'search (docs/search.md, "Repeatability"): rerun now, they give runs of the same kind, not the',
        "same trials.",
    ]


def main() -> None:
    """Write docs/results.md."""
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python scripts/results.py` from `bench/results/*.json`, which `make bench` (or each",
        "`bench/*.py`) writes. Benchmarks compare variants measured side by side in one run; the machine is",
        "a shared 2-core VM, so ratios are the figures to read, and absolute times vary between runs.",
        "Each section names the commit it ran at.",
        *hash_ordered_note(),
        "",
    ]
    for name, title, command, render in SECTIONS:
        data = load(name)
        lines += [f"## {title}", "", f"`{command}`", ""]
        if data is None:
            lines += ["Not run yet.", ""]
            continue
        lines += [*render(data), "", machine_line(data), ""]
    (ROOT / "docs" / "results.md").write_text("\n".join(lines))
    print("written docs/results.md")


if __name__ == "__main__":
    main()
