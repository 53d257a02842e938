"""Cost of the canary audit: seconds per attacked round against seconds per normal round.

Runs one scenario with the audit on every second round (so attacked and normal rounds
come from the same run, same process, same warm Ray) and prints the medians over rounds
2 .. R-1 and their ratio:

    .venv/bin/python benchmarks/audit_cost.py scenarios/quickstart.yaml --set rounds=11
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from scenario_args import scenario_parser

from fedsim.config import load_scenario
from fedsim.runner import run_scenario


def main() -> None:
    args = scenario_parser(__doc__, engine=True).parse_args()
    scenario = load_scenario(args.scenario, overrides=["audit.enabled=true", "audit.every=2", *args.set])
    with tempfile.TemporaryDirectory() as out:
        rows = run_scenario(scenario=scenario, out_dir=Path(out), engine=args.engine).rows
    rows = rows[1:-1]  # round 1 is always audited and pays for warm-up; the last round always evaluates
    attacked = [r.seconds for r in rows if r.epsilon_round_empirical is not None]
    normal = [r.seconds for r in rows if r.epsilon_round_empirical is None]
    a, n = statistics.median(attacked), statistics.median(normal)
    print(
        f"engine {args.engine}: attacked rounds {len(attacked)}, median {a:.2f} s; normal rounds {len(normal)}, median {n:.2f} s"
    )
    print(f"ratio attacked / normal: {a / n:.2f}")
    healths = [r.canary_health for r in rows if r.canary_health is not None]
    print(f"canary health: median {statistics.median(healths):.3f}, min {min(healths):.3f}")


if __name__ == "__main__":
    main()
