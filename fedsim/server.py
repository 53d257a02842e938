"""The ServerApp: runs fedsim's round loop on Flower's Grid.

Clients are reached through Flower messages: one train message per sampled logical
client (a client that fails sends an error reply; one that does not answer within
``round_timeout_s`` is counted as failed), evaluation spread over the supernodes in
chunks of client ids.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedsim.config import Scenario
from fedsim.errors import FedsimError
from fedsim.loop import CohortReplies, RoundLoop, RunOutcome, TrainedReply
from fedsim.params import flatten_state
from fedsim.privacy import DpMechanism


class FlowerTransport:
    """Reaches clients through Flower's Grid: one train message per sampled client,
    evaluation spread over the supernodes in chunks of client ids."""

    def __init__(self, *, grid: Grid, scenario: Scenario, expected_nodes: int) -> None:
        self.grid = grid
        self.scenario = scenario
        self.client_clips = DpMechanism.from_scenario(scenario).client_clips
        self.node_ids = self._wait_for_nodes(expected_nodes)

    def _wait_for_nodes(self, expected: int, timeout_s: float = 120.0) -> list[int]:
        """Flower registers supernodes asynchronously: wait until all are there."""
        deadline = time.monotonic() + timeout_s
        while len(node_ids := sorted(self.grid.get_node_ids())) < expected:
            if time.monotonic() > deadline:
                raise FedsimError(
                    f"only {len(node_ids)} of {expected} Flower supernodes came up in {timeout_s:g} s; "
                    "lower ray.num_nodes or check the Ray cluster with --verbose"
                )
            time.sleep(0.05)
        return node_ids

    def train(
        self, *, round_number: int, state: dict[str, Any], cohort: np.ndarray, timeout_s: float | None
    ) -> CohortReplies:
        config: dict[str, Any] = {"round": round_number}
        if self.client_clips:
            config["clipping_norm"] = float(self.scenario.dp.clip_norm)  # read by fixedclipping_mod
        arrays = ArrayRecord(state)
        messages = [
            Message(
                content=RecordDict({"arrays": arrays, "config": ConfigRecord({**config, "client-id": int(cid)})}),
                message_type=MessageType.TRAIN,
                dst_node_id=self.node_ids[i % len(self.node_ids)],
            )
            for i, cid in enumerate(cohort)
        ]
        replies = list(self.grid.send_and_receive(messages, timeout=timeout_s))
        # the grid gives each message its id as it sends it; a reply names the one it answers
        client_of = {message.metadata.message_id: int(cid) for message, cid in zip(messages, cohort)}
        answered = CohortReplies(replies=[])
        for reply in replies:
            client_id = client_of[reply.metadata.reply_to_message_id]
            if reply.has_error():
                answered.failed[client_id] = str(reply.error.reason)
                continue
            metrics, trained = reply.content["metrics"], reply.content["arrays"]
            answered.replies.append(
                TrainedReply(
                    client_id=int(metrics["client-id"]),
                    trained=flatten_state(dict(zip(trained.keys(), trained.to_numpy_ndarrays()))),
                    num_examples=int(metrics["num-examples"]),
                    update_norm=float(metrics["update-norm"]),
                    train_loss=float(metrics["train-loss"]),
                    noise_std=float(metrics["noise-std"]) if "noise-std" in metrics else None,
                )
            )
        for client_id in set(client_of.values()) - {r.client_id for r in answered.replies} - set(answered.failed):
            answered.failed[client_id] = f"no reply within round_timeout_s={timeout_s:g}"
        return answered

    def evaluate(self, *, round_number: int, state: dict[str, Any], client_ids: np.ndarray) -> tuple[float, int, int]:
        arrays = ArrayRecord(state)
        chunks = np.array_split(client_ids, min(len(self.node_ids), len(client_ids)))
        messages = [
            Message(
                content=RecordDict({"arrays": arrays, "config": ConfigRecord({"client-ids": [int(c) for c in chunk]})}),
                message_type=MessageType.EVALUATE,
                dst_node_id=self.node_ids[i],
            )
            for i, chunk in enumerate(chunks)
        ]
        replies = list(self.grid.send_and_receive(messages))
        _raise_client_errors(replies, round_number, "evaluation")
        loss = sum(float(r.content["metrics"]["loss-sum"]) for r in replies)
        correct = sum(int(r.content["metrics"]["correct"]) for r in replies)
        count = sum(int(r.content["metrics"]["num-examples"]) for r in replies)
        return loss, correct, count


def _raise_client_errors(replies: list[Message], round_number: int, what: str) -> None:
    for reply in replies:
        if reply.has_error():
            reason = " ".join(str(reply.error.reason).split())[:300]
            raise FedsimError(
                f"a client failed during {what} in round {round_number}: {reason}; "
                "finished rounds are kept in the run folder, rerun with --verbose for details"
            )


def make_server_app(*, loop: RoundLoop, outcome: RunOutcome, expected_nodes: int) -> ServerApp:
    """A ServerApp whose main runs ``loop`` and reports into ``outcome``.

    Errors are caught here and handed to the driver, which reports them as one line.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            transport = FlowerTransport(grid=grid, scenario=loop.scenario, expected_nodes=expected_nodes)
            loop.run(transport, outcome)
        except BaseException as error:  # noqa: BLE001 - handed to the driver
            outcome.error = error

    return app
