"""Every random choice of a run, derived from the scenario's seed.

Each purpose has its own stream, and each stream is keyed by round (and client), so any
round can be replayed or resumed without replaying the ones before it. The data sets
draw from their own streams (``DATA_*``), keyed by user, so a user's samples do not
depend on which users were loaded before.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numpy as np
import torch

SAMPLING = 1  # which clients join a round
NOISE = 2  # the server's DP noise
CLIENT = 3  # a client's batch order and DP-SGD noise
EVALUATION = 4  # which clients are evaluated
AUDIT = 5  # the canary audit
FAULTS = 6  # which clients drop out on purpose (scenario faults.dropout)

DATA_PARTITION = 101  # which samples (or natural users) each client holds
DATA_SPLIT = 102  # a user's train/test split (key: the user)
DATA_SUBSET = 103  # the samples a user keeps under max_samples (key: the user)
DATA_SIZES = 104  # a generated user's number of samples (key: the user)
DATA_SYNTHETIC = 105  # generated data: the shared model (no key), a user's model and samples (key: the user)


def round_rng(*, seed: int, stream: int, round_number: int, extra: int = 0) -> np.random.Generator:
    """The numpy generator of one (seed, stream, round, extra) key."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, round_number, extra]))


def client_seed(*, seed: int, round_number: int, client_id: int) -> int:
    """A 63-bit torch seed for one client's local training in one round."""
    state = np.random.SeedSequence([seed, CLIENT, round_number, client_id]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def keyed_rng(*, seed: int, stream: int, key: tuple[int, ...] = ()) -> np.random.Generator:
    """The numpy generator of one (seed, stream, key...) combination.

    Every number takes 64 bits and the key's length is part of the entropy, so distinct
    combinations never share a generator (a plain ``SeedSequence([seed, stream, ...])``
    treats ``[a, b]`` and ``[a, b, 0]`` alike, and splits large seeds into several words).

    Args:
        seed: The scenario's seed, >= 0.
        stream: One of this module's stream constants.
        key: Non-negative integers that pick one generator of the stream (e.g. a user).
    """
    words = np.array([seed, stream, len(key), *key], dtype=np.uint64)
    return np.random.default_rng(np.random.SeedSequence(words))


#: one user of torch's global RNG at a time in this process: a client given up on at the
#: round's deadline may still be training in a helper thread (fedsim.clients.node), and
#: the canary audit builds and trains models while the next round's clients train
_GLOBAL_RNG = threading.RLock()


@contextlib.contextmanager
def seeded(seed: int, *, device: torch.device) -> Iterator[None]:
    """torch's global RNG of ``device`` seeded with ``seed`` inside, restored after, and
    used by no other thread of this process meanwhile.

    On CPU only the CPU generator is seeded (``torch.manual_seed`` would also queue a seed
    for CUDA, and without CUDA record a stack trace each time: ~0.5 ms a client)."""
    devices = [device] if device.type == "cuda" else []
    with _GLOBAL_RNG, torch.random.fork_rng(devices=devices):
        if device.type == "cuda":
            torch.manual_seed(seed)
        else:
            torch.default_generator.manual_seed(seed)
        yield
