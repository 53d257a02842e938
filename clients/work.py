"""One logical client's work for a round, independent of how it is called.

The Flower ClientApp wraps these functions in messages; the in-process transport (tests,
benchmarks) and the canary audit's design pool call them directly. A process trains all
its logical clients with one :class:`ClientRunner`: the data set, one model and one
optimiser, built once and reused (a client's start weights are loaded into the model),
so a client costs its training, not the construction of a model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from fedsim.clients.batched import CHUNK_USERS, UserSamples, supports, takes_one_step, user_gradients
from fedsim.clients.lockstep import train_lockstep, trains_in_lockstep
from fedsim.clients.training import evaluate_client, make_optimizer, train_client
from fedsim.config import Scenario
from fedsim.experiment import dataset_for, model_for, train_settings
from fedsim.params import flatten_state
from fedsim.seeding import client_seed


@dataclass(frozen=True)
class TrainedClient:
    """A client's trained weights and what it reports about them."""

    client_id: int
    update: np.ndarray  # trained - start, flat float64
    num_examples: int
    train_loss: float
    update_norm: float  # L2 norm of the update, before any clipping
    noise_std: float | None = None  # local DP-SGD: the noise std Opacus used per step
    arrays: list[np.ndarray] | None = None  # the trained weights per tensor, if asked for


class ClientRunner:
    """Trains and evaluates the scenario's logical clients in this process, one after
    the other, with one model and one optimiser (the same results as fresh ones)."""

    def __init__(self, *, scenario: Scenario) -> None:
        self.scenario = scenario
        self.dataset = dataset_for(scenario)
        self.settings = train_settings(scenario)
        self.model = model_for(scenario, self.dataset).to(scenario.device)
        self.optimizer = make_optimizer(self.model, self.settings)
        self.batchable = supports(self.model)
        self.lockstep = trains_in_lockstep(model=self.model, settings=self.settings, device=scenario.device)

    def train(
        self,
        *,
        start: dict[str, torch.Tensor],
        client_id: int,
        round_number: int,
        start_flat: np.ndarray | None = None,
        keep_arrays: bool = False,
    ) -> TrainedClient:
        """Train one client from ``start`` (flattened: ``start_flat``, if already at hand);
        ``keep_arrays``: a copy of the trained weights per tensor too."""
        self.model.load_state_dict(start)
        result = train_client(
            model=self.model,
            data=self.dataset.client(client_id),
            settings=self.settings,
            seed=self._seed(client_id, round_number),
            optimizer=self.optimizer,
        )
        trained = [value.detach().cpu().numpy() for value in self.model.state_dict().values()]
        update = np.concatenate([array.ravel() for array in trained], dtype=np.float64)
        np.subtract(update, flatten_state(start) if start_flat is None else start_flat, out=update)
        arrays = [array.copy() for array in trained] if keep_arrays else None
        norm = float(np.linalg.norm(update))
        return TrainedClient(
            client_id, update, result.num_examples, result.mean_loss, norm, result.noise_std, arrays=arrays
        )

    def _seed(self, client_id: int, round_number: int) -> int:
        """The seed of a client's local training in a round."""
        return client_seed(seed=self.scenario.seed, round_number=round_number, client_id=client_id)

    def takes_one_step(self, client_id: int) -> bool:
        """Whether this client's training is one plain SGD step that :meth:`train_one_steps`
        computes together with others (exactly, up to float rounding)."""
        return self.batchable and takes_one_step(self.settings, self.dataset.num_train_samples(client_id))

    def train_one_steps(
        self,
        *,
        start: dict[str, torch.Tensor],
        client_ids: list[int],
        round_number: int,
        start_flat: np.ndarray,
        keep_arrays: bool = False,
    ) -> Iterator[TrainedClient]:
        """Clients that each take one plain SGD step (:meth:`takes_one_step`), trained
        together: per-user gradients from batched passes (fedsim.clients.batched), then
        each user's step exactly as SGD takes it. Yields them in ``client_ids`` order."""
        self.model.load_state_dict(start)
        weights = dict(self.model.named_parameters())
        for first in range(0, len(client_ids), CHUNK_USERS):
            chunk = client_ids[first : first + CHUNK_USERS]
            data = [self.dataset.client(cid) for cid in chunk]
            users = [UserSamples(d.x_train, d.y_train, self._seed(c, round_number)) for c, d in zip(chunk, data)]
            grads, losses = user_gradients(self.model, users, batch_size=self.settings.batch_size)
            for row, (client_id, client_data) in enumerate(zip(chunk, data)):
                with torch.no_grad():  # the step SGD takes: weight - lr * gradient
                    trained = {
                        name: weights[name].add(grads[name][row], alpha=-self.settings.lr)
                        for name in self.model.state_dict()
                    }
                yield _trained_client(
                    client_id, trained, client_data.num_train, float(losses[row]), start_flat, keep_arrays=keep_arrays
                )

    def train_lockstep(
        self,
        *,
        start: dict[str, torch.Tensor],
        client_ids: list[int],
        round_number: int,
        start_flat: np.ndarray,
        keep_arrays: bool = False,
    ) -> Iterator[TrainedClient]:
        """Clients of a model that trains in lockstep (:attr:`lockstep`), trained together
        (fedsim.clients.lockstep); yields them in ``client_ids`` order."""
        self.model.load_state_dict(start)
        data = [self.dataset.client(cid) for cid in client_ids]
        trained = train_lockstep(
            self.model,
            [(d.x_train, d.y_train, self._seed(c, round_number)) for c, d in zip(client_ids, data)],
            settings=self.settings,
        )
        for client_id, client_data, result in zip(client_ids, data, trained):
            yield _trained_client(
                client_id, result.weights, client_data.num_train, result.mean_loss, start_flat, keep_arrays=keep_arrays
            )

    def scores(self, *, state: dict[str, torch.Tensor], client_ids: list[int]) -> list[tuple[float, int, int]]:
        """Each client's summed loss, correct predictions and count on its held-out samples."""
        self.model.load_state_dict(state)
        return [evaluate_client(model=self.model, data=self.dataset.client(int(cid))) for cid in client_ids]


def _trained_client(
    client_id: int,
    weights: dict[str, torch.Tensor],
    num_examples: int,
    train_loss: float,
    start_flat: np.ndarray,
    *,
    keep_arrays: bool,
) -> TrainedClient:
    """A client trained outside the shared model: ``weights`` (every state-dict entry, in
    its order) minus the start."""
    trained = [value.numpy() for value in weights.values()]
    update = np.concatenate([array.ravel() for array in trained], dtype=np.float64)
    np.subtract(update, start_flat, out=update)
    norm = float(np.linalg.norm(update))
    return TrainedClient(client_id, update, num_examples, train_loss, norm, arrays=trained if keep_arrays else None)


def total_scores(scores: list[tuple[float, int, int]]) -> tuple[float, int, int]:
    """Summed loss, correct predictions and count, added up in the order given."""
    loss_sum, correct, count = 0.0, 0, 0
    for client_loss, client_correct, client_count in scores:
        loss_sum, correct, count = loss_sum + client_loss, correct + client_correct, count + client_count
    return loss_sum, correct, count


_RUNNERS: dict[str, ClientRunner] = {}


def runner_for(scenario: Scenario) -> ClientRunner:
    """This process's :class:`ClientRunner` of the scenario (built on first use)."""
    key = scenario.model_dump_json()
    if key not in _RUNNERS:
        _RUNNERS.clear()  # one scenario at a time per process
        _RUNNERS[key] = ClientRunner(scenario=scenario)
    return _RUNNERS[key]


def discard_runner(scenario: Scenario) -> None:
    """Forget this process's runner of the scenario: a client given up on (round_timeout_s)
    may still be training on its model, so the next client gets a new one."""
    _RUNNERS.pop(scenario.model_dump_json(), None)


def evaluate_many(
    *, scenario: Scenario, state: dict[str, torch.Tensor], client_ids: list[int]
) -> tuple[float, int, int]:
    """Summed loss, correct predictions and sample count over clients' held-out samples."""
    return total_scores(runner_for(scenario).scores(state=state, client_ids=client_ids))
