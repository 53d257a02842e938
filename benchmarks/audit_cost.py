"""Cost of the canary audit: seconds per round of a run that audits against the same run
without the audit.

Runs the scenario twice in this process (same engine, same seed, same rounds): once with
the audit off, then with the audit on every ``--every``-th round (default: every round).
A round's seconds are the time between the ends of consecutive rounds, as a user waits
for them (an audit overlaps the next round's training, so a round's own ``seconds``
column would not show what it costs the run); medians over rounds 2 .. R-1 (round 1
warms up, the last round always evaluates), and their ratio:

    .venv/bin/python benchmarks/audit_cost.py scenarios/quickstart.yaml --set rounds=12
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from scenario_args import scenario_parser

from fedsim.config import load_scenario
from fedsim.runner import run_scenario


def seconds_per_round(scenario, *, engine: str) -> tuple[float, list]:
    """Median seconds between the ends of rounds 2 .. R-1, and the rows."""
    ends: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        rows = run_scenario(
            scenario=scenario, out_dir=Path(out), engine=engine, on_round=lambda _: ends.append(time.perf_counter())
        ).rows
    return statistics.median(b - a for a, b in zip(ends[:-2], ends[1:-1])), rows


def main() -> None:
    parser = scenario_parser(__doc__, engine=True)
    parser.add_argument("--every", type=int, default=1, help="audit every k-th round (default 1)")
    args = parser.parse_args()
    base = load_scenario(args.scenario, overrides=["audit.enabled=false", *args.set])
    audited = load_scenario(args.scenario, overrides=["audit.enabled=true", f"audit.every={args.every}", *args.set])
    plain_s, _ = seconds_per_round(base, engine=args.engine)
    audited_s, rows = seconds_per_round(audited, engine=args.engine)
    print(f"engine {args.engine}, {base.rounds} rounds, audit every {args.every}")
    print(f"  without the audit: median {plain_s:.3f} s a round")
    print(f"  with the audit:    median {audited_s:.3f} s a round")
    print(f"ratio with / without: {audited_s / plain_s:.2f}")
    healths = [r.canary_health for r in rows if r.canary_health is not None]
    print(f"canary health: median {statistics.median(healths):.3f}, min {min(healths):.3f}")


if __name__ == "__main__":
    main()
