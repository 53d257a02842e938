"""Client sampling: Poisson with rate q, or a fixed-size cohort; seeded per round."""

import numpy as np
import pytest

from fedsim.strategies import sample_cohort


def test_poisson_cohort_sizes_follow_binomial_n_q():
    sizes = np.array(
        [
            len(sample_cohort(population=1000, clients_per_round=10, method="poisson", seed=7, round_number=r))
            for r in range(1, 2001)
        ]
    )
    assert sizes.mean() == pytest.approx(10, rel=0.03)
    assert sizes.var() == pytest.approx(1000 * 0.01 * 0.99, rel=0.1)
    assert len(set(sizes)) > 5  # the cohort size really varies


def test_poisson_inclusion_is_uniform_over_clients():
    counts = np.zeros(100)
    for r in range(1, 3001):
        counts[sample_cohort(population=100, clients_per_round=20, method="poisson", seed=1, round_number=r)] += 1
    assert counts.mean() / 3000 == pytest.approx(0.2, rel=0.02)
    assert counts.min() / 3000 > 0.16 and counts.max() / 3000 < 0.24


def test_fixed_cohort_has_exact_size_and_distinct_clients():
    cohort = sample_cohort(population=50, clients_per_round=12, method="fixed", seed=0, round_number=3)
    assert len(cohort) == 12 and len(set(cohort.tolist())) == 12 and cohort.max() < 50


def test_cohorts_depend_only_on_seed_and_round():
    a = sample_cohort(population=500, clients_per_round=25, method="poisson", seed=3, round_number=9)
    b = sample_cohort(population=500, clients_per_round=25, method="poisson", seed=3, round_number=9)
    c = sample_cohort(population=500, clients_per_round=25, method="poisson", seed=3, round_number=10)
    d = sample_cohort(population=500, clients_per_round=25, method="poisson", seed=4, round_number=9)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
