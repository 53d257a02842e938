"""A client's draws from torch's global RNG depend on its seed only, even while a client
the node gave up on (round_timeout_s) goes on training in another thread."""

import threading
import time

import torch

from fedsim.models import build_model
from fedsim.seeding import seeded


def _draws(seed: int, pause: float) -> list[float]:
    values = []
    with seeded(seed, device=torch.device("cpu")):
        for _ in range(5):
            values.append(float(torch.rand(1)))
            time.sleep(pause)  # a training step: time for another thread to run
    return values


def test_seeded_draws_do_not_mix_between_threads():
    alone = {seed: _draws(seed, 0.0) for seed in (1, 2)}
    together: dict[int, list[float]] = {}
    threads = [threading.Thread(target=lambda s=seed: together.__setitem__(s, _draws(s, 0.01))) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone
    assert alone[1] != alone[2]


def test_building_a_model_in_another_thread_does_not_disturb_seeded_draws():
    """The canary audit builds its model while the next round's clients train in-process."""
    alone = _draws(3, 0.0)
    stop = threading.Event()

    def build() -> None:
        while not stop.is_set():
            build_model(name="mlp", input_shape=(8,), num_classes=3, hidden=16, seed=0)

    builder = threading.Thread(target=build)
    builder.start()
    try:
        together = _draws(3, 0.01)
    finally:
        stop.set()
        builder.join()
    assert together == alone
