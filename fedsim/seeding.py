"""Every random choice of a run, derived from the scenario's seed.

Each purpose has its own stream, and each stream is keyed by round (and client), so any
round can be replayed or resumed without replaying the ones before it.
"""

from __future__ import annotations

import numpy as np

SAMPLING = 1  # which clients join a round
NOISE = 2  # the server's DP noise
CLIENT = 3  # a client's batch order and DP-SGD noise
EVALUATION = 4  # which clients are evaluated
AUDIT = 5  # the canary audit
FAULTS = 6  # which clients drop out on purpose (scenario faults.dropout)


def round_rng(*, seed: int, stream: int, round_number: int, extra: int = 0) -> np.random.Generator:
    """The numpy generator of one (seed, stream, round, extra) key."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, round_number, extra]))


def client_seed(*, seed: int, round_number: int, client_id: int) -> int:
    """A 63-bit torch seed for one client's local training in one round."""
    state = np.random.SeedSequence([seed, CLIENT, round_number, client_id]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1
