"""Per-round cost of Flower on Ray against the same training called in-process.

Runs one scenario with both engines in this process and prints the median seconds per
round of each and their ratio (the per-client overhead the speed work must remove):

    .venv/bin/python benchmarks/overhead.py scenarios/quickstart.yaml --set rounds=10
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from scenario_args import scenario_parser

from fedsim.config import load_scenario
from fedsim.runner import run_scenario


def main() -> None:
    args = scenario_parser(__doc__).parse_args()
    scenario = load_scenario(args.scenario, overrides=args.set)
    medians = {}
    with tempfile.TemporaryDirectory() as out:
        for engine in ("inprocess", "flower"):
            rows = run_scenario(scenario=scenario, out_dir=Path(out), engine=engine).rows
            per_round = [row.seconds for row in rows[1:]]  # round 1 pays for warm-up
            medians[engine] = statistics.median(per_round)
            print(f"{engine:10s} median {medians[engine]:.3f} s/round  final accuracy {rows[-1].eval_accuracy:.3f}")
    print(f"ratio flower / inprocess: {medians['flower'] / medians['inprocess']:.2f}")


if __name__ == "__main__":
    main()
