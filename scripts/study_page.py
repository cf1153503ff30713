"""docs/study.md from the study's data: reports, convergence points, trial lists, profiles, the GPU result.

Everything here is arithmetic on what ``scripts/study.py`` collected with greenshift commands; no
figure is typed in. Kept apart from study.py so that running the study and writing its page can be
read separately.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from results import gpu_table

CHANCE_LOSS = 0.9  # the `loss` objective (1 - accuracy) of guessing among digits' 10 classes
MODELLED = "energy_model_j"

# What the DSNN AutoML study (Hennig & Lindauer) reports, in its own words (../shared/seeds).
SEEDS_CLAIMS = {
    "both": "tuned DSNNs increase performance by about 20 % while reducing emissions",
    "energy": "emissions reduced, in some cases by more than 60 %",
    "partial": "quantising smaller portions of the network with low precision can be optimal for energy "
    "while retaining or improving performance",
    "backbones": "the findings hold across several backbones",
}


def pct(value: float | None) -> str:
    """A percent change, or a dash."""
    return "–" if value is None else f"{value:+.1f} %"


def spread(values: Sequence[float | None], fmt: str = "{:+.1f} %") -> str:
    """``median (min to max)`` of the values that exist, with how many exist when some do not."""
    found = [v for v in values if v is not None and math.isfinite(v)]
    if not found:
        return "–"
    text = fmt.format(statistics.median(found))
    if len(found) > 1:
        text += f" ({fmt.format(min(found))} to {fmt.format(max(found))})"
    if len(found) < len(values):
        text += f", in {len(found)} of {len(values)} seeds"
    return text


def headline(report: dict, key: str) -> float | None:
    """Percent change of the best qualifying configuration (negative = better), or None."""
    improvement = report["improvement"]
    if key == "loss":
        best = improvement.get("best_loss_reduction")
    else:
        best = (improvement.get("best_energy_reduction") or {}).get(MODELLED)
    return None if not best else float(best["percent_change"])


def normaliser(report: dict) -> float:
    """The volume of the box between the origin and the reference point: hypervolume / this lies in [0, 1]."""
    return math.prod(float(v) for v in report["reference_point"]["values"].values())


def normalised_curve(report: dict) -> list[tuple[float, float]]:
    """(epochs consumed, normalised hypervolume) after each finished trial."""
    scale = normaliser(report)
    return [(float(p["epochs"]), float(p["hypervolume"]) / scale) for p in report["hypervolume_over_budget"]]


def value_at(curve: Sequence[tuple[float, float]], epochs: float) -> float:
    """The curve's value once ``epochs`` were consumed (0 before its first point)."""
    found = 0.0
    for spent, value in curve:
        if spent > epochs:
            break
        found = value
    return found


def fraction_to_reach(curve: Sequence[tuple[float, float]], target: float, budget: float) -> float | None:
    """The share of ``budget`` after which ``curve`` first reaches ``target``; None if it never does."""
    for spent, value in curve:
        if value >= target * (1 - 1e-12):
            return spent / budget
    return None


def full_budget_configs(trials: Iterable[dict], max_epochs: float) -> int:
    """How many distinct configurations finished OK at the full budget."""
    return len(
        {t["config_key"] for t in trials if t["status"] == "ok" and float(t["budget_epochs"]) >= max_epochs}
    )


def minutes(report: dict) -> float:
    """The search's own wall time in minutes (from its trials)."""
    curve = report.get("hypervolume_over_budget") or [{}]
    return float(curve[-1].get("wall_time_s", math.nan)) / 60


def top(importance: dict, objective: str, n: int = 3) -> list[tuple[str, float]]:
    """The ``n`` most important hyperparameters for ``objective``."""
    values = (importance.get("values") or {}).get(objective) or {}
    return sorted(values.items(), key=lambda kv: -kv[1])[:n]


def describe(config: dict) -> str:
    """Shift depth, type, weight bits, activation bits and optimiser of a configuration, compactly."""
    return (
        f"{config['shift_type']} {config['weight_bits']}-bit, depth {config['shift_depth']}, "
        f"act {config['activation_integer_bits']}+{config['activation_fraction_bits']}, {config['optimizer']}"
    )


def convergence_section(points: list[dict], epochs: Sequence[int], image: str | None) -> list[str]:
    """Table (median accuracy and range over seeds per budget) and the figure's link."""
    lines = [
        "## When the networks converge",
        "",
        "Validation accuracy after training for a given number of epochs (each budget is its own run with",
        "a cosine schedule over that budget, as a trial at that budget is), median over training seeds",
        "with the range:",
        "",
        "| backbone | configuration | seeds | " + " | ".join(f"{e} epochs" for e in epochs) + " |",
        "|---|---|---|" + "---|" * len(epochs),
    ]
    keys = sorted({(p["backbone"], p["label"]) for p in points}, key=lambda k: (k[0] != "resnet20", k))
    for backbone, label in keys:
        cells, seeds = [], set()
        for e in epochs:
            accs = [
                p["val_accuracy"]
                for p in points
                if (p["backbone"], p["label"], p["epochs"]) == (backbone, label, e)
            ]
            seeds |= {
                p["seed"] for p in points if (p["backbone"], p["label"], p["epochs"]) == (backbone, label, e)
            }
            if not accs:
                cells.append("–")
            elif len(accs) == 1:
                cells.append(f"{accs[0]:.3f}")
            else:
                cells.append(f"{statistics.median(accs):.3f} ({min(accs):.3f}–{max(accs):.3f})")
        lines.append(f"| {backbone} | {label} | {len(seeds)} | " + " | ".join(cells) + " |")
    lines.append("")
    if image:
        lines += [f"![validation accuracy over the training budget]({image})", ""]
    return lines


def convergence_points_of(points: list[dict], backbone: str, label: str, epochs: int) -> list[float]:
    """Accuracies of one backbone, configuration and budget over the seeds."""
    return [
        p["val_accuracy"]
        for p in points
        if (p["backbone"], p["label"], p["epochs"]) == (backbone, label, epochs)
    ]


def backbone_section(
    backbone: str, runs: list[tuple[int, dict, list[dict]]], max_epochs: int, measured: bool
) -> tuple[list[str], dict[str, Any]]:
    """Per-seed table, front members, importance; and the figures the claims table needs."""
    lines = [
        f"## {backbone}",
        "",
        "| seed | trials | configurations at the full budget | front size | hypervolume | normalised hypervolume | "
        "default loss (accuracy) | default energy (J) | best loss change at no more energy | "
        "best energy change at no worse loss | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    loss_changes, energy_changes, hvs, defaults = [], [], [], []
    for seed, report, trials in runs:
        default = (report.get("default") or {}).get("objectives", {})
        loss_changes.append(headline(report, "loss"))
        energy_changes.append(headline(report, "energy"))
        hvs.append(report["hypervolume"] / normaliser(report))
        defaults.append(float(default.get("loss", math.nan)))
        n_trials = sum((report.get("status_counts") or {}).values())
        lines.append(
            f"| {seed} | {n_trials} | {full_budget_configs(trials, max_epochs)} | {len(report['pareto'])} | "
            f"{report['hypervolume']:.3g} | {hvs[-1]:.3f} | {defaults[-1]:.3f} ({1 - defaults[-1]:.3f}) | "
            f"{default.get(MODELLED, math.nan):.3g} | {pct(loss_changes[-1])} | {pct(energy_changes[-1])} | "
            f"{minutes(report):.1f} |"
        )
    lines += [
        f"| median (range) | | | | | {spread(hvs, '{:.3f}')} | {spread(defaults, '{:.3f}')} | | "
        f"{spread(loss_changes)} | {spread(energy_changes)} | |",
        "",
        "Front members (all seeds), by loss:",
        "",
        "| seed | trial | loss | energy (J) | shift depth | type | weight bits | activation bits (int+frac) | optimizer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    depth_counter: Counter = Counter()
    full_depth = 0
    for seed, report, _ in runs:
        full_depth = max(full_depth, (report.get("default") or {}).get("config", {}).get("shift_depth", 0))
        for member in sorted(report["pareto"], key=lambda m: m["objectives"]["loss"]):
            c, o = member["config"], member["objectives"]
            depth_counter[c["shift_depth"]] += 1
            lines.append(
                f"| {seed} | {member['trial_id']}{'*' if member.get('is_default') else ''} | {o['loss']:.4f} | "
                f"{o[MODELLED]:.3g} | {c['shift_depth']} | {c['shift_type']} | {c['weight_bits']} | "
                f"{c['activation_integer_bits']}+{c['activation_fraction_bits']} | {c['optimizer']} |"
            )
    if all(c is None for c in loss_changes):
        cheaper = [
            (seed, m)
            for seed, report, _ in runs
            for m in report["pareto"]
            if not m.get("is_default")
            and m["objectives"][MODELLED]
            <= (report.get("default") or {}).get("objectives", {}).get(MODELLED, 0)
        ]
        lines += [
            "",
            "No configuration with at most the default's modelled energy had a lower loss in any seed. The default",
            f"(every one of the {full_depth} layers shifted) is close to the cheapest the model allows, and the",
            "cheaper configurations the searches trained to the full budget did not learn as well: "
            + ", ".join(
                f"seed {seed} trial {m['trial_id']} ({describe(m['config'])}) loss {m['objectives']['loss']:.3f}"
                for seed, m in cheaper
            )
            + ".",
        ]
    lines += [
        "",
        "(* the default configuration.) Hyperparameter importance (fANOVA, top 3 per objective):",
        "",
    ]
    for seed, report, _ in runs:
        imp = report.get("importance") or {}
        loss_top, energy_top = top(imp, "loss"), top(imp, MODELLED)
        lines.append(
            f"- seed {seed}: loss — {', '.join(f'{k} {v:.2f}' for k, v in loss_top) or 'n/a'}; "
            f"energy — {', '.join(f'{k} {v:.2f}' for k, v in energy_top) or 'n/a'}"
        )
    lines.append("")
    partial = sum(n for depth, n in depth_counter.items() if depth < full_depth)
    facts = {
        "loss_changes": loss_changes,
        "energy_changes": energy_changes,
        "default_losses": defaults,
        "full_depth": full_depth,
        "front_members": sum(depth_counter.values()),
        "partial_members": partial,
        "hypervolumes": hvs,
    }
    return lines, facts


def random_section(
    backbone: str,
    smac: list[tuple[int, dict, list[dict]]],
    random: list[tuple[int, dict, list[dict]]],
    budget: float,
) -> tuple[list[str], dict[str, Any]]:
    """smac against random search at the same epoch budget: final normalised hypervolume and time to reach."""
    lines = [
        f"## What multi-fidelity search bought ({backbone}, same epoch budget)",
        "",
        "`random` trains every configuration at the full budget; `smac` (Hyperband + ParEGO + random forest)",
        "spends most trials at low budgets and promotes the promising ones. Both have the same total of",
        f"{budget:g} epochs per run and the same reference point (normalised hypervolume: the share of the box",
        "between the origin and the reference point that the front dominates).",
        "",
        "| seed | smac trials | random trials | smac configurations at full budget | random configurations at full budget "
        "| smac normalised hypervolume | random normalised hypervolume | smac reaches random's final value after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ratios, reach = [], []
    smac_hv, random_hv = [], []
    for (seed, s_report, s_trials), (_, r_report, r_trials) in zip(smac, random, strict=True):
        s_curve, r_curve = normalised_curve(s_report), normalised_curve(r_report)
        s_final, r_final = s_curve[-1][1], r_curve[-1][1]
        smac_hv.append(s_final)
        random_hv.append(r_final)
        ratios.append(s_final / r_final if r_final > 0 else math.nan)
        fraction = fraction_to_reach(s_curve, r_final, budget)
        reach.append(fraction)
        max_epochs = float(s_report["max_budget"])
        lines.append(
            f"| {seed} | {sum(s_report['status_counts'].values())} | {sum(r_report['status_counts'].values())} | "
            f"{full_budget_configs(s_trials, max_epochs)} | {full_budget_configs(r_trials, max_epochs)} | "
            f"{s_final:.3f} | {r_final:.3f} | "
            + ("never" if fraction is None else f"{fraction:.2f} of the budget")
            + " |"
        )
    lines += [
        "",
        f"Median final normalised hypervolume: smac {statistics.median(smac_hv):.3f}, random "
        f"{statistics.median(random_hv):.3f} (smac/random {spread(ratios, '{:.2f}')}); smac is ahead at the end "
        f"in {sum(1 for s, r in zip(smac_hv, random_hv, strict=True) if s > r)} of {len(smac_hv)} seeds.",
        "",
    ]
    return lines, {"ratios": ratios, "reach": reach, "smac": smac_hv, "random": random_hv}


def depth_sweep_section(sweeps: dict[str, list[tuple[int, float]]]) -> tuple[list[str], dict[str, bool]]:
    """Modelled energy of the default configuration at several shift depths: monotone or not."""
    lines = [
        "### Modelled energy (shift hardware, 45 nm table)",
        "",
        "The default configuration (DeepShift-PS, 5-bit weights, 16+16-bit activations) at several shift",
        "depths, from `greenshift profile` (energy per image; 0 = the float network):",
        "",
        "| backbone | " + " | ".join(f"depth {d}" for d, _ in next(iter(sweeps.values()))) + " |",
    ]
    lines.append("|---|" + "---|" * len(next(iter(sweeps.values()))))
    monotone = {}
    for backbone, sweep in sweeps.items():
        float_j = sweep[0][1]
        lines.append(
            f"| {backbone} | " + " | ".join(f"{j:.3g} J ({j / float_j:.2f}x)" for _, j in sweep) + " |"
        )
        monotone[backbone] = all(b[1] < a[1] for a, b in itertools.pairwise(sweep))
    lines.append("")
    return lines, monotone


def measured_section(
    smac_runs: dict[str, list[tuple[int, dict, list[dict]]]], meter: str
) -> tuple[list[str], dict]:
    """Modelled next to measured energy of each smac run's front and default."""
    lines = [
        f"### Measured energy on this machine ({meter}, CPU)",
        "",
        f"`greenshift report --remeasure --meter {meter}` measured the kept models of every front member and",
        "the default with greenshift's protocol (repeated readings until the spread settles, idle power",
        "subtracted). This is what the seeds measured: emissions of networks whose shifts are *simulated*",
        "(power-of-two weights in float arithmetic). CodeCarbon here has no power counters and estimates",
        "CPU power as TDP x load, so its joules follow the inference time.",
        "",
        "| backbone | seed | trial | configuration | modelled (J) | measured (J) | measured vs default | modelled vs default |",
        "|---|---|---|---|---|---|---|---|",
    ]
    facts: dict[str, Any] = {"pairs": 0, "rho": [], "cheaper_measured": 0, "cheaper_modelled": 0, "rows": 0}
    facts["best_loss_on_meter"] = {
        b: [] for b in smac_runs
    }  # per seed: best loss change at no more measured J
    facts["partial"] = {
        b: [0, 0] for b in smac_runs
    }  # partly shifted front members: [cheaper and no worse, all]
    for backbone, runs in smac_runs.items():
        for seed, report, _ in runs:
            check = report.get("energy_crosscheck") or {}
            rows = check.get("rows") or []
            default_row = next((r for r in rows if r.get("is_default")), None)
            members = {m["trial_id"]: m for m in report["pareto"]}
            if report.get("default"):
                members[report["default"]["trial_id"]] = report["default"]
            configs = {trial: m["config"] for trial, m in members.items()}
            facts["best_loss_on_meter"][backbone].append(
                _best_loss_on_meter(report, rows, default_row, members)
            )
            _count_partial(facts["partial"][backbone], report, rows, default_row, members)
            for row in rows:
                measured, modelled = row.get("energy_measured_j"), row.get("energy_model_j")
                vs_measured = vs_modelled = "–"
                if default_row and not row.get("is_default"):
                    if measured is not None and default_row.get("energy_measured_j"):
                        change = 100 * (measured / default_row["energy_measured_j"] - 1)
                        vs_measured = pct(change)
                        facts["rows"] += 1
                        facts["cheaper_measured"] += change < 0
                    if modelled is not None and default_row.get("energy_model_j"):
                        change = 100 * (modelled / default_row["energy_model_j"] - 1)
                        vs_modelled = pct(change)
                        facts["cheaper_modelled"] += change < 0 and measured is not None
                config = configs.get(row["trial_id"])
                lines.append(
                    f"| {backbone} | {seed} | {row['trial_id']}{'*' if row.get('is_default') else ''} | "
                    f"{describe(config) if config else '–'} | "
                    f"{'–' if modelled is None else f'{modelled:.3g}'} | {'–' if measured is None else f'{measured:.3g}'} | "
                    f"{vs_measured} | {vs_modelled} |"
                )
            trust = check.get("trust") or {}
            if trust.get("spearman_rho") is not None:
                facts["rho"].append(float(trust["spearman_rho"]))
            facts["pairs"] += int(trust.get("n") or 0)
    lines += [
        "",
        f"Spearman rank correlation between modelled and measured energy, per run (front + default): "
        f"{spread(facts['rho'], '{:+.2f}')}. Front members cheaper than the default: "
        f"{facts['cheaper_modelled']} of {facts['rows']} in the model, {facts['cheaper_measured']} of "
        f"{facts['rows']} on the meter. Front members that shift only part of the network and are both cheaper "
        "on the meter than the fully shifted default and no worse in loss: "
        + "; ".join(f"{b} {won} of {n}" for b, (won, n) in facts["partial"].items())
        + ".",
        "",
    ]
    return lines, facts


def _cheaper_on_meter(row: dict, default_row: dict | None) -> bool | None:
    """Whether a row's measured energy is at most the default's; None when either was not measured."""
    measured = row.get("energy_measured_j")
    base = None if default_row is None else default_row.get("energy_measured_j")
    return None if measured is None or not base else measured <= base


def _best_loss_on_meter(
    report: dict, rows: list[dict], default_row: dict | None, members: dict
) -> float | None:
    """Best loss change (negative) among front members with no more measured energy than the default."""
    default = report.get("default")
    best = None
    for row in rows:
        member = members.get(row["trial_id"])
        if (
            default is None
            or member is None
            or row.get("is_default")
            or not _cheaper_on_meter(row, default_row)
        ):
            continue
        change = 100 * (member["objectives"]["loss"] / default["objectives"]["loss"] - 1)
        best = change if best is None else min(best, change)
    return best if best is not None and best < 0 else None


def _count_partial(
    counts: list[int], report: dict, rows: list[dict], default_row: dict | None, members: dict
) -> None:
    """Add the partly shifted front members, and those cheaper on the meter and no worse in loss, to ``counts``."""
    default = report.get("default")
    if default is None:
        return
    for row in rows:
        member = members.get(row["trial_id"])
        if (
            member is None
            or row.get("is_default")
            or member["config"]["shift_depth"] >= default["config"]["shift_depth"]
        ):
            continue
        counts[1] += 1
        no_worse = member["objectives"]["loss"] <= default["objectives"]["loss"]
        counts[0] += bool(_cheaper_on_meter(row, default_row)) and no_worse


def gpu_section(gpu: dict | None, commands: Sequence[str]) -> list[str]:
    """The GPU check (bench/gpu.py) and the commands for the full study on CIFAR-10 with NVML."""
    lines = ["## On a GPU", ""]
    if gpu:
        machine = gpu.get("machine", {})
        lines += [
            f"`python bench/gpu.py` ran on an {gpu['device']} (torch {machine.get('torch')}, commit "
            f"`{machine.get('commit')}`): ResNet20 on CIFAR-10-shaped files (50,000 + 10,000 random 3x32x32",
            "images in CIFAR-10's own format, read by greenshift's `cifar10` reader; 40,000 train after the",
            f"validation split), {gpu['epochs']} epochs per configuration, interleaved twice; energy measured with",
            f"the {gpu['energy'].get('meter')} meter over the validation split, repeated.",
            "",
        ]
        lines += gpu_table(gpu)
        lines += [
            "",
            "On the GPU the simulated DSNNs take longer and more energy than the float network, while the model",
            "(shift hardware) prices them far below it: the two views disagree in direction, as on the CPU.",
            "",
        ]
    lines += [
        "The full study with NVML-measured energy on CIFAR-10 from local files is:",
        "",
        "```",
        *commands,
        "```",
        "",
    ]
    return lines


def claims_table(
    facts: dict[str, dict], random_facts: dict | None, measured: dict, monotone: dict[str, bool]
) -> list[str]:
    """One row per claim of the seeds: greenshift's figure, the seeds' figure, the verdict."""
    rows = [
        "## The seeds' claims, checked",
        "",
        "| claim (seeds) | greenshift (median over seeds, range) | verdict |",
        "|---|---|---|",
    ]
    model_view = "; ".join(f"{b}: {spread(f['loss_changes'])}" for b, f in facts.items())
    meter_view = "; ".join(f"{b}: {spread(v)}" for b, v in measured["best_loss_on_meter"].items())
    model_agrees = [b for b, f in facts.items() if any(c is not None for c in f["loss_changes"])]
    meter_agrees = [b for b, v in measured["best_loss_on_meter"].items() if any(c is not None for c in v)]
    rows.append(
        f"| {SEEDS_CLAIMS['both']} | best loss change among front configurations with no more energy than the "
        f"default; modelled energy: {model_view}; measured energy (CodeCarbon): {meter_view} | "
        f"agrees in direction for {', '.join(model_agrees) or 'no backbone'} in the model and for "
        f"{', '.join(meter_agrees) or 'no backbone'} on the meter; where it holds the change is larger than 20 %, "
        "because on digits the default errs on few images and a few images are many percent of its error |"
    )
    energy = "; ".join(f"{b}: {spread(f['energy_changes'])}" for b, f in facts.items())
    best = min((c for f in facts.values() for c in f["energy_changes"] if c is not None), default=None)
    rows.append(
        f"| {SEEDS_CLAIMS['energy']} | best modelled-energy change at no worse loss; {energy}; best single run "
        f"{pct(best)}. On the meter (CodeCarbon) {measured['cheaper_measured']} of {measured['rows']} front members "
        "use less energy than the default | "
        + (
            "agrees in the model (more than 60 % in some runs)"
            if best is not None and best <= -60
            else "agrees in direction in the model"
        )
        + " where a configuration at no worse loss exists; on the meter the savings are smaller (table above) |"
    )
    partial = "; ".join(
        f"{b}: {f['partial_members']} of {f['front_members']} front members shift fewer than all {f['full_depth']} layers"
        for b, f in facts.items()
    )
    won = "; ".join(f"{b} {w} of {n}" for b, (w, n) in measured["partial"].items())
    some_won = any(w for w, _ in measured["partial"].values())
    rows.append(
        f"| {SEEDS_CLAIMS['partial']} | {partial}. Of those, cheaper on the meter than the fully shifted default "
        f"and no worse in loss: {won} | "
        + ("**agrees on the meter**: " if some_won else "not seen on the meter here; ")
        + "measured where shifts are simulated (as the seeds measured), every shifted layer costs more than a float "
        "layer (GPU table), so a partly shifted network can be cheaper and as accurate. "
        + (
            "**Impossible in the model by construction**: in greenshift's energy model of shift hardware every "
            "further shifted layer lowers the energy (table above), so the energy optimum is full depth and a "
            "partly shifted network can only trade energy for loss"
            if all(monotone.values())
            else "The modelled energy is not monotone in depth here (table above)"
        )
        + " |"
    )
    in_model = [b for b, f in facts.items() if any(c is not None for c in f["loss_changes"])]
    on_meter = [b for b, v in measured["best_loss_on_meter"].items() if any(c is not None for c in v)]
    verdict = (
        "agrees in both views"
        if len(in_model) == len(on_meter) == len(facts)
        else f"agrees on the meter for {len(on_meter)} of {len(facts)} backbones, in the model for {len(in_model)} "
        "(see the backbone sections)"
    )
    rows.append(
        f"| {SEEDS_CLAIMS['backbones']} | a configuration with lower loss at no more energy than the default exists "
        f"in the model for {', '.join(in_model) or 'no backbone'}, on the meter for {', '.join(on_meter) or 'no backbone'} "
        f"(of {', '.join(facts)}) | {verdict} |"
    )
    if random_facts:
        rows.append(
            f"| (greenshift's own) multi-fidelity search beats random search at the same budget | final normalised "
            f"hypervolume smac/random {spread(random_facts['ratios'], '{:.2f}')}; smac reaches random's final value after "
            f"{spread(random_facts['reach'], '{:.2f}')} of the budget | "
            + ("agrees" if statistics.median(random_facts["ratios"]) > 1 else "not at this budget")
            + " |"
        )
    return [*rows, ""]
