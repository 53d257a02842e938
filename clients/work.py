"""One logical client's work for a round, independent of how it is called.

The Flower ClientApp wraps these functions in messages; the in-process transport (tests,
benchmarks, later batched many-client nodes) calls them directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedsim.clients.faults import inject_faults
from fedsim.clients.training import evaluate_client, train_client
from fedsim.config import Scenario
from fedsim.experiment import dataset_for, model_for, train_settings
from fedsim.params import flatten_state
from fedsim.seeding import client_seed


@dataclass(frozen=True)
class TrainedClient:
    """A client's trained weights and what it reports about them."""

    client_id: int
    state: dict[str, torch.Tensor]
    num_examples: int
    train_loss: float
    update_norm: float  # L2 norm of (trained - start), before any clipping
    noise_std: float | None = None  # local DP-SGD: the noise std Opacus used per step


def train_one(
    *, scenario: Scenario, start: dict[str, torch.Tensor], client_id: int, round_number: int
) -> TrainedClient:
    """Train the scenario's model from ``start`` on one client's data for one round."""
    dataset = dataset_for(scenario)
    model = model_for(scenario, dataset)
    model.load_state_dict(start)
    result = train_client(
        model=model,
        data=dataset.client(client_id),
        settings=train_settings(scenario),
        seed=client_seed(seed=scenario.seed, round_number=round_number, client_id=client_id),
    )
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    norm = float(np.linalg.norm(flatten_state(trained) - flatten_state(start)))
    return TrainedClient(client_id, trained, result.num_examples, result.mean_loss, norm, result.noise_std)


def train_sampled(
    *, scenario: Scenario, start: dict[str, torch.Tensor], client_id: int, round_number: int
) -> TrainedClient:
    """A sampled client's work in a round: :func:`train_one`, unless the scenario's
    ``faults`` make this client fail or hang (design-pool users never do)."""
    inject_faults(faults=scenario.faults, seed=scenario.seed, client_id=client_id, round_number=round_number)
    return train_one(scenario=scenario, start=start, client_id=client_id, round_number=round_number)


def evaluate_many(
    *, scenario: Scenario, state: dict[str, torch.Tensor], client_ids: list[int]
) -> tuple[float, int, int]:
    """Summed loss, correct predictions and sample count over clients' held-out samples."""
    dataset = dataset_for(scenario)
    model = model_for(scenario, dataset)
    model.load_state_dict(state)
    loss_sum, correct, count = 0.0, 0, 0
    for client_id in client_ids:
        client_loss, client_correct, client_count = evaluate_client(model=model, data=dataset.client(int(client_id)))
        loss_sum, correct, count = loss_sum + client_loss, correct + client_correct, count + client_count
    return loss_sum, correct, count
