"""Shared helpers of the benchmarks: machine description and result files."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": _commit(),
    }


def _commit() -> str | None:
    """The checkout's commit (``+changes`` when the working tree differs), so each figure names its code."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=RESULTS.parent, capture_output=True, text=True)
        return done.stdout.strip()

    # A copy made elsewhere (e.g. on a borrowed GPU machine) names its commit in BENCH_COMMIT: its own
    # git metadata, if any came along, need not match the code it runs.
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return None
    # Results written by earlier benchmarks of the same `make bench` are not changes to the code.
    changed = git("status", "--porcelain", "--untracked-files=no", "--", "..", ":!results", ":!../docs")
    return commit + ("+changes" if changed else "")


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``bench/results/NAME.json`` (with the machine) and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2, sort_keys=True))
    return path


def hypervolume_curve(result: Any, reference: Any) -> tuple[Any, ...]:
    """The run's hypervolume over consumed epochs (``greenshift.store`` BudgetSteps), by the report's rules."""
    from greenshift.store import hypervolume_curve as curve_of
    from greenshift.store.front import budget_steps

    return curve_of(budget_steps(result.trials, result.objectives, result.max_epochs), reference)


def hypervolume_at(curve: Any, budget: float) -> float:
    """Hypervolume reached once ``budget`` epochs were consumed (0 before the first point)."""
    from greenshift.store.front import hypervolume_at as at

    return at(curve, budget)


def common_reference(results: list[Any]) -> Any:
    """One reference point for runs on the same problem: loss 1.0, energy 1.1x the default's worst value."""
    from greenshift.objectives.pareto import reference_point_for

    baseline: dict[str, float] = {}
    for result in results:
        if result.default is None:
            continue
        for name, value in result.default.objectives.items():
            baseline[name] = max(baseline.get(name, 0.0), value)
    return reference_point_for(list(results[0].objectives), baseline)


def search_in_tempdir(*, facade_class: Any = None, **settings: Any) -> tuple[Any, float]:
    """Run one search in a throw-away run directory; return its SearchResult and wall seconds.

    ``facade_class`` (a subclass of the optimiser's ``greenshift.search.facades`` class) builds a variant
    of SMAC's side of the search.
    """
    import shutil
    import tempfile

    from greenshift.search import DSNNSearch, SearchSettings

    out = tempfile.mkdtemp(prefix="gs-bench-")
    try:
        start = time.perf_counter()
        search_settings = SearchSettings(dataset="digits", out=out, device="cpu", **settings)
        result = DSNNSearch(search_settings, facade_class=facade_class).run()
        return result, time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)


def budget_limited_search(
    *,
    optimizer: str = "smac",
    seed: int,
    budget: int,
    backbone: str = "small_cnn",
    max_epochs: int = 9,
    **extra: Any,
) -> Any:
    """One search of 1 to ``max_epochs`` epochs per trial (eta 3) that stops at ``budget`` epochs in all."""
    result, _ = search_in_tempdir(
        backbone=backbone,
        optimizer=optimizer,
        trials=10_000,
        min_epochs=1,
        max_epochs=max_epochs,
        eta=3,
        seed=seed,
        max_total_epochs=budget,
        keep_models="none",
        **extra,
    )
    return result


def add_threads_flag(parser: Any, default: int) -> None:
    """``--threads``: torch's and onnxruntime's thread count for a benchmark that times both."""
    parser.add_argument(
        "--threads",
        type=int,
        default=default,
        help=f"threads of torch and onnxruntime (default {default}; 1 on a busy shared machine, where "
        "waiting threads of a parallel kernel are descheduled)",
    )
