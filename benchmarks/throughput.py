"""Seconds per training round: fedsim on Flower/Ray against the plain-PyTorch limit and a
plain Flower app doing the same work (run by hand, never in the test suite).

    .venv/bin/python benchmarks/throughput.py --workload sent140|shakespeare|quickstart [--rounds 12]
    .venv/bin/python benchmarks/throughput.py --memory [--populations 1000 100000]

In one process run, for the same sampled clients of the same rounds:

- ``fedsim``: ``run_scenario`` on Flower/Ray, as users run it (seconds between the ends
  of consecutive rounds, so the run store's writes count too);
- ``limit``: a plain PyTorch loop in this process: copy the global model into one model,
  the same local steps on the same (preloaded) samples, clip, sum, add noise, server step;
  its rounds run after fedsim's, once Ray has stopped;
- ``flower``: a plain Flower Message-API app on Ray: one ClientApp call per client that
  builds its model, trains and replies with its weights; the server clips, sums and adds
  noise with Flower's own helpers.

Medians over rounds 2 .. R-1 (round 1 warms up; the last round evaluates); with
``--repeats N`` the three methods run in turn N times and the medians are over all their
rounds (each repeat's own medians and ratio are printed too). The data are
synthetic (generated text in the Sentiment140 and tinyshakespeare formats, FedProx's
synthetic data for quickstart), so it runs anywhere. The last line is one JSON object:
``{"workload", "fedsim_s", "limit_s", "flower_s", "ratio_to_limit", "speedup_vs_flower"}``.

``--memory``: peak resident memory summed over this driver and all its child processes
(Ray's GCS, raylet, workers) while fedsim runs quickstart-like rounds on a synthetic
population of each size (each in a fresh process); one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

SENT140_USERS = 1435  # 1,415 clients + 20 design-pool users (the shared sample's users with >= 2 tweets)
SHAKESPEARE_ROLES = 60


def write_sent140(root: Path, *, users: int = SENT140_USERS, seed: int = 0) -> None:
    """A Sentiment140-format CSV: each user 2-3 tweets (1-2 training samples) of 8-25
    words from 3,000 made-up words, so the 2,000-word vocabulary fills up."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(3000)]
    with open(root / "training.1600000.processed.noemoticon.csv", "w", encoding="latin-1") as out:
        row = 0
        for user in range(users):
            for _ in range(rng.choice((2, 3))):
                text = " ".join(rng.choice(words) for _ in range(rng.randint(8, 25)))
                polarity = rng.choice("04")
                out.write(f'"{polarity}","{row}","Mon Apr 06 22:19:45 PDT 2009","NO_QUERY","user{user}","{text}"\n')
                row += 1


def write_shakespeare(root: Path, *, roles: int = SHAKESPEARE_ROLES, seed: int = 0) -> None:
    """A tinyshakespeare-format speeches file: ``ROLE:`` blocks of made-up lines, each
    role with 300-3,000 characters (more than the scenario's 64 windows, up to 200)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    blocks = []
    for role in range(roles):
        size, lines = rng.randint(300, 3000), []
        while sum(len(line) for line in lines) < size:
            lines.append(" ".join("".join(rng.choices(letters, k=rng.randint(2, 8))) for _ in range(8)) + ".")
        blocks.append(f"ROLE{role}:\n" + "\n".join(lines))
    (root / "tinyshakespeare.txt").write_text("\n\n".join(blocks) + "\n")


def workload_overrides(workload: str, data_root: Path, rounds: int) -> tuple[Path, list[str]]:
    """The scenario file and overrides of a workload (audit off, noise on, evaluation in
    the last round only)."""
    common = ["audit.enabled=false", f"rounds={rounds}", "evaluation.every=100000", "dp.noise_multiplier=1.0"]
    if workload == "sent140":
        write_sent140(data_root)
        return ROOT / "scenarios" / "sent140.yaml", [
            *common,
            f"data.root={data_root}",
            "evaluation.clients=100",
            # the workload, pinned here (the scenario file is tuned for accuracy under noise)
            "data.num_clients=1415",
            "clients_per_round=100",
            "data.options.min_samples=2",
            "data.options.max_words=2000",
            "model.hidden=100",
        ]
    if workload == "shakespeare":
        write_shakespeare(data_root)
        return ROOT / "scenarios" / "shakespeare.yaml", [
            *common,
            f"data.root={data_root}",
            "data.options.source=speeches",
            # LEAF's LSTM 256 on 5 of 50 roles a round, pinned here
            "data.num_clients=50",
            "clients_per_round=5",
            "model.hidden=256",
            "evaluation.clients=10",
        ]
    if workload == "quickstart":
        return ROOT / "scenarios" / "quickstart.yaml", common
    raise SystemExit(f"unknown workload {workload!r}; use sent140, shakespeare or quickstart")


def cohorts_of(scenario) -> list[np.ndarray]:
    from fedsim.strategies import sample_cohort

    return [
        sample_cohort(
            population=scenario.data.num_clients,
            clients_per_round=scenario.clients_per_round,
            method=scenario.sampling,
            seed=scenario.seed,
            round_number=r,
        )
        for r in range(1, scenario.rounds + 1)
    ]


def timed_rounds(ends: list[float]) -> list[float]:
    """Seconds of rounds 2 .. R-1 from the times rounds 1 .. R ended."""
    return [b - a for a, b in zip(ends[:-2], ends[1:-1])]


# --- the plain PyTorch limit -----------------------------------------------------------


class ServerStep:
    """The scenario's server optimiser on a torch vector (FedAvg or FedAdam)."""

    def __init__(self, scenario) -> None:
        self.server = scenario.server
        self.m: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def __call__(self, params: torch.Tensor, mean_update: torch.Tensor) -> torch.Tensor:
        s = self.server
        if s.optimizer == "fedavg":
            return params + s.lr * mean_update
        if self.m is None or self.v is None:
            self.m, self.v = torch.zeros_like(params), torch.zeros_like(params)
        self.m = s.beta1 * self.m + (1 - s.beta1) * mean_update
        self.v = s.beta2 * self.v + (1 - s.beta2) * mean_update**2
        return params + s.lr * self.m / (self.v.sqrt() + s.tau)


def local_steps(model, x, y, *, scenario, seed: int, optimizer) -> None:
    """The client's local epochs of minibatch SGD, batches shuffled by a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for _ in range(scenario.client.epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), scenario.client.batch_size):
            batch = order[start : start + scenario.client.batch_size]
            optimizer.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimizer.step()


class Limit:
    """The plain-PyTorch limit, one round at a time: one model into which each sampled
    client's start is copied, its local steps, clip, sum, noise, the server step."""

    def __init__(self, scenario, cohorts: list[np.ndarray]) -> None:
        from torch.nn.utils import parameters_to_vector

        from fedsim.experiment import dataset_for, model_for

        dataset = dataset_for(scenario)
        self.scenario, self.cohorts = scenario, cohorts
        self.model = model_for(scenario, dataset)
        wanted = sorted({int(c) for cohort in cohorts for c in cohort})
        self.data = {c: dataset.client(c) for c in wanted}  # a plain loop keeps its data in memory
        self.params = parameters_to_vector(self.model.parameters()).detach()
        self.step = ServerStep(scenario)
        self.noise = torch.Generator().manual_seed(scenario.seed)

    def round(self, round_number: int) -> float:
        """Seconds of one round."""
        from torch.nn.utils import parameters_to_vector, vector_to_parameters

        from fedsim.seeding import client_seed

        started = time.perf_counter()
        scenario, client = self.scenario, self.scenario.client
        clip, noise_std = scenario.dp.clip_norm, scenario.dp.noise_multiplier * scenario.dp.clip_norm
        total = torch.zeros_like(self.params)
        for cid in self.cohorts[round_number - 1]:
            vector_to_parameters(self.params, self.model.parameters())  # copy the global model
            optimizer = torch.optim.SGD(self.model.parameters(), lr=client.lr, momentum=client.momentum)
            seed = client_seed(seed=scenario.seed, round_number=round_number, client_id=int(cid))
            data = self.data[int(cid)]
            local_steps(self.model, data.x_train, data.y_train, scenario=scenario, seed=seed, optimizer=optimizer)
            update = parameters_to_vector(self.model.parameters()).detach() - self.params
            total += update * min(1.0, clip / max(float(update.norm()), 1e-12))
        total += torch.normal(0.0, noise_std, size=total.shape, generator=self.noise)
        self.params = self.step(self.params, total / scenario.clients_per_round)
        return time.perf_counter() - started


# --- fedsim, as users run it, interleaved with the limit ------------------------------


def time_fedsim_and_limit(scenario, cohorts: list[np.ndarray], out: Path) -> tuple[list[float], list[float]]:
    """Seconds of rounds 2 .. R-1 of ``run_scenario`` on Flower/Ray (between the ends of
    consecutive rounds, the run store's writes included), then of the limit's same rounds
    in this process once Ray has stopped (fedsim persists a round while the next one
    trains, so a limit round run from the round callback would share the machine with
    fedsim's next round)."""
    from fedsim.runner import run_scenario

    ends: list[float] = []
    run_scenario(scenario=scenario, out_dir=out, on_round=lambda _: ends.append(time.perf_counter()))
    limit = Limit(scenario, cohorts)
    limit_s = [limit.round(round_number) for round_number in range(1, scenario.rounds + 1)]
    return timed_rounds(ends), limit_s[1:-1]  # round 1 warms up; the last one evaluates


# --- a plain Flower Message-API app ----------------------------------------------------


def time_plain_flower(scenario, cohorts: list[np.ndarray]) -> list[float]:
    """One ClientApp call per sampled client (model built per call, as Flower's examples
    do); the ServerApp clips, sums and noises with Flower's DP helpers."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation
    from flwr.supercore.differential_privacy import add_gaussian_noise_inplace, clip_inputs_inplace

    from fedsim.experiment import dataset_for, model_for
    from fedsim.runner import backend_config, quiet_flower
    from fedsim.seeding import client_seed

    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        config = msg.content["config"]
        cid, round_number = int(config["client-id"]), int(config["round"])
        dataset = dataset_for(scenario)  # cached per process
        model = model_for(scenario, dataset)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        data = dataset.client(cid)
        optimizer = torch.optim.SGD(model.parameters(), lr=scenario.client.lr, momentum=scenario.client.momentum)
        seed = client_seed(seed=scenario.seed, round_number=round_number, client_id=cid)
        local_steps(model, data.x_train, data.y_train, scenario=scenario, seed=seed, optimizer=optimizer)
        metrics = MetricRecord({"num-examples": data.num_train})
        return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg)

    ends: list[float] = []
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        nodes = scenario.ray.num_nodes
        while len(node_ids := sorted(grid.get_node_ids())) < nodes:
            time.sleep(0.05)
        model = model_for(scenario, dataset_for(scenario))
        arrays = ArrayRecord(model.state_dict())
        step = ServerStep(scenario)
        clip, m = scenario.dp.clip_norm, scenario.clients_per_round
        for round_number, cohort in enumerate(cohorts, start=1):
            messages = [
                Message(
                    RecordDict(
                        {"arrays": arrays, "config": ConfigRecord({"client-id": int(c), "round": round_number})}
                    ),
                    message_type=MessageType.TRAIN,
                    dst_node_id=node_ids[i % len(node_ids)],
                )
                for i, c in enumerate(cohort)
            ]
            start = arrays.to_numpy_ndarrays()
            total = [np.zeros_like(a) for a in start]
            for reply in grid.send_and_receive(messages):
                update = [t - s for t, s in zip(reply.content["arrays"].to_numpy_ndarrays(), start)]
                clip_inputs_inplace(update, clip)
                total = [a + u for a, u in zip(total, update)]
            add_gaussian_noise_inplace(total, scenario.dp.noise_multiplier * clip)
            params = torch.cat([torch.from_numpy(s).reshape(-1) for s in start])
            mean = torch.cat([torch.from_numpy(t).reshape(-1) for t in total]) / m
            new = step(params, mean)
            state, offset = {}, 0
            for key, value in zip(arrays.keys(), start):
                state[key] = new[offset : offset + value.size].reshape(value.shape).clone()
                offset += value.size
            arrays = ArrayRecord(state)
            ends.append(time.perf_counter())

    quiet_flower(verbose=False)
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=scenario.ray.num_nodes,
        backend_name="ray",
        backend_config=backend_config(scenario=scenario, ray_address=None, verbose=False),
    )
    return timed_rounds(ends)


def throughput(workload: str, rounds: int, *, repeats: int = 1) -> dict[str, Any]:
    from fedsim.config import load_scenario
    from fedsim.runner import prepare_environment
    from fedsim.threads import use_one_thread

    prepare_environment(verbose=False)
    use_one_thread()  # all three methods: one torch and one BLAS thread in this process
    with tempfile.TemporaryDirectory(prefix="fedsim-throughput-") as tmp:
        data_root = Path(tmp) / "data"
        data_root.mkdir()
        path, overrides = workload_overrides(workload, data_root, rounds)
        scenario = load_scenario(path, overrides=overrides)
        cohorts = cohorts_of(scenario)
        sizes = [len(c) for c in cohorts]
        print(f"{workload}: {rounds} rounds, cohorts {min(sizes)}-{max(sizes)} clients", flush=True)
        seconds: dict[str, list[float]] = {"fedsim": [], "limit": [], "flower": []}
        for repeat in range(repeats):  # the three methods in turn, so drift weighs on each
            fedsim, limit = time_fedsim_and_limit(scenario, cohorts, Path(tmp) / f"runs-{repeat}")
            flower = time_plain_flower(scenario, cohorts)
            for name, values in (("fedsim", fedsim), ("limit", limit), ("flower", flower)):
                seconds[name] += values
                print(f"  {name:7s} median {statistics.median(values):.3f} s/round", flush=True)
            print(f"  ratio to the limit: {statistics.median(fedsim) / statistics.median(limit):.3f}", flush=True)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "workload": workload,
        "fedsim_s": round(medians["fedsim"], 4),
        "limit_s": round(medians["limit"], 4),
        "flower_s": round(medians["flower"], 4),
        "ratio_to_limit": round(medians["fedsim"] / medians["limit"], 3),
        "speedup_vs_flower": round(medians["flower"] / medians["fedsim"], 3),
    }


# --- peak memory over all Ray processes ------------------------------------------------


def _tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            statm = Path(f"/proc/{entry}/statm").read_text().split()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = int(statm[1]) * page
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def memory_child(population: int, rounds: int) -> dict[str, Any]:
    """Run quickstart-like rounds on ``population`` synthetic clients; peak tree RSS."""
    from fedsim.config import load_scenario
    from fedsim.runner import run_scenario

    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss_bytes(os.getpid()))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    scenario = load_scenario(
        ROOT / "scenarios" / "quickstart.yaml",
        overrides=[
            "audit.enabled=false",
            f"rounds={rounds}",
            f"data.num_clients={population}",
            "clients_per_round=100",
            "evaluation.clients=100",
        ],
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedsim-memory-") as tmp:
        run_scenario(scenario=scenario, out_dir=Path(tmp))
    done.set()
    sampler.join()
    return {
        "population": population,
        "peak_rss_mib": round(peak[0] / 2**20, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }


def memory(populations: list[int], rounds: int) -> dict[str, Any]:
    results = {}
    for population in populations:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(population), "--rounds", str(rounds)],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"  population {population:>7}: peak RSS {result['peak_rss_mib']:.0f} MiB ({result['seconds']} s)",
            flush=True,
        )
        results[str(population)] = result["peak_rss_mib"]
    first, last = results[str(populations[0])], results[str(populations[-1])]
    return {"peak_rss_mib": results, "ratio": round(last / first, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=["sent140", "shakespeare", "quickstart"])
    parser.add_argument("--rounds", type=int, default=None, help="rounds per method (default 12; shakespeare 8)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="run the three methods in turn this many times; medians over all rounds"
    )
    parser.add_argument("--memory", action="store_true", help="peak RSS over all Ray processes per population")
    parser.add_argument("--populations", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.rounds or 5)))
    elif args.memory:
        print(json.dumps(memory(args.populations, args.rounds or 5)))
    elif args.workload:
        rounds = args.rounds or (8 if args.workload == "shakespeare" else 12)
        print(json.dumps(throughput(args.workload, rounds, repeats=args.repeats)))
    else:
        parser.error("give --workload or --memory")


if __name__ == "__main__":
    main()
