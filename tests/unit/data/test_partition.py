"""Tests for fedsim.data.partition."""

import numpy as np
import pytest

from fedsim.data.partition import (
    dirichlet_label_partition,
    iid_partition,
    subset_rows,
    train_test_sizes,
    train_test_split_indices,
)
from fedsim.errors import DataError

# 10 classes x 200 samples, interleaved so that index order says nothing about labels
LABELS = np.tile(np.arange(10), 200)


def mean_label_skew(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each part's label histogram and the pool's."""
    k = labels.max() + 1
    pooled = np.bincount(labels, minlength=k) / len(labels)
    tvs = []
    for part in parts:
        hist = np.bincount(labels[part], minlength=k) / len(part)
        tvs.append(0.5 * np.abs(hist - pooled).sum())
    return float(np.mean(tvs))


@pytest.mark.parametrize("alpha", [0.05, 0.5, 100.0])
def test_dirichlet_uses_every_index_exactly_once(alpha):
    parts = dirichlet_label_partition(labels=LABELS, num_partitions=20, alpha=alpha, rng=np.random.default_rng(1))
    assert len(parts) == 20
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(LABELS)))


def test_dirichlet_follows_the_generator():
    a = dirichlet_label_partition(labels=LABELS, num_partitions=10, alpha=0.5, rng=np.random.default_rng(7))
    b = dirichlet_label_partition(labels=LABELS, num_partitions=10, alpha=0.5, rng=np.random.default_rng(7))
    c = dirichlet_label_partition(labels=LABELS, num_partitions=10, alpha=0.5, rng=np.random.default_rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_smaller_alpha_gives_more_skewed_labels():
    skew = {
        alpha: mean_label_skew(
            LABELS,
            dirichlet_label_partition(labels=LABELS, num_partitions=20, alpha=alpha, rng=np.random.default_rng(0)),
        )
        for alpha in (0.1, 1.0, 100.0)
    }
    assert skew[0.1] > skew[1.0] > skew[100.0]
    assert skew[0.1] > 0.5  # each user dominated by a few classes
    assert skew[100.0] < 0.15  # close to the pooled distribution


def test_dirichlet_respects_min_size():
    # over several seeds, unconstrained draws leave some users below 20 samples ...
    unconstrained = [
        min(
            len(p)
            for p in dirichlet_label_partition(
                labels=LABELS, num_partitions=20, alpha=0.3, rng=np.random.default_rng(s), min_size=0
            )
        )
        for s in range(10)
    ]
    assert min(unconstrained) < 20
    # ... which min_size=20 redraws away
    for s in range(10):
        parts = dirichlet_label_partition(
            labels=LABELS, num_partitions=20, alpha=0.3, rng=np.random.default_rng(s), min_size=20
        )
        assert min(len(p) for p in parts) >= 20
        np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(LABELS)))


def test_dirichlet_more_partitions_than_samples_allow_raises():
    with pytest.raises(DataError, match="lower data.num_clients"):
        dirichlet_label_partition(labels=LABELS, num_partitions=1001, alpha=1.0, rng=np.random.default_rng(0))


def test_dirichlet_gives_up_after_bounded_tries_with_a_one_line_fix():
    # two classes and a tiny alpha: each class lands almost entirely on one of 50 users
    labels = np.repeat([0, 1], 100)
    with pytest.raises(DataError, match="raise data.options.alpha") as err:
        dirichlet_label_partition(labels=labels, num_partitions=50, alpha=0.001, rng=np.random.default_rng(0))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_dirichlet_rejects_non_positive_alpha(alpha):
    with pytest.raises(DataError, match="alpha"):
        dirichlet_label_partition(labels=LABELS, num_partitions=2, alpha=alpha, rng=np.random.default_rng(0))


def test_iid_partition_is_a_balanced_permutation():
    parts = iid_partition(num_samples=103, num_partitions=10, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(103))
    assert sorted(len(p) for p in parts) == [10] * 7 + [11] * 3
    # shuffled, not contiguous blocks
    assert not np.array_equal(parts[0], np.arange(len(parts[0])))


def test_iid_partition_follows_the_generator():
    a = iid_partition(num_samples=50, num_partitions=5, rng=np.random.default_rng(4))
    b = iid_partition(num_samples=50, num_partitions=5, rng=np.random.default_rng(4))
    c = iid_partition(num_samples=50, num_partitions=5, rng=np.random.default_rng(5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_iid_partition_with_too_few_samples_raises():
    with pytest.raises(DataError, match="lower data.num_clients"):
        iid_partition(num_samples=5, num_partitions=6, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    ("n", "fraction", "expected"),
    [
        (10, 0.2, (8, 2)),
        (65, 0.2, (52, 13)),
        (7, 0.5, (3, 4)),  # 3.5 rounds up
        (2, 0.01, (1, 1)),  # at least one test sample once there are two
        (1, 0.5, (1, 0)),  # a single sample always trains
        (3, 0.9, (1, 2)),  # at least one training sample
        (5, 0.0, (5, 0)),
    ],
)
def test_train_test_split_sizes(n, fraction, expected):
    train, test = train_test_split_indices(num_samples=n, test_fraction=fraction, rng=np.random.default_rng(0))
    assert (len(train), len(test)) == expected
    assert train_test_sizes(num_samples=n, test_fraction=fraction) == expected
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(n))


def test_train_test_split_is_random_and_follows_the_generator():
    a = train_test_split_indices(num_samples=100, test_fraction=0.3, rng=np.random.default_rng(1))
    b = train_test_split_indices(num_samples=100, test_fraction=0.3, rng=np.random.default_rng(1))
    c = train_test_split_indices(num_samples=100, test_fraction=0.3, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(np.sort(a[1]), np.sort(c[1]))
    assert not np.array_equal(np.sort(a[1]), np.arange(70, 100))  # not just the tail


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_train_test_split_rejects_bad_fraction(fraction):
    with pytest.raises(DataError, match="test_fraction"):
        train_test_split_indices(num_samples=10, test_fraction=fraction, rng=np.random.default_rng(0))


def test_subset_rows_keeps_a_random_sorted_subset_only_when_the_cap_binds():
    assert subset_rows(num_samples=5, max_samples=None, rng=np.random.default_rng(0)) is None
    assert subset_rows(num_samples=5, max_samples=5, rng=np.random.default_rng(0)) is None
    kept = subset_rows(num_samples=100, max_samples=10, rng=np.random.default_rng(0))
    assert len(kept) == 10 and len(set(kept.tolist())) == 10
    assert np.all(np.diff(kept) > 0) and kept.min() >= 0 and kept.max() < 100
    assert not np.array_equal(kept, np.arange(10))  # random, not the head
    np.testing.assert_array_equal(kept, subset_rows(num_samples=100, max_samples=10, rng=np.random.default_rng(0)))
