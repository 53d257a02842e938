"""scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), split among users.

The images ship inside the scikit-learn wheel, so this data set works offline. All
images are partitioned among the training clients and the design pool together
(label-Dirichlet or IID), then each user's share is split into train and test parts with
a generator seeded by ``(seed, user)``.
"""

from __future__ import annotations

import numpy as np
import torch

from fedsim.data.base import ClientData, FederatedDataset
from fedsim.data.partition import (
    dirichlet_label_partition,
    iid_partition,
    train_test_sizes,
    train_test_split_indices,
)
from fedsim.errors import DataError

PARTITIONS = ("dirichlet", "iid")


class DigitsDataset(FederatedDataset):
    """The sklearn digits as images of shape (1, 8, 8) in [0, 1], split among users.

    Args:
        num_clients: Number of training users (ids ``0 .. num_clients - 1``).
        design_pool_size: Number of design-pool users (the ids after the training ones).
        partition: ``"dirichlet"`` (label-skewed, see ``alpha``) or ``"iid"``.
        alpha: Dirichlet concentration for ``partition="dirichlet"``; smaller is more
            skewed.
        test_fraction: Fraction of each user's images held out, in [0, 1).
        seed: Seed of the partition and of the per-user splits, >= 0.

    Raises:
        DataError: If an argument is invalid or the images cannot be split that way.
    """

    name = "digits"
    num_classes = 10
    input_shape = (1, 8, 8)
    input_kind = "float"

    def __init__(
        self,
        *,
        num_clients: int,
        design_pool_size: int,
        partition: str = "dirichlet",
        alpha: float = 0.5,
        test_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        if num_clients < 1:
            raise DataError(f"digits needs at least 1 client, got num_clients={num_clients}")
        if design_pool_size < 0:
            raise DataError(f"design_pool_size must be >= 0, got {design_pool_size}")
        if partition not in PARTITIONS:
            raise DataError(f"digits option partition={partition!r} is unknown; use one of {PARTITIONS}")
        if not 0 <= test_fraction < 1:
            raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}")
        if seed < 0:
            raise DataError(f"seed must be >= 0, got {seed}")
        from sklearn.datasets import load_digits  # deferred: sklearn is slow to import

        digits = load_digits()
        self._x = torch.from_numpy((digits.images / 16.0).astype(np.float32)).unsqueeze(1)
        self._y = torch.from_numpy(digits.target.astype(np.int64))
        self._num_clients = int(num_clients)
        self._design_pool_size = int(design_pool_size)
        self.partition = partition
        self.alpha = float(alpha)
        self.test_fraction = float(test_fraction)
        self.seed = int(seed)

        num_users = self._num_clients + self._design_pool_size
        min_size = 2 if test_fraction > 0 else 1
        if partition == "dirichlet":
            self._user_indices = dirichlet_label_partition(
                labels=digits.target,
                num_partitions=num_users,
                alpha=alpha,
                seed=seed,
                min_size=min_size,
            )
        else:
            self._user_indices = iid_partition(num_samples=len(digits.target), num_partitions=num_users, seed=seed)

    def num_train_samples(self, client_id: int) -> int:
        n = len(self._user_indices[self._check_id(client_id)])
        return train_test_sizes(num_samples=n, test_fraction=self.test_fraction)[0]

    def client(self, client_id: int) -> ClientData:
        cid = self._check_id(client_id)
        indices = self._user_indices[cid]
        rng = np.random.default_rng([self.seed, cid])
        train, test = train_test_split_indices(num_samples=len(indices), test_fraction=self.test_fraction, rng=rng)
        train_t = torch.from_numpy(indices[train])
        test_t = torch.from_numpy(indices[test])
        return ClientData(
            x_train=self._x[train_t],
            y_train=self._y[train_t],
            x_test=self._x[test_t],
            y_test=self._y[test_t],
        )
