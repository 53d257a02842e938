"""fedsim's shorter wait in Flower's message dispatch: it replaces Flower's loop only while
a simulation runs, does what Flower's loop does, and Flower's loop is still the one it
replaces (a Flower upgrade that changes it fails here); and how shares are spread over the
lanes (messages) of a round."""

import inspect
import queue
import threading

from flwr.server.superlink.fleet.vce import vce_api

from fedsim.server import DISPATCH_INTERVAL_S, balanced_lanes, quick_dispatch


def test_flowers_dispatch_loop_is_still_the_one_fedsim_replaces():
    body = " ".join(inspect.getsource(vce_api.add_messages_to_queue).split())
    for part in (
        "while not f_stop.is_set():",
        "for node_id in nodes_mapping.keys():",
        "state.get_message_ins(node_id=node_id, limit=1)",
        "queue.put(msg)",
        "f_stop.wait(0.1)",
    ):
        assert part in body


class _State:
    """Flower's LinkState as the loop uses it: messages waiting per node."""

    def __init__(self, pending: dict[int, list[str]]) -> None:
        self.pending = pending

    def get_message_ins(self, *, node_id: int, limit: int) -> list[str]:
        taken, self.pending[node_id] = self.pending[node_id][:limit], self.pending[node_id][limit:]
        return taken


class _Stop(threading.Event):
    """Stops the loop after three waits and records how long each would have been."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if len(self.waits) == 3:
            self.set()
        return self.is_set()


def test_quick_dispatch_queues_every_nodes_messages_with_short_waits_and_restores_flowers_loop():
    flowers = vce_api.add_messages_to_queue
    state, out, stop = _State({7: ["a1", "a2"], 9: ["b1"]}), queue.Queue(), _Stop()
    with quick_dispatch():
        assert vce_api.add_messages_to_queue is not flowers
        vce_api.add_messages_to_queue(state, out, {7: 0, 9: 1}, stop)
    assert vce_api.add_messages_to_queue is flowers
    assert [out.get_nowait() for _ in range(out.qsize())] == ["a1", "b1", "a2"]  # one per node a look
    assert stop.waits == [DISPATCH_INTERVAL_S] * 3 and DISPATCH_INTERVAL_S < 0.1


def test_shares_go_to_the_least_loaded_lane_largest_first():
    """A round's one large design-pool share beside ten one-client cohort shares: the large
    one travels alone and the cohort on the other lane (round-robin put five cohort
    clients beside it); equal shares still alternate; every share on exactly one lane, each
    lane's in share order."""
    assert balanced_lanes([1] * 10 + [20], lanes=2) == [[10], list(range(10))]
    assert balanced_lanes([1] * 10, lanes=2) == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]
    assert balanced_lanes([2, 2, 2, 1, 1], lanes=2) == [[0, 2], [1, 3, 4]]
    assert balanced_lanes([3, 1], lanes=8) == [[0], [1]] and balanced_lanes([], lanes=2) == []
