"""What a checkpoint costs, as a share of a round.

Runs a scenario's rounds in-process (no Flower: the round time is then the smallest it
can be, so the share is an upper bound for Flower runs) and times, in the same process,
writing the loop's checkpoint after each round; prints the medians and their ratio:

    .venv/bin/python benchmarks/checkpoint_cost.py scenarios/shakespeare.yaml \\
        --set data.root=../shared/data/shakespeare --set data.options.source=speeches \\
        --set rounds=6 --set audit.enabled=false --set model.hidden=256 \
        --set clients_per_round=5 --set data.num_clients=50

(LEAF's LSTM 256, 820,185 parameters, 5 of 50 roles a round: the setting measured in the
README.)
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from scenario_args import scenario_parser

from fedsim.clients.local import InProcessTransport
from fedsim.config import load_scenario
from fedsim.loop import RoundLoop
from fedsim.store import RunStore


def main() -> None:
    args = scenario_parser(__doc__).parse_args()
    scenario = load_scenario(args.scenario, overrides=args.set)
    loop = RoundLoop(scenario=scenario)
    transport = InProcessTransport(scenario=scenario)
    rounds, writes = [], []
    with tempfile.TemporaryDirectory() as out:
        store = RunStore.create(parent=Path(out), scenario=scenario)
        for round_number in range(1, scenario.rounds + 1):
            started = time.perf_counter()
            loop.run_round(transport, round_number)
            loop.rounds_done = round_number
            rounds.append(time.perf_counter() - started)
            started = time.perf_counter()
            store.write_checkpoint(loop.state_dict())
            writes.append(time.perf_counter() - started)
        size = store.checkpoint_path.stat().st_size
    round_s, write_s = statistics.median(rounds[1:]), statistics.median(writes[1:])  # round 1 warms up
    print(f"parameters {loop.params.size:,}  checkpoint {size / 2**20:.2f} MiB")
    print(f"round median {round_s:.3f} s  checkpoint median {write_s * 1000:.1f} ms  share {write_s / round_s:.1%}")


if __name__ == "__main__":
    main()
