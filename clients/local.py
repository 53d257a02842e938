"""Reach clients by plain in-process calls instead of Flower messages.

The same shares and the same node work as the ClientApp (fedsim.clients.node), one share
after the other in this process, so both engines compute the same rounds. Used by tests
of the round loop, ``--engine inprocess`` and benchmarks.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from fedsim.clients.node import CohortReplies, node_count, round_requests, train_share
from fedsim.clients.work import evaluate_many
from fedsim.config import Scenario
from fedsim.strategies.aggregation import ContributionRule


class InProcessTransport:
    """Trains and evaluates clients in this process, share after share."""

    def __init__(self, *, scenario: Scenario) -> None:
        self.scenario = scenario
        self.nodes = node_count(scenario)

    def train(
        self,
        *,
        round_number: int,
        state: dict[str, Any],
        cohort: np.ndarray,
        rule: ContributionRule,
        keep_updates: bool,
        timeout_s: float | None,
        design_ids: list[int] = (),
    ) -> CohortReplies:
        """Train the cohort (and ``design_ids``) in the shares the Flower engine would send
        its nodes. Past ``timeout_s`` the client in training and all later ones count as
        failed (the late client's thread is left to finish on its own); a client that
        raises fails alone."""
        requests, cohort_shares = round_requests(
            round_number=round_number,
            cohort=cohort,
            design_ids=list(design_ids),
            nodes=self.nodes,
            rule=rule,
            keep_updates=keep_updates,
            deadline=None if timeout_s is None else time.time() + timeout_s,
        )
        results = [train_share(scenario=self.scenario, state=state, request=request) for request in requests]
        dim = sum(value.numel() for value in state.values())
        return CohortReplies.combine(results, cohort_shares=cohort_shares, dim=dim, keep_updates=keep_updates)

    def evaluate(self, *, round_number: int, state: dict[str, Any], client_ids: np.ndarray) -> tuple[float, int, int]:
        return evaluate_many(scenario=self.scenario, state=state, client_ids=[int(c) for c in client_ids])
