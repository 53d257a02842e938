"""The audit at several noise levels: theory against measurement, per round.

    .venv/bin/python benchmarks/audit_noise_levels.py scenarios/quickstart.yaml --noise 2 1 0.5 0 --set rounds=5

Prints, per noise multiplier, the medians over rounds of the per-round theoretical
epsilon, the empirical estimate (Gaussian fit), the threshold method's lower and upper
bounds, and canary health.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from scenario_args import scenario_parser

from fedsim.config import load_scenario
from fedsim.runner import run_scenario


def main() -> None:
    parser = scenario_parser(__doc__, engine=True)
    parser.add_argument("--noise", type=float, nargs="+", default=[2.0, 1.0, 0.5, 0.0])
    args = parser.parse_args()
    columns = [
        "epsilon_round_theory",
        "epsilon_round_empirical",
        "epsilon_round_empirical_ci_low",
        "epsilon_round_empirical_ci_high",
        "epsilon_round_empirical_lower_bound",
        "canary_health",
        "epsilon_cumulative_theory",
        "epsilon_cumulative_empirical_extrapolated",
    ]
    print(
        "| z | theory | empirical | ci low | ci high | lower bound | health | cum. theory | cum. empirical (extrapolated) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for z in args.noise:
        scenario = load_scenario(args.scenario, overrides=["audit.enabled=true", *args.set, f"dp.noise_multiplier={z}"])
        with tempfile.TemporaryDirectory() as out:
            rows = run_scenario(scenario=scenario, out_dir=Path(out), engine=args.engine).rows
        audited = [r for r in rows if r.epsilon_round_empirical is not None]
        medians = [statistics.median(getattr(r, c) for r in audited) for c in columns[:6]]
        last = [getattr(rows[-1], c) for c in columns[6:]]
        print(f"| {z:g} | " + " | ".join(f"{v:.2f}" for v in medians + last) + " |")


if __name__ == "__main__":
    main()
