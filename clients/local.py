"""Reach clients by plain in-process calls instead of Flower messages.

The same client work as the ClientApp (fedsim.clients.work), with client-side clipping
done as Flower's ``fixedclipping_mod`` does it. Used by tests of the round loop and by
the plain-loop baseline benchmark; a batched many-client node will build on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsim.clients.work import evaluate_many, train_one
from fedsim.config import Scenario
from fedsim.loop import TrainedReply
from fedsim.params import flatten_state
from fedsim.privacy import DpMechanism
from fedsim.strategies.aggregation import clip_updates


class InProcessTransport:
    """Trains and evaluates clients in this process, one after the other."""

    def __init__(self, *, scenario: Scenario) -> None:
        self.scenario = scenario
        self.client_clips = DpMechanism.from_scenario(scenario).client_clips

    def train(self, *, round_number: int, state: dict[str, Any], cohort: np.ndarray) -> list[TrainedReply]:
        start = flatten_state(state)
        replies = []
        for client_id in cohort:
            trained = train_one(
                scenario=self.scenario, start=state, client_id=int(client_id), round_number=round_number
            )
            flat = flatten_state(trained.state)
            if self.client_clips:
                flat = start + clip_updates((flat - start)[None], clip_norm=self.scenario.dp.clip_norm)[0]
            replies.append(
                TrainedReply(
                    client_id=trained.client_id,
                    trained=flat,
                    num_examples=trained.num_examples,
                    update_norm=trained.update_norm,
                    train_loss=trained.train_loss,
                    noise_std=trained.noise_std,
                )
            )
        return replies

    def evaluate(self, *, round_number: int, state: dict[str, Any], client_ids: np.ndarray) -> tuple[float, int, int]:
        return evaluate_many(scenario=self.scenario, state=state, client_ids=[int(c) for c in client_ids])
