"""Cost of the canary audit: seconds per round of a run that audits against the same run
without the audit.

Runs the scenario twice in this process (same engine, same seed, same rounds): once with
the audit off, then with the audit on every ``--every``-th round (default: every round).
A round's seconds are the time between the ends of consecutive rounds, as a user waits
for them (an audit overlaps the next round's training, so a round's own ``seconds``
column would not show what it costs the run); medians over rounds 2 .. R-1 (round 1
warms up, the last round always evaluates), and their ratio; and the machine's busy CPU
seconds per round, which bound how far overlapping the audit can hide it:

    .venv/bin/python benchmarks/audit_cost.py scenarios/quickstart.yaml --set rounds=12

``--repeats N`` alternates N runs without and N with the audit and takes the medians over
all their rounds (busy CPU: the median run's), which a machine whose speed drifts during
the benchmark skews less than one run of each.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from scenario_args import scenario_parser

from fedsim.config import load_scenario
from fedsim.runner import run_scenario


def busy_cpu_seconds() -> float:
    """CPU seconds this machine has spent outside idle and I/O wait since boot (/proc/stat)."""
    user, nice, system, idle, iowait, *rest = (int(v) for v in Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + sum(rest)) / os.sysconf("SC_CLK_TCK")


def rounds_of(scenario, *, engine: str) -> tuple[list[float], float, list]:
    """Wall seconds between the ends of rounds 2 .. R-1, the machine's busy CPU seconds per
    round over the same rounds (every process: the driver, Ray's, anything else running),
    and the rows."""
    ends: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as out:
        rows = run_scenario(
            scenario=scenario,
            out_dir=Path(out),
            engine=engine,
            on_round=lambda _: ends.append((time.perf_counter(), busy_cpu_seconds())),
        ).rows
    walls = [b[0] - a[0] for a, b in zip(ends[:-2], ends[1:-1])]
    cpu = (ends[-2][1] - ends[0][1]) / (len(ends) - 2)
    return walls, cpu, rows


def main() -> None:
    parser = scenario_parser(__doc__, engine=True)
    parser.add_argument("--every", type=int, default=1, help="audit every k-th round (default 1)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run without and with the audit this many times, alternately (default 1); the medians "
        "are over the rounds of all runs, so a machine that slows down meanwhile weighs on both",
    )
    args = parser.parse_args()
    base = load_scenario(args.scenario, overrides=["audit.enabled=false", *args.set])
    audited = load_scenario(args.scenario, overrides=["audit.enabled=true", f"audit.every={args.every}", *args.set])
    plain_walls, audited_walls, plain_cpus, audited_cpus, pairs, healths = [], [], [], [], [], []
    for _ in range(args.repeats):
        walls, cpu, _ = rounds_of(base, engine=args.engine)
        plain_walls += walls
        plain_cpus.append(cpu)
        audited_run, audited_cpu, rows = rounds_of(audited, engine=args.engine)
        audited_walls += audited_run
        audited_cpus.append(audited_cpu)
        pairs.append(statistics.median(audited_run) / statistics.median(walls))
        healths += [r.canary_health for r in rows if r.canary_health is not None]
    plain_s, audited_s = statistics.median(plain_walls), statistics.median(audited_walls)
    plain_cpu, audited_cpu = statistics.median(plain_cpus), statistics.median(audited_cpus)
    print(
        f"engine {args.engine}, {base.rounds} rounds, audit every {args.every}, {os.cpu_count()} cores, "
        f"{args.repeats} run(s) of each, alternately"
    )
    print(f"  without the audit: median {plain_s:.3f} s a round, {plain_cpu:.3f} busy CPU s a round")
    print(f"  with the audit:    median {audited_s:.3f} s a round, {audited_cpu:.3f} busy CPU s a round")
    print(f"ratio with / without: {audited_s / plain_s:.2f} (busy CPU: {audited_cpu / plain_cpu:.2f})")
    if args.repeats > 1:
        print("ratio of each pair of runs: " + ", ".join(f"{ratio:.2f}" for ratio in pairs))
    print(f"canary health: median {statistics.median(healths):.3f}, min {min(healths):.3f}")


if __name__ == "__main__":
    main()
