"""Reach clients by plain in-process calls instead of Flower messages.

The same client work as the ClientApp (fedsim.clients.work), with client-side clipping
done as Flower's ``fixedclipping_mod`` does it. Used by tests of the round loop and by
the plain-loop baseline benchmark; a batched many-client node will build on it.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import numpy as np

from fedsim.clients.work import evaluate_many, train_sampled
from fedsim.config import Scenario
from fedsim.loop import CohortReplies, TrainedReply
from fedsim.params import flatten_state
from fedsim.privacy import DpMechanism
from fedsim.strategies.aggregation import clip_updates


class InProcessTransport:
    """Trains and evaluates clients in this process, one after the other."""

    def __init__(self, *, scenario: Scenario) -> None:
        self.scenario = scenario
        self.client_clips = DpMechanism.from_scenario(scenario).client_clips

    def train(
        self, *, round_number: int, state: dict[str, Any], cohort: np.ndarray, timeout_s: float | None
    ) -> CohortReplies:
        """Train the cohort one client after the other in a worker thread, so that a client
        that hangs past ``timeout_s`` is given up on (it and the clients after it count as
        failed; its thread is left to finish on its own). A client that raises fails alone."""
        done: queue.Queue[tuple[int, TrainedReply | BaseException]] = queue.Queue()
        given_up = threading.Event()
        start = flatten_state(state)

        def work() -> None:
            for client_id in cohort:
                if given_up.is_set():
                    return  # the round went on without the rest: train nobody for it any more
                try:
                    done.put((int(client_id), self._train_one(state, start, int(client_id), round_number)))
                except Exception as error:  # noqa: BLE001 - a failing client, reported to the loop
                    done.put((int(client_id), error))

        threading.Thread(target=work, daemon=True, name=f"fedsim-round-{round_number}").start()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        answered = CohortReplies(replies=[])
        for client_id in cohort:
            try:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                client, outcome = done.get(timeout=remaining)
            except queue.Empty:
                given_up.set()
                answered.failed[int(client_id)] = f"no reply within round_timeout_s={timeout_s:g}"
                continue
            if isinstance(outcome, BaseException):
                answered.failed[client] = f"{type(outcome).__name__}: {outcome}"
            else:
                answered.replies.append(outcome)
        return answered

    def _train_one(self, state: dict[str, Any], start: np.ndarray, client_id: int, round_number: int) -> TrainedReply:
        trained = train_sampled(
            scenario=self.scenario, start=state, client_id=client_id, round_number=round_number, start_flat=start
        )
        flat = flatten_state(trained.state)
        if self.client_clips:
            flat = start + clip_updates((flat - start)[None], clip_norm=self.scenario.dp.clip_norm)[0]
        return TrainedReply(
            client_id=trained.client_id,
            trained=flat,
            num_examples=trained.num_examples,
            update_norm=trained.update_norm,
            train_loss=trained.train_loss,
            noise_std=trained.noise_std,
        )

    def evaluate(self, *, round_number: int, state: dict[str, Any], client_ids: np.ndarray) -> tuple[float, int, int]:
        return evaluate_many(scenario=self.scenario, state=state, client_ids=[int(c) for c in client_ids])
