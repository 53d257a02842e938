"""The same DP-FedAvg training as `fedsim run`, in a plain Python loop (no Flower, no Ray).

Uses the very functions the simulation uses (sampling, local training, DP aggregation,
server optimiser), so it is the baseline for per-client overhead and a quick way to
tune a scenario:

    .venv/bin/python benchmarks/plain_loop.py scenarios/quickstart.yaml --set dp.mode=none
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fedsim.clients.training import evaluate_client, train_client
from fedsim.config import load_scenario
from fedsim.experiment import dataset_for, model_for, train_settings
from fedsim.params import flatten_state, unflatten_state
from fedsim.seeding import NOISE, client_seed, round_rng
from fedsim.strategies import build_aggregator, build_server_optimizer, sample_cohort


def run(scenario) -> list[tuple[int, float, float]]:
    """Train like the simulation does; return (round, accuracy, seconds) per round."""
    torch.set_num_threads(1)
    dataset = dataset_for(scenario)
    model = model_for(scenario, dataset)
    template = {k: v.clone() for k, v in model.state_dict().items()}
    params = flatten_state(template)
    aggregator, optimizer = build_aggregator(scenario=scenario), build_server_optimizer(scenario=scenario)
    settings = train_settings(scenario)
    results = []
    for r in range(1, scenario.rounds + 1):
        start = time.perf_counter()
        cohort = sample_cohort(population=dataset.num_clients, clients_per_round=scenario.clients_per_round,
                               method=scenario.sampling, seed=scenario.seed, round_number=r)
        updates, weights = [], []
        for cid in cohort:
            model.load_state_dict(unflatten_state(params, template=template))
            data = dataset.client(int(cid))
            res = train_client(model=model, data=data, settings=settings,
                               seed=client_seed(seed=scenario.seed, round_number=r, client_id=int(cid)))
            updates.append(flatten_state(model.state_dict()) - params)
            weights.append(res.num_examples)
        updates_arr = np.array(updates) if updates else np.zeros((0, params.shape[0]))
        agg = aggregator.aggregate(updates=updates_arr, weights=np.array(weights), reported_norms=None,
                                   rng=round_rng(seed=scenario.seed, stream=NOISE, round_number=r))
        params = optimizer.step(params=params, mean_update=agg.mean_update)
        seconds = time.perf_counter() - start
        model.load_state_dict(unflatten_state(params, template=template))
        correct = total = 0
        for cid in range(dataset.num_clients):
            _, c, n = evaluate_client(model=model, data=dataset.client(cid))
            correct, total = correct + c, total + n
        results.append((r, correct / total, seconds))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    scenario = load_scenario(args.scenario, overrides=args.set)
    results = run(scenario)
    for r, acc, sec in results:
        print(f"round {r:3d}  acc {acc:.3f}  train {sec:.3f}s")
    print(f"median train seconds per round: {np.median([s for *_, s in results]):.3f}")


if __name__ == "__main__":
    main()
