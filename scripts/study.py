"""Reproduction study: run `greenshift search` + `greenshift report` per backbone and seed, write docs/study.md.

Every figure in docs/study.md comes from the report JSON of the runs this script makes; nothing is
typed by hand. Runs are resumable (the run directories are kept), so an interrupted study continues.

    python scripts/study.py [--backbones resnet20 mobilenetv2] [--seeds 0 1 2] [--max-total-epochs 60 mobilenetv2=45]
    python scripts/study.py ... --render-only   # rewrite the page from finished runs
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import study_page

from results import made_before

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str], log: Path) -> None:
    """Run a greenshift command, appending its output to ``log``; stop the study if it fails."""
    printable = " ".join(shlex.quote(c) for c in command)
    print(f"$ {printable}", flush=True)
    with log.open("a") as handle:
        handle.write(f"$ {printable}\n")
        handle.flush()
        code = subprocess.call(executable(command), stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    if code != 0:
        sys.exit(f"command failed with exit code {code}: {printable} (see {log})")


def executable(command: list[str]) -> list[str]:
    """``greenshift ...`` as run by this Python (the printed commands keep the short form)."""
    return [sys.executable, "-m", "greenshift", *command[1:]]


def per_backbone(backbone: str, values: list[str], flag: str) -> int:
    """The value of ``backbone`` from ``values`` given as ``N`` or ``BACKBONE=N`` (the latter wins)."""
    default = None
    for item in values:
        name, _, value = item.rpartition("=")
        if name == backbone:
            return int(value)
        if not name:
            default = int(value)
    if default is None:
        sys.exit(f"{flag} gives no value for {backbone}")
    return default


@dataclass(frozen=True)
class StudyRun:
    """One `greenshift search` of the study: a backbone searched by one optimiser with one seed."""

    backbone: str
    optimizer: str
    seed: int

    def out(self, args: argparse.Namespace) -> Path:
        """The run directory, relative to the repository root (as the printed commands show it)."""
        return Path(args.runs) / f"{self.backbone}-{self.optimizer}-seed{self.seed}"


def search_command(run: StudyRun, args: argparse.Namespace) -> list[str]:
    """The exact `greenshift search` command of one study run."""
    command = ["greenshift", "search", "--dataset", "digits", "--backbone", run.backbone]
    command += ["--optimizer", run.optimizer, "--seed", str(run.seed), "--trials", str(args.trials)]
    command += ["--min-epochs", str(per_backbone(run.backbone, args.min_epochs, "--min-epochs"))]
    command += ["--max-epochs", str(args.max_epochs), "--eta", "3"]
    command += [
        "--max-total-epochs",
        str(per_backbone(run.backbone, args.max_total_epochs, "--max-total-epochs")),
    ]
    # One thread per trial so that --jobs searches share the cores without oversubscribing them.
    command += [
        "--device",
        "cpu",
        "--threads-per-trial",
        "1",
        "--keep-models",
        "pareto",
        "--out",
        str(run.out(args)),
    ]
    if args.image_size:
        command += ["--image-size", str(args.image_size)]
    return command


def remeasure_command(run: StudyRun, args: argparse.Namespace) -> list[str]:
    """Measure front and default models with CodeCarbon on this machine (cached in the run)."""
    return ["greenshift", "report", str(run.out(args)), "--remeasure", "--meter", args.meter]


def report_command(run: StudyRun, args: argparse.Namespace) -> list[str]:
    """The report JSON the page is rendered from."""
    return ["greenshift", "report", str(run.out(args)), "--json"]


def run_searches(runs: list[StudyRun], args: argparse.Namespace, runs_dir: Path) -> None:
    """The searches, ``args.jobs`` at a time; each resumes where an earlier study stopped."""
    logs = runs_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def one(run_: StudyRun) -> None:
        run(search_command(run_, args), logs / f"{run_.out(args).name}.log")

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for future in [pool.submit(one, r) for r in runs]:
            future.result()


#: The two configurations whose convergence decides the budgets: the all-float network and the default DSNN.
CONVERGENCE_CONFIGS = {"float": ["--set", "shift_depth=0"], "default DSNN": []}


def convergence_command(
    backbone: str, label: str, epochs: int, seed: int, image_size: int | None
) -> list[str]:
    """`greenshift train` of one point of the convergence curve (one budget, one seed)."""
    command = ["greenshift", "train", "--dataset", "digits", "--backbone", backbone, "--epochs", str(epochs)]
    command += ["--seed", str(seed), "--device", "cpu", *CONVERGENCE_CONFIGS[label], "--json"]
    if image_size:
        command += ["--image-size", str(image_size)]
    return command


def convergence_path(runs_dir: Path, backbone: str, label: str, epochs: int, seed: int) -> Path:
    """Where the JSON of one convergence point is kept."""
    slug = label.replace(" ", "-").lower()
    return runs_dir / "convergence" / f"{backbone}-{slug}-e{epochs}-s{seed}.json"


def convergence_seeds(backbone: str, args: argparse.Namespace) -> list[int]:
    """The training seeds of ``backbone``'s convergence curve."""
    own = [
        int(item.rpartition("=")[2]) for item in args.convergence_seeds if item.rpartition("=")[0] == backbone
    ]
    return own or [int(item) for item in args.convergence_seeds if "=" not in item]


def convergence_points(args: argparse.Namespace):
    """Every (backbone, configuration label, epochs, seed) of the convergence curve."""
    for backbone in args.backbones:
        for label in CONVERGENCE_CONFIGS:
            for epochs in args.convergence_epochs:
                for seed in convergence_seeds(backbone, args):
                    yield backbone, label, epochs, seed


def load_convergence(args: argparse.Namespace, runs_dir: Path) -> list[dict]:
    """The kept convergence points: backbone, label, epochs, seed, validation accuracy, training time."""
    points = []
    for backbone, label, epochs, seed in convergence_points(args):
        path = convergence_path(runs_dir, backbone, label, epochs, seed)
        if path.exists():
            result = json.loads(path.read_text())
            points.append(
                {
                    "backbone": backbone,
                    "label": label,
                    "epochs": epochs,
                    "seed": seed,
                    "val_accuracy": result["val_accuracy"],
                    "train_time_s": result["train_time_s"],
                }
            )
    return points


def run_convergence(args: argparse.Namespace, runs_dir: Path, log: Path, *, run_it: bool) -> list[str]:
    """Train float and default per backbone, budget and seed (skipping points already kept); their commands."""
    commands = []
    for backbone, label, epochs, seed in convergence_points(args):
        command = convergence_command(backbone, label, epochs, seed, args.image_size)
        path = convergence_path(runs_dir, backbone, label, epochs, seed)
        printable = " ".join(command) + f" > {path.relative_to(ROOT)}"
        commands.append(printable)
        if not run_it or path.exists():
            continue
        print(f"$ {printable}", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(executable(command), cwd=ROOT, capture_output=True, text=True)
        with log.open("a") as handle:
            handle.write(f"$ {printable}\n{result.stderr}")
        if result.returncode != 0:
            sys.exit(f"command failed with exit code {result.returncode}: {printable} (see {log})")
        path.write_text(result.stdout)
    return commands


PHASES = ("convergence", "search", "measure", "render")


def main() -> None:
    """Run the study (or continue it) and write docs/study.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet20", "mobilenetv2"], help="backbones")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="search seeds")
    parser.add_argument(
        "--random-backbones", nargs="*", default=["resnet20"], help="backbones also searched by random search"
    )
    parser.add_argument("--trials", type=int, default=400, help="upper bound of trials per run")
    parser.add_argument(
        "--min-epochs",
        nargs="+",
        default=["1", "mobilenetv2=3"],
        metavar="[BACKBONE=]EPOCHS",
        help="smallest budget of a trial; BACKBONE=EPOCHS sets one backbone's",
    )
    parser.add_argument("--max-epochs", type=int, default=27, help="largest budget of a trial")
    parser.add_argument(
        "--max-total-epochs",
        nargs="+",
        default=["741", "mobilenetv2=234"],
        metavar="[BACKBONE=]EPOCHS",
        help="epochs per run (the real limit); BACKBONE=EPOCHS sets one backbone's",
    )
    parser.add_argument("--image-size", type=int, default=None, help="digits image side (default: digits' 8)")
    parser.add_argument(
        "--convergence-epochs",
        nargs="+",
        type=int,
        default=[1, 3, 9, 27, 54],
        help="budgets of the convergence curve",
    )
    parser.add_argument(
        "--convergence-seeds",
        nargs="+",
        default=["0", "1", "2", "mobilenetv2=0"],
        metavar="[BACKBONE=]SEED",
        help="training seeds of the convergence curve; BACKBONE=SEED entries replace the list for that backbone",
    )
    parser.add_argument("--jobs", type=int, default=2, help="searches run at the same time")
    parser.add_argument("--meter", default="codecarbon", help="energy meter of the measured view")
    parser.add_argument(
        "--phases", nargs="+", choices=PHASES, default=list(PHASES), help="what to do (default: everything)"
    )
    parser.add_argument("--runs", default="runs/study", help="where the run directories go")
    parser.add_argument("--out", default="docs/study.md", help="the page to write")
    parser.add_argument(
        "--render-only", action="store_true", help="only write the page from finished runs (--phases render)"
    )
    args = parser.parse_args()
    if args.render_only:
        args.phases = ["render"]
    runs_dir = ROOT / args.runs
    runs_dir.mkdir(parents=True, exist_ok=True)
    log = runs_dir / "study.log"
    provenance = runs_dir / "commit.txt"
    if "search" in args.phases:
        provenance.write_text(current_commit() + "\n")
    args.commit = provenance.read_text().strip() if provenance.exists() else None
    runs = [StudyRun(b, "smac", seed) for b in args.backbones for seed in args.seeds]
    runs += [StudyRun(b, "random", seed) for b in args.random_backbones for seed in args.seeds]
    commands = run_convergence(args, runs_dir, log, run_it="convergence" in args.phases)
    if "search" in args.phases:
        run_searches(runs, args, runs_dir)
    reports: dict[StudyRun, dict] = {}
    for study_run in runs:
        out = study_run.out(args)
        commands.append(" ".join(search_command(study_run, args)))
        if study_run.optimizer == "smac":
            commands.append(" ".join(remeasure_command(study_run, args)))
            if "measure" in args.phases:
                run(remeasure_command(study_run, args), log)
        report_path = ROOT / out / "report.json"
        commands.append(f"{' '.join(report_command(study_run, args))} > {out / 'report.json'}")
        if "search" in args.phases or "measure" in args.phases:
            with report_path.open("w") as handle:
                code = subprocess.call(executable(report_command(study_run, args)), stdout=handle, cwd=ROOT)
            if code != 0:
                sys.exit(f"greenshift report failed for {out}")
        if not report_path.exists():
            sys.exit(f"{out} has no report.json; run the study first")
        reports[study_run] = json.loads(report_path.read_text())
    if "render" in args.phases:
        (ROOT / args.out).write_text(render(reports, load_convergence(args, runs_dir), commands, args))
        print(f"written {args.out}")


# The commit that made DSNNs train as DeepShift's do (docs/concepts.md, "Training DSNNs from scratch").
# Runs made before it are flagged on the page: their default DSNN did not learn.
TRAINING_FIX_COMMIT = "bd340bd"


def current_commit() -> str:
    """The repository's commit, with ``+changes`` when the working tree differs from it."""

    def git(*command: str) -> str:
        return subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    # Changes to docs/ (this page among them) are not changes to the code that made the figures.
    return commit + (
        "+changes" if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs") else ""
    )


def captured(command: list[str]) -> Any:
    """The JSON a read-only greenshift command prints (trials, profile)."""
    done = subprocess.run(executable(command), cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"command failed: {' '.join(command)}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def depth_sweeps(
    backbones: list[str], full_depths: dict[str, int], args: argparse.Namespace
) -> tuple[dict, list[str]]:
    """Modelled energy of the default configuration at five shift depths per backbone, with the commands."""
    sweeps, commands = {}, []
    for backbone in backbones:
        full = full_depths[backbone]
        depths = sorted({0, full // 4, full // 2, 3 * full // 4, full})
        sweeps[backbone] = []
        for depth in depths:
            command = ["greenshift", "profile", "--backbone", backbone, "--dataset", "digits"]
            command += ["--set", f"shift_depth={depth}", "--json"]
            if args.image_size:
                command += ["--image-size", str(args.image_size)]
            commands.append(" ".join(command))
            sweeps[backbone].append((depth, float(captured(command)["totals"]["energy_j"])))
    return sweeps, commands


def backbone_macs(backbones: list[str], args: argparse.Namespace) -> tuple[dict[str, int], list[str]]:
    """Multiply-accumulates per image of each backbone at the study's image size, with the commands."""
    macs, commands = {}, []
    for backbone in backbones:
        command = ["greenshift", "profile", "--backbone", backbone, "--dataset", "digits", "--json"]
        if args.image_size:
            command += ["--image-size", str(args.image_size)]
        commands.append(" ".join(command))
        macs[backbone] = int(captured(command)["totals"]["macs"])
    return macs, commands


def scope_line(
    macs: dict[str, int], total_epochs: dict[str, int], minutes_per_run: dict[str, float]
) -> list[str]:
    """Which backbones the study covers, and why GoogLeNet is not one of them (its cost, from the profile)."""
    first, *others = list(total_epochs)
    ratio = {b: macs[b] / macs[first] for b in macs}
    covered = ", ".join(
        f"{b} ({macs[b] / 1e6:.1f} M MACs per image, {total_epochs[b]} epochs per run, "
        f"median {minutes_per_run[b]:.0f} min per search)"
        for b in total_epochs
    )
    lines = [f"- Backbones: {covered}."]
    if "googlenet" in macs and "googlenet" not in total_epochs:
        heaviest = max(others or [first], key=lambda b: ratio[b])
        lines += [
            f"  GoogLeNet is not in this study: it does {macs['googlenet'] / 1e6:.1f} M MACs per image,"
            f" {ratio['googlenet']:.0f}x {first}'s ({heaviest}: {ratio[heaviest]:.1f}x), so three seeds at",
            "  a budget at which it converges do not fit the study's 2 hours on 2 cores.",
        ]
    return lines


def plot_convergence(points: list[dict], path: Path) -> None:
    """Accuracy over the training budget, one line per backbone and configuration (median over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for backbone, label in sorted({(p["backbone"], p["label"]) for p in points}):
        epochs = sorted({p["epochs"] for p in points if (p["backbone"], p["label"]) == (backbone, label)})
        medians = [
            statistics.median(
                p["val_accuracy"]
                for p in points
                if (p["backbone"], p["label"], p["epochs"]) == (backbone, label, e)
            )
            for e in epochs
        ]
        ax.plot(
            epochs,
            medians,
            marker="o",
            linestyle="-" if label == "float" else "--",
            label=f"{backbone}, {label}",
        )
    ax.axhline(1 - study_page.CHANCE_LOSS, color="grey", linewidth=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("training budget (epochs, cosine schedule over the budget)")
    ax.set_ylabel("validation accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_hypervolume(curves: dict[str, list[list[tuple[float, float]]]], path: Path) -> None:
    """Normalised hypervolume over consumed epochs, every seed of smac and random."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for (name, runs), colour in zip(curves.items(), ("tab:blue", "tab:orange"), strict=False):
        for index, curve in enumerate(runs):
            xs = [x for x, _ in curve]
            ys = [y for _, y in curve]
            ax.step(xs, ys, where="post", color=colour, alpha=0.8, label=name if index == 0 else None)
    ax.set_xlabel("epochs consumed")
    ax.set_ylabel("normalised hypervolume")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def study_command(args: argparse.Namespace) -> str:
    """The command that makes this study (its settings written out)."""
    parts = ["python scripts/study.py", "--backbones", *args.backbones, "--seeds", *map(str, args.seeds)]
    parts += ["--random-backbones", *args.random_backbones, "--min-epochs", *args.min_epochs]
    parts += ["--max-epochs", str(args.max_epochs), "--max-total-epochs", *args.max_total_epochs]
    parts += [
        "--convergence-epochs",
        *map(str, args.convergence_epochs),
        "--convergence-seeds",
        *args.convergence_seeds,
    ]
    parts += ["--jobs", str(args.jobs), "--meter", args.meter]
    return " ".join(parts + (["--image-size", str(args.image_size)] if args.image_size else []))


def render(
    reports: dict[StudyRun, dict], points: list[dict], commands: list[str], args: argparse.Namespace
) -> str:
    """The markdown page, built only from what the greenshift commands returned."""
    page_commit = current_commit()
    trials = {r: captured(["greenshift", "trials", str(r.out(args)), "--json"]) for r in reports}
    by = {
        (backbone, optimizer): [
            (r.seed, reports[r], trials[r])
            for r in reports
            if (r.backbone, r.optimizer) == (backbone, optimizer)
        ]
        for backbone in args.backbones
        for optimizer in ("smac", "random")
    }
    images = ROOT / "docs" / "img"
    images.mkdir(parents=True, exist_ok=True)
    plot_convergence(points, images / "study-convergence.png")
    lines = [
        "# Reproduction study",
        "",
        "Generated by `python scripts/study.py` from `greenshift train`, `search`, `report`, `trials` and",
        "`profile` runs only; every figure below is computed from their output (no hand-edited values); the",
        "exact commands are at the end. `python scripts/study.py --render-only` rewrites this page from the",
        "kept runs.",
        "",
        f"- Runs made at greenshift commit `{args.commit}`; page written at `{page_commit}`. The restructuring",
        "  in between changed no training or objective; SMAC's local-search start points are now ordered by",
        '  value instead of by Python\'s hash (docs/search.md, "Repeatability"), so rerunning the searches at',
        "  a later commit gives runs of the same kind, not the same trials.",
        *(
            [
                f"- **These runs predate commit `{TRAINING_FIX_COMMIT}`**, which made DSNNs train as DeepShift's do",
                "  (docs/concepts.md): their default DSNN did not learn, and their figures say little.",
            ]
            if made_before(args.commit, TRAINING_FIX_COMMIT)
            else []
        ),
        f"- Data: scikit-learn digits, {args.image_size or 8}x{args.image_size or 8}, 1 channel, 10 classes (chance: "
        f"loss {study_page.CHANCE_LOSS}). Objectives `loss` (1 - validation accuracy) and `energy_model_j`. CPU, 2 cores,",
        f"  {args.jobs} searches at a time with one thread per trial.",
    ]
    smac_facts, smac_runs = {}, {}
    body: list[str] = []
    for backbone in args.backbones:
        runs = by[(backbone, "smac")]
        smac_runs[backbone] = runs
        section, smac_facts[backbone] = study_page.backbone_section(
            backbone, runs, args.max_epochs, measured=True
        )
        body += section
    random_facts = None
    for backbone in args.random_backbones:
        budget = per_backbone(backbone, args.max_total_epochs, "--max-total-epochs")
        section, random_facts = study_page.random_section(
            backbone, by[(backbone, "smac")], by[(backbone, "random")], budget
        )
        plot_hypervolume(
            {
                "smac": [study_page.normalised_curve(rep) for _, rep, _ in by[(backbone, "smac")]],
                "random": [study_page.normalised_curve(rep) for _, rep, _ in by[(backbone, "random")]],
            },
            images / "study-hypervolume.png",
        )
        body += [
            *section,
            "![normalised hypervolume over epochs, smac and random](img/study-hypervolume.png)",
            "",
        ]
    macs, macs_commands = backbone_macs([*args.backbones, "googlenet"], args)
    lines += scope_line(
        macs,
        {b: per_backbone(b, args.max_total_epochs, "--max-total-epochs") for b in args.backbones},
        {b: statistics.median(study_page.minutes(rep) for _, rep, _ in smac_runs[b]) for b in args.backbones},
    )
    lines.append("")
    full_depths = {b: smac_facts[b]["full_depth"] for b in args.backbones}
    sweeps, profile_commands = depth_sweeps(args.backbones, full_depths, args)
    sweep_lines, monotone = study_page.depth_sweep_section(sweeps)
    measured_lines, measured = study_page.measured_section(smac_runs, args.meter)
    gpu_path = ROOT / "bench" / "results" / "gpu.json"
    gpu = json.loads(gpu_path.read_text()) if gpu_path.exists() else None
    claims = study_page.claims_table(smac_facts, random_facts, measured, monotone)
    budgets = ", ".join(
        f"{b}: {per_backbone(b, args.min_epochs, '--min-epochs')} to {args.max_epochs} epochs (eta 3), "
        f"{per_backbone(b, args.max_total_epochs, '--max-total-epochs')} epochs per run"
        for b in args.backbones
    )
    defaults = "; ".join(
        f"{b} median {study_page.spread([1 - x for x in smac_facts[b]['default_losses']], '{:.3f}')}"
        for b in args.backbones
    )
    lines += claims
    lines += study_page.convergence_section(points, args.convergence_epochs, "img/study-convergence.png")
    lines += [
        f"Budgets chosen from this: {budgets}. A trial at the full budget is at or near convergence for both",
        "configurations of both backbones (from 27 to 54 epochs they gain about a point of accuracy at most); at 1",
        "epoch MobileNetV2 is still at chance, so its searches start at 3 epochs. The total per run affords about",
        "two Hyperband iterations for ResNet20 and one for MobileNetV2, so several configurations reach the full",
        'budget in every run (column "configurations at the full budget" below).',
        "",
        f"**The default DSNN learned:** its validation accuracy at the full budget in the searches was {defaults}",
        f"(chance: {1 - study_page.CHANCE_LOSS:.1f}).",
        "",
        *body,
        "## Two energy views",
        "",
        *sweep_lines,
        *measured_lines,
        *study_page.gpu_section(
            gpu,
            [
                "greenshift search --dataset cifar10 --data-dir /data --backbone resnet20 --device cuda \\",
                "    --objectives loss,energy_measured_j --meter nvml --trials 200 --min-epochs 2 --max-epochs 54 \\",
                "    --seed 0 --out runs/study-gpu/resnet20-seed0",
                "greenshift report runs/study-gpu/resnet20-seed0",
            ],
        ),
        "## Commands",
        "",
        "```",
        study_command(args),
        *commands,
        *profile_commands,
        *macs_commands,
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
