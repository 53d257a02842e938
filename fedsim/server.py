"""The ServerApp: runs fedsim's round loop on Flower's Grid.

Clients are reached through Flower messages: the round's cohort is split into one share
of logical clients per supernode (fedsim.clients.node), and the shares travel in one
train message per client actor that can run at once; the reply sums each share's
prepared updates and reports each client, failures included (a client that raises or is
still training at the round's deadline, ``round_timeout_s``, is counted as failed; so are
all clients of a message that does not answer). Evaluation is spread over the same
lanes in chunks of client ids.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedsim.clients.messages import read_results, read_scores, request_content
from fedsim.clients.node import CohortReplies, ShareRequest, ShareResult, round_requests
from fedsim.clients.work import total_scores
from fedsim.config import Scenario
from fedsim.errors import FedsimError
from fedsim.loop import RoundLoop, RunOutcome
from fedsim.strategies.aggregation import ContributionRule

#: seconds the server waits for a node's reply after the round's deadline
REPLY_GRACE_S = 5.0
#: seconds between the simulation grid's polls for replies (Flower's InMemoryGrid waits
#: 0.1 s between polls: up to 0.1 s lost a round, a third of a Sent140-like round)
PULL_INTERVAL_S = 0.005
#: seconds between the simulation engine's looks for new messages (Flower 1.42's
#: ``vce_api.add_messages_to_queue`` waits 0.1 s: on quickstart, more than a round's work)
DISPATCH_INTERVAL_S = 0.005


@contextmanager
def quick_dispatch() -> Iterator[None]:
    """Let Flower's simulation engine take up new messages every ``DISPATCH_INTERVAL_S``
    instead of every 0.1 s while the block runs (Flower offers no setting for it, so its
    loop is replaced for the time being; a test checks that Flower's loop is still the one
    replaced here)."""
    from flwr.server.superlink.fleet.vce import vce_api

    original = vce_api.add_messages_to_queue

    def add_messages_to_queue(state, queue, nodes_mapping, f_stop) -> None:
        """Flower's loop with a shorter wait."""
        while not f_stop.is_set():
            for node_id in nodes_mapping:
                for message in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(message)
            f_stop.wait(DISPATCH_INTERVAL_S)

    vce_api.add_messages_to_queue = add_messages_to_queue
    try:
        yield
    finally:
        vce_api.add_messages_to_queue = original


class FlowerTransport:
    """Reaches clients through Flower's Grid. A round's cohort is split into one share per
    supernode (``ray.num_nodes``, as the in-process engine splits it), and the shares go
    out in one train message per Ray actor that can run at once ("lane"), spread over the
    lanes by their client counts (:func:`balanced_lanes`): Flower's overhead (~13 ms a
    message here, besides its 0.1 s dispatch poll) is paid per lane and round, and the
    sums stay those of the shares, so the numbers do not depend on the cluster's size.
    Evaluation is spread over the lanes in chunks of client ids. ``hosts`` collects, per
    round, the Ray node each reply came from."""

    def __init__(self, *, grid: Grid, scenario: Scenario, expected_nodes: int) -> None:
        self.grid = grid
        self.scenario = scenario
        self.node_ids = self._wait_for_nodes(expected_nodes)
        self.lanes = min(len(self.node_ids), _actors(scenario) or len(self.node_ids))
        self.hosts: dict[int, list[str]] = {}

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
        dim = sum(int(np.prod(value.shape)) for value in state.values())
        arrays = ArrayRecord(state)
        requests, cohort_shares = round_requests(
            round_number=round_number,
            cohort=cohort,
            design_ids=list(design_ids),
            nodes=len(self.node_ids),
            rule=rule,
            keep_updates=keep_updates,
            deadline=None if timeout_s is None else time.time() + timeout_s,
        )
        lanes = balanced_lanes([len(request.client_ids) for request in requests], lanes=self.lanes)
        messages = [
            Message(
                content=request_content(arrays=arrays, requests={index: requests[index] for index in lane}),
                message_type=MessageType.TRAIN,
                dst_node_id=self.node_ids[number],
            )
            for number, lane in enumerate(lanes)
        ]
        wait = None if timeout_s is None else timeout_s + REPLY_GRACE_S
        replies = list(self.grid.send_and_receive(messages, timeout=wait))
        # the grid gives each message its id as it sends it; a reply names the one it answers
        lane_of = {message.metadata.message_id: lane for message, lane in zip(messages, lanes)}
        results: dict[int, ShareResult] = {}
        hosts = self.hosts.setdefault(round_number, [])
        for reply in replies:
            lane = lane_of[reply.metadata.reply_to_message_id]
            if reply.has_error():  # the node failed as a whole: every client of its shares did
                why = _reason(reply.error.reason)
                results.update({index: _failed_share(requests[index], dim=dim, why=why) for index in lane})
                continue
            answered, host = read_results(reply.content)
            results.update(answered)
            hosts.append(host)
        for index, request in enumerate(requests):  # lanes that did not answer in time
            if index not in results:
                why = f"no reply within round_timeout_s={timeout_s:g}"
                results[index] = _failed_share(request, dim=dim, why=why)
        return CohortReplies.combine(
            [results[index] for index in range(len(requests))],
            cohort_shares=cohort_shares,
            dim=dim,
            keep_updates=keep_updates,
        )

    def evaluate(self, *, round_number: int, state: dict[str, Any], client_ids: np.ndarray) -> tuple[float, int, int]:
        """Each client's scores, added up in client order (as the in-process engine does)."""
        arrays = ArrayRecord(state)
        chunks = np.array_split(client_ids, min(self.lanes, len(client_ids)))
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
        chunk_of = {message.metadata.message_id: i for i, message in enumerate(messages)}
        scores = dict(sorted((chunk_of[r.metadata.reply_to_message_id], read_scores(r.content)) for r in replies))
        return total_scores([score for chunk in scores.values() for score in chunk])


def balanced_lanes(sizes: list[int], *, lanes: int) -> list[list[int]]:
    """Share indices per lane (at most ``lanes``, none empty): the largest share first, each
    to the lane with the fewest clients so far (ties: the first such lane); each lane's in
    share order. Which lane carries a share changes no number (results are put together in
    share order), only how evenly the actors are busy when shares differ in size (a
    cohort or design pool that does not split evenly over the nodes)."""
    loads = [0] * max(1, min(lanes, len(sizes)))
    shares: list[list[int]] = [[] for _ in loads]
    for index in sorted(range(len(sizes)), key=lambda i: -sizes[i]):  # stable: equal sizes in share order
        lane = loads.index(min(loads))
        shares[lane].append(index)
        loads[lane] += sizes[index]
    return [sorted(lane) for lane in shares if lane]


def _actors(scenario: Scenario) -> int | None:
    """How many client actors Flower's Ray backend runs at once (None if unknown)."""
    try:
        from flwr.simulation.ray_transport.ray_actor import pool_size_from_resources

        ray = scenario.ray
        return pool_size_from_resources({"num_cpus": ray.num_cpus_per_client, "num_gpus": ray.num_gpus_per_client})
    except Exception:  # noqa: BLE001 - Ray not reachable from here: one message per supernode
        return None


def _failed_share(request: ShareRequest, *, dim: int, why: str) -> ShareResult:
    """A share none of whose clients answered."""
    return ShareResult(total=np.zeros(dim), weight=0.0, reports=[], failed=dict.fromkeys(request.client_ids, why))


def _reason(text: str) -> str:
    """The client's own error message out of Ray's wrapped traceback, on one line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(text))
    _, found, message = text.rpartition("Message: ")
    return " ".join((message if found else text).split())


def _raise_client_errors(replies: list[Message], round_number: int, what: str) -> None:
    for reply in replies:
        if reply.has_error():
            reason = _reason(reply.error.reason)[:300]
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
            if hasattr(grid, "pull_interval"):  # the simulation's InMemoryGrid: default 0.1 s a poll
                grid.pull_interval = PULL_INTERVAL_S
            transport = FlowerTransport(grid=grid, scenario=loop.scenario, expected_nodes=expected_nodes)
            loop.run(transport, outcome)
        except BaseException as error:  # noqa: BLE001 - handed to the driver
            outcome.error = error
        finally:
            outcome.finished.set()

    return app
