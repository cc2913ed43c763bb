"""Run opsflow's benchmarks: ``uv run python -m bench [NAME ...] [--quick] [--json]``.

Each benchmark measures opsflow and a baseline in the same run and prints the
figure, the baseline, their ratio, the target and whether it is met. Exit code
1 when a target is missed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys

from bench.common import BenchResult

# name -> module under bench/ exposing ``run(quick: bool) -> BenchResult``
BENCHMARKS: dict[str, str] = {
    "startup": "bench.startup",
    "history-import": "bench.history_import",
    "probes": "bench.probes",
    "checksum": "bench.checksum",
    "drill-rto": "bench.drill_rto",
    "sla-report": "bench.sla_report",
    "probe-upkeep": "bench.probe_upkeep",
    "capacity": "bench.capacity",
    "data-quality": "bench.data_quality",
    "monthly-report": "bench.monthly_report",
    "orchestration": "bench.orchestration",
    "probe-scale": "bench.probe_scale",
    "history-scale": "bench.history_scale",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of: {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes: everything in under 5 minutes")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")

    results: list[BenchResult] = []
    for name in args.names or list(BENCHMARKS):
        print(f"running {name}...", file=sys.stderr)
        result = importlib.import_module(BENCHMARKS[name]).run(quick=args.quick)
        results.append(result)
        if not args.json:
            print(
                f"{result.name:16} {result.figure:10.3f} {result.unit:8} baseline {result.baseline:10.3f} "
                f"({result.baseline_name})  ratio {result.ratio:.2f}  target {result.target}  "
                f"{'MET' if result.met else 'MISSED'}\n{'':16} {result.notes}"
            )
    if args.json:
        document = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "quick": args.quick,
            "benchmarks": [r.as_dict() for r in results],
        }
        print(json.dumps(document))
    return 0 if all(r.met for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
