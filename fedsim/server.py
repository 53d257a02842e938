"""The ServerApp: fedsim's own round loop on Flower's Grid.

Flower's ``Strategy.start()`` runs every round in one call, so it cannot record a round
before the next starts, audit with the round's updates, or resume. This loop does, round
by round: sample the cohort -> send train messages -> DP aggregation -> server
optimiser step -> accountant -> federated evaluation -> durable round record.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedsim.config import Scenario
from fedsim.errors import FedsimError
from fedsim.experiment import dataset_for, model_for
from fedsim.params import flatten_state, unflatten_state
from fedsim.seeding import EVALUATION, NOISE, round_rng
from fedsim.store import RunStore
from fedsim.strategies import build_aggregator, build_server_optimizer, sample_cohort
from fedsim.theory import TheoryTracker

RoundCallback = Callable[[dict[str, Any]], None]


@dataclass
class RunOutcome:
    """What the server thread hands back to the driver (run_simulation returns None)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None
    final_params: np.ndarray | None = None


class RoundLoop:
    """Runs the rounds of one scenario against a Flower Grid."""

    def __init__(self, *, scenario: Scenario, on_round: RoundCallback | None = None) -> None:
        self.scenario = scenario
        self.store: RunStore | None = None  # attached by the runner once everything validated
        self.expected_nodes = 1  # Flower supernodes the runner starts
        self.on_round = on_round
        self.dataset = dataset_for(scenario)
        model = model_for(scenario, self.dataset)
        self.template = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.params = flatten_state(self.template)
        self.aggregator = build_aggregator(scenario=scenario)
        self.optimizer = build_server_optimizer(scenario=scenario)
        min_samples = None
        if scenario.dp.mode == "local_dpsgd":
            min_samples = min(self.dataset.num_train_samples(c) for c in range(self.dataset.num_clients))
        self.theory = TheoryTracker(scenario=scenario, min_client_samples=min_samples)

    def _state_record(self) -> ArrayRecord:
        return ArrayRecord(unflatten_state(self.params.astype(np.float32), template=self.template))

    def _train(self, grid: Grid, node_ids: list[int], round_number: int, cohort: np.ndarray):
        """Send one train message per sampled client; return (updates, weights, norms, losses)."""
        config: dict[str, Any] = {"round": round_number}
        if self.scenario.dp.mode == "client_fixed":
            config["clipping_norm"] = float(self.scenario.dp.clip_norm)
        arrays = self._state_record()
        messages = [
            Message(
                content=RecordDict({"arrays": arrays, "config": ConfigRecord({**config, "client-id": int(cid)})}),
                message_type=MessageType.TRAIN,
                dst_node_id=node_ids[i % len(node_ids)],
            )
            for i, cid in enumerate(cohort)
        ]
        replies = list(grid.send_and_receive(messages)) if messages else []
        self._raise_client_errors(replies, round_number, "training")
        replies.sort(key=lambda reply: int(reply.content["metrics"]["client-id"]))
        dim = self.params.shape[0]
        updates = np.zeros((len(replies), dim), dtype=np.float64)
        weights = np.zeros(len(replies))
        norms = np.zeros(len(replies))
        losses = np.zeros(len(replies))
        for row, reply in enumerate(replies):
            metrics = reply.content["metrics"]
            arrays = reply.content["arrays"]
            updates[row] = flatten_state(dict(zip(arrays.keys(), arrays.to_numpy_ndarrays()))) - self.params
            weights[row] = float(metrics["num-examples"])
            norms[row] = float(metrics["update-norm"])
            losses[row] = float(metrics["train-loss"])
        return updates, weights, norms, losses

    def _evaluate(self, grid: Grid, node_ids: list[int], round_number: int) -> tuple[float, float]:
        """Federated evaluation on the clients' held-out samples: (loss, accuracy)."""
        population = self.dataset.num_clients
        wanted = self.scenario.evaluation.clients
        if wanted is None or wanted >= population:
            client_ids = np.arange(population)
        else:
            rng = round_rng(seed=self.scenario.seed, stream=EVALUATION, round_number=round_number)
            client_ids = np.sort(rng.choice(population, size=wanted, replace=False))
        arrays = self._state_record()
        chunks = np.array_split(client_ids, min(len(node_ids), len(client_ids)))
        messages = [
            Message(
                content=RecordDict({"arrays": arrays, "config": ConfigRecord({"client-ids": [int(c) for c in chunk]})}),
                message_type=MessageType.EVALUATE,
                dst_node_id=node_ids[i],
            )
            for i, chunk in enumerate(chunks)
        ]
        replies = list(grid.send_and_receive(messages))
        self._raise_client_errors(replies, round_number, "evaluation")
        loss = sum(float(r.content["metrics"]["loss-sum"]) for r in replies)
        correct = sum(float(r.content["metrics"]["correct"]) for r in replies)
        count = sum(float(r.content["metrics"]["num-examples"]) for r in replies)
        if count == 0:
            return math.nan, math.nan
        return loss / count, correct / count

    @staticmethod
    def _raise_client_errors(replies: list[Message], round_number: int, what: str) -> None:
        for reply in replies:
            if reply.has_error():
                reason = " ".join(str(reply.error.reason).split())[:300]
                raise FedsimError(
                    f"a client failed during {what} in round {round_number}: {reason}; "
                    "finished rounds are kept in the run folder, rerun with --verbose for details"
                )

    def run(self, grid: Grid, outcome: RunOutcome) -> None:
        """All rounds, each recorded durably before the next begins."""
        node_ids = self._wait_for_nodes(grid)
        scenario = self.scenario
        for round_number in range(1, scenario.rounds + 1):
            started = time.perf_counter()
            cohort = sample_cohort(
                population=self.dataset.num_clients,
                clients_per_round=scenario.clients_per_round,
                method=scenario.sampling,
                seed=scenario.seed,
                round_number=round_number,
            )
            updates, weights, norms, losses = self._train(grid, node_ids, round_number, cohort)
            reported = norms if scenario.dp.mode == "client_fixed" else None
            rng = round_rng(seed=scenario.seed, stream=NOISE, round_number=round_number)
            aggregate = self.aggregator.aggregate(updates=updates, weights=weights, reported_norms=reported, rng=rng)
            self.params = self.optimizer.step(params=self.params, mean_update=aggregate.mean_update)
            epsilon = self.theory.step(noise_multiplier=self.aggregator.noise_multiplier)
            eval_loss = eval_accuracy = None
            if round_number % scenario.evaluation.every == 0 or round_number == scenario.rounds:
                eval_loss, eval_accuracy = self._evaluate(grid, node_ids, round_number)
            row = {
                "round": round_number,
                "clients": len(cohort),
                "train_loss": float(losses.mean()) if len(losses) else None,
                "eval_loss": eval_loss,
                "eval_accuracy": eval_accuracy,
                "clip_fraction": aggregate.clip_fraction,
                "clip_norm": aggregate.clip_norm,
                "noise_std": self._noise_std(aggregate.noise_std),
                "epsilon_round_theory": epsilon.round,
                "epsilon_cumulative_theory": epsilon.cumulative,
                "epsilon_cumulative_theory_rdp": epsilon.cumulative_rdp,
                "seconds": round(time.perf_counter() - started, 4),
            }
            if self.store is not None:
                self.store.append_round(row)
            outcome.rows.append(row)
            if self.on_round is not None:
                self.on_round(row)
        outcome.final_params = self.params

    def _wait_for_nodes(self, grid: Grid, timeout_s: float = 120.0) -> list[int]:
        """Flower registers supernodes asynchronously: wait until all are there."""
        deadline = time.monotonic() + timeout_s
        while len(node_ids := sorted(grid.get_node_ids())) < self.expected_nodes:
            if time.monotonic() > deadline:
                raise FedsimError(
                    f"only {len(node_ids)} of {self.expected_nodes} Flower supernodes came up in {timeout_s:g} s; "
                    "lower ray.num_nodes or check the Ray cluster with --verbose"
                )
            time.sleep(0.05)
        return node_ids

    def _noise_std(self, central_std: float) -> float:
        """Noise std on the averaged update; for local DP-SGD, on each step's mean gradient."""
        dp = self.scenario.dp
        if dp.mode == "local_dpsgd":
            return dp.noise_multiplier * dp.clip_norm / self.scenario.client.batch_size
        return central_std


def make_server_app(*, loop: RoundLoop, outcome: RunOutcome) -> ServerApp:
    """A ServerApp whose main runs ``loop`` and reports into ``outcome``.

    Errors are caught here and handed to the driver, which reports them as one line.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            loop.run(grid, outcome)
        except BaseException as error:  # noqa: BLE001 - handed to the driver
            outcome.error = error

    return app
