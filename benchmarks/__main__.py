"""Run every benchmark, each side by side with its baseline: ``python -m benchmarks`` (or ``make bench``).

Each one writes its raw results to benchmarks/results/<name>.json and prints its ratios.
``python -m benchmarks run_overhead`` runs just one.
"""

from __future__ import annotations

import importlib
import sys

#: Module names under benchmarks/, in the order they run (cheapest first).
BENCHMARKS = ["cli_latency", "run_overhead", "quota_admission", "sweeps"]


def main(argv: list[str]) -> int:
    chosen = argv or BENCHMARKS
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    for name in chosen:
        print(f"\n== {name} ==", flush=True)
        importlib.import_module(f"benchmarks.{name}").main([])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
