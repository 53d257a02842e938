"""Pure functions that split sample indices among users and into train/test parts.

All functions draw from the generator they are given (see ``fedsim.seeding``) and return
index arrays (``int64``) into the original sample array.
"""

from __future__ import annotations

import numpy as np

from fedsim.errors import DataError

#: how often ``dirichlet_label_partition`` redraws before it gives up
MAX_DIRICHLET_TRIES = 1000


def dirichlet_label_partition(
    *,
    labels: np.ndarray,
    num_partitions: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 2,
) -> list[np.ndarray]:
    """Split samples among partitions with label proportions drawn from Dir(alpha).

    For each class, the proportions of its samples that go to each partition are drawn
    from a symmetric Dirichlet(alpha) distribution (Yurochkin et al. 2019; Hsu et al.
    2019). Small alpha gives partitions dominated by a few classes; large alpha
    approaches an IID split. The whole split is redrawn until every partition holds at
    least ``min_size`` samples.

    Args:
        labels: 1-D array of integer class labels, one per sample.
        num_partitions: Number of partitions (users).
        alpha: Dirichlet concentration, > 0.
        rng: Generator that draws the split (advanced by this call).
        min_size: Smallest number of samples every partition must get.

    Returns:
        One sorted index array per partition; every sample index appears exactly once.

    Raises:
        DataError: If the arguments are invalid, or no split meets ``min_size`` within
            ``MAX_DIRICHLET_TRIES`` draws.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"labels must be a 1-D array, got shape {labels.shape}")
    if num_partitions < 1:
        raise DataError(f"num_partitions must be at least 1, got {num_partitions}")
    if not alpha > 0:
        raise DataError(f"Dirichlet alpha must be > 0, got {alpha}")
    if min_size < 0:
        raise DataError(f"min_size must be >= 0, got {min_size}")
    num_samples = labels.shape[0]
    if num_partitions * min_size > num_samples:
        raise DataError(
            f"cannot give {num_partitions} users at least {min_size} samples each from "
            f"{num_samples} samples; lower data.num_clients (or data.design_pool)"
        )

    class_indices = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(MAX_DIRICHLET_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
        for idx in class_indices:
            idx = rng.permutation(idx)
            proportions = rng.dirichlet(np.full(num_partitions, alpha))
            cuts = (np.cumsum(proportions)[:-1] * len(idx)).astype(int)
            for part, chunk in zip(parts, np.split(idx, cuts)):
                part.append(chunk)
        sizes = [sum(len(chunk) for chunk in part) for part in parts]
        if min(sizes) >= min_size:
            return [np.sort(np.concatenate(part)).astype(np.int64) for part in parts]
    raise DataError(
        f"Dirichlet split (alpha={alpha}) of {num_samples} samples left some of "
        f"{num_partitions} users with fewer than {min_size} samples in "
        f"{MAX_DIRICHLET_TRIES} tries; raise data.options.alpha or lower data.num_clients"
    )


def iid_partition(*, num_samples: int, num_partitions: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Split ``range(num_samples)`` uniformly at random into near-equal partitions.

    Args:
        num_samples: Number of samples to split.
        num_partitions: Number of partitions; sizes differ by at most one.
        rng: Generator that draws the split (advanced by this call).

    Returns:
        One sorted index array per partition; every index appears exactly once.

    Raises:
        DataError: If there are fewer samples than partitions.
    """
    if num_partitions < 1:
        raise DataError(f"num_partitions must be at least 1, got {num_partitions}")
    if num_samples < num_partitions:
        raise DataError(
            f"cannot split {num_samples} samples among {num_partitions} users; "
            "lower data.num_clients (or data.design_pool)"
        )
    perm = rng.permutation(num_samples)
    return [np.sort(part).astype(np.int64) for part in np.array_split(perm, num_partitions)]


def train_test_sizes(*, num_samples: int, test_fraction: float) -> tuple[int, int]:
    """Number of training and test samples of one user, without drawing anything.

    The test part is ``round(num_samples * test_fraction)``, but the training part keeps
    at least one sample, and the test part gets at least one when ``num_samples >= 2``
    and ``test_fraction > 0``.

    Args:
        num_samples: The user's number of samples, >= 1.
        test_fraction: Fraction held out for testing, in [0, 1).

    Returns:
        ``(num_train, num_test)``, summing to ``num_samples``.

    Raises:
        DataError: If ``num_samples < 1`` or ``test_fraction`` is outside [0, 1).
    """
    if num_samples < 1:
        raise DataError(f"a user needs at least 1 sample, got {num_samples}")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}")
    num_test = int(num_samples * test_fraction + 0.5)
    if test_fraction > 0 and num_samples >= 2:
        num_test = max(num_test, 1)
    num_test = min(num_test, num_samples - 1)
    return num_samples - num_test, num_test


def train_test_split_indices(
    *, num_samples: int, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Randomly split one user's ``range(num_samples)`` into train and test indices.

    Sizes follow ``train_test_sizes``.

    Args:
        num_samples: The user's number of samples, >= 1.
        test_fraction: Fraction held out for testing, in [0, 1).
        rng: Generator that draws the split (advanced by this call).

    Returns:
        ``(train_indices, test_indices)``, disjoint, together ``range(num_samples)``.
    """
    num_train, _ = train_test_sizes(num_samples=num_samples, test_fraction=test_fraction)
    perm = rng.permutation(num_samples).astype(np.int64)
    return perm[:num_train], perm[num_train:]


def subset_rows(*, num_samples: int, max_samples: int | None, rng: np.random.Generator) -> np.ndarray | None:
    """A random, sorted subset of ``range(num_samples)`` of size ``max_samples``.

    Args:
        num_samples: The user's number of samples.
        max_samples: The cap; None keeps all.
        rng: Generator that draws the subset (only used when the cap binds).

    Returns:
        The kept indices, or None when every sample is kept.
    """
    if max_samples is None or num_samples <= max_samples:
        return None
    return np.sort(rng.choice(num_samples, size=max_samples, replace=False)).astype(np.int64)
