"""Which clients join a round: Poisson sampling (the default) or a fixed-size cohort.

Each round's cohort comes from its own generator seeded by (seed, round), so a round can
be replayed or resumed without replaying the rounds before it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from fedsim.seeding import SAMPLING, round_rng


def sample_cohort(
    *,
    population: int,
    clients_per_round: int,
    method: Literal["poisson", "fixed"],
    seed: int,
    round_number: int,
) -> np.ndarray:
    """Client ids of one round's cohort, sorted.

    Poisson: every client joins independently with q = clients_per_round / population,
    so the cohort size varies (and may be 0). Fixed: exactly clients_per_round clients,
    drawn without replacement.
    """
    rng = round_rng(seed=seed, stream=SAMPLING, round_number=round_number)
    if method == "poisson":
        q = clients_per_round / population
        return np.flatnonzero(rng.random(population) < q)
    if method == "fixed":
        return np.sort(rng.choice(population, size=clients_per_round, replace=False))
    raise ValueError(f"unknown sampling method {method!r}; allowed: poisson, fixed")
