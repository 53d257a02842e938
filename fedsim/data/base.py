"""The federated data set interface that every loader implements.

A federated data set maps a logical client id to that client's samples. Samples are
loaded lazily (``client(cid)``), so populations of hundreds of thousands of users do
not hold every tensor in memory. Training clients are ``0 .. num_clients - 1``; the
design pool (users reserved for the adversary, never sampled for training) has ids
``num_clients .. num_clients + design_pool_size - 1``.
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsim.data.options import DataOptions, PartitionOptions, parse_options, root_required
from fedsim.data.partition import (
    dirichlet_label_partition,
    iid_partition,
    subset_rows,
    train_test_sizes,
    train_test_split_indices,
)
from fedsim.errors import DataError
from fedsim.seeding import DATA_PARTITION, DATA_SPLIT, DATA_SUBSET, keyed_rng


@dataclass(frozen=True)
class ClientData:
    """One client's local samples, split into a training and a held-out part."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.y_test.shape[0])


class FederatedDataset(ABC):
    """Client id -> that client's samples, plus a disjoint design pool.

    The constructor of every data set takes the same keyword arguments: the population
    (``num_clients``, ``design_pool_size``), ``test_fraction``, ``seed``, ``root`` (the
    folder of its files; ignored by generated data sets) and its own ``data.options``
    (declared once, in ``fedsim.data.options``). This base class checks them all, then
    calls the subclass's ``_build()`` to read or index its data.
    """

    #: short name, as in the scenario's ``data.name``
    name: str
    #: number of output classes of the task
    num_classes: int
    #: shape of one input sample (without the batch dimension)
    input_shape: tuple[int, ...]
    #: dtype of inputs: "float" for features/images, "long" for token ids
    input_kind: str = "float"

    #: the validated ``data.options`` (a subclass narrows the type)
    options: DataOptions
    test_fraction: float
    seed: int
    root: Path | None

    def __init__(
        self,
        *,
        num_clients: int,
        design_pool_size: int,
        test_fraction: float = 0.2,
        seed: int = 0,
        root: str | Path | None = None,
        **options: Any,
    ) -> None:
        _require(num_clients, "data.num_clients", minimum=1)
        _require(design_pool_size, "data.design_pool", minimum=0)
        _require(seed, "seed", minimum=0)
        if not 0 <= test_fraction < 1:
            raise DataError(f"data.test_fraction must be in [0, 1), got {test_fraction!r}")
        self.options = parse_options(self.name, options)
        if self.options.needs_root and root is None:
            raise DataError(root_required(self.name))
        self._num_clients = int(num_clients)
        self._design_pool_size = int(design_pool_size)
        self.test_fraction = float(test_fraction)
        self.seed = int(seed)
        self.root = Path(root) if root is not None else None
        self._build()

    @abstractmethod
    def _build(self) -> None:
        """Read, index or partition the data, once the arguments are checked."""

    def _rng(self, stream: int, *key: int) -> np.random.Generator:
        """The generator of one of ``fedsim.seeding``'s streams, keyed by ``key`` (e.g. a user)."""
        return keyed_rng(seed=self.seed, stream=stream, key=tuple(int(k) for k in key))

    @property
    def num_clients(self) -> int:
        """Number of training clients (the population that is sampled)."""
        return self._num_clients

    @property
    def design_pool_size(self) -> int:
        """Number of design-pool users reserved for the adversary."""
        return self._design_pool_size

    @abstractmethod
    def client(self, client_id: int) -> ClientData:
        """Load one client's samples (training ids and design-pool ids alike)."""

    @abstractmethod
    def num_train_samples(self, client_id: int) -> int:
        """Number of training samples of a client, without loading its tensors."""

    def _check_id(self, client_id: int) -> int:
        """The client id as an int; a one-line DataError when it is not a valid id."""
        try:
            cid = operator.index(client_id)
        except TypeError:
            raise DataError(f"client id must be an integer, got {client_id!r}") from None
        total = self.num_clients + self.design_pool_size
        if not 0 <= cid < total:
            raise DataError(
                f"client id {cid} is out of range; {self.name} has ids 0..{total - 1} "
                f"({self.num_clients} clients + {self.design_pool_size} design-pool users)"
            )
        return cid

    def design_pool_ids(self) -> list[int]:
        """Ids of the design-pool users (disjoint from training clients)."""
        return list(range(self.num_clients, self.num_clients + self.design_pool_size))


class PartitionedDataset(FederatedDataset):
    """A pool of labelled samples split among the users (Dirichlet over labels, or IID).

    The training clients and the design pool are partitioned together; a user's share is
    capped at ``max_samples`` (if the options have it) by a random subset, then split
    into train and test parts by a generator keyed by the user. Subclasses call
    ``_partition(labels)`` in ``_build`` and implement ``_samples(rows)``.
    """

    options: PartitionOptions
    _parts: list[np.ndarray]

    def _partition(self, labels: np.ndarray) -> None:
        users = self.num_clients + self.design_pool_size
        rng = self._rng(DATA_PARTITION)
        if self.options.partition == "dirichlet":
            min_size = 2 if self.test_fraction > 0 else 1
            parts = dirichlet_label_partition(
                labels=labels, num_partitions=users, alpha=self.options.alpha, rng=rng, min_size=min_size
            )
        else:
            parts = iid_partition(num_samples=len(labels), num_partitions=users, rng=rng)
        cap = getattr(self.options, "max_samples", None)
        self._parts = []
        for user, part in enumerate(parts):
            keep = subset_rows(num_samples=len(part), max_samples=cap, rng=self._rng(DATA_SUBSET, user))
            self._parts.append(part if keep is None else part[keep])

    @abstractmethod
    def _samples(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and labels of the pool's ``rows``."""

    def num_train_samples(self, client_id: int) -> int:
        rows = self._parts[self._check_id(client_id)]
        return train_test_sizes(num_samples=len(rows), test_fraction=self.test_fraction)[0]

    def client(self, client_id: int) -> ClientData:
        cid = self._check_id(client_id)
        rows = self._parts[cid]
        x, y = self._samples(rows)
        train, test = train_test_split_indices(
            num_samples=len(rows), test_fraction=self.test_fraction, rng=self._rng(DATA_SPLIT, cid)
        )
        train_t, test_t = torch.from_numpy(train), torch.from_numpy(test)
        return ClientData(x_train=x[train_t], y_train=y[train_t], x_test=x[test_t], y_test=y[test_t])


def _require(value: Any, key: str, *, minimum: int) -> None:
    try:
        number = operator.index(value)
    except TypeError:
        raise DataError(f"{key} must be an integer, got {value!r}") from None
    if number < minimum:
        raise DataError(f"{key} must be at least {minimum}, got {number}")
