"""Run every benchmark one after another (``make bench``); each writes bench/results/NAME.json.

    python bench/run_all.py [--quick] [--only NAME ...]

Benchmarks compare variants measured side by side in one run and print ratios; absolute times on a
shared machine mean little. ``--quick`` runs each in its smoke size.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "shift_layers",
    "train_loop",
    "energy_meters",
    "search_overhead",
    "dask_scaling",
    "continue_promoted",
    "search_efficiency",
    "smac_settings",
    "deploy",
    "calibration",
)


def main() -> int:
    """Run the selected benchmarks; return non-zero if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized runs")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    args = parser.parse_args()
    failed = []
    for name in args.only or BENCHMARKS:
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        command = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if args.quick else [])]
        code = subprocess.call(command, cwd=HERE)
        print(f"--- {name}: exit {code}, {time.perf_counter() - start:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
