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

import torch

from fedsim.errors import DataError


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
    """Client id -> that client's samples, plus a disjoint design pool."""

    #: short name, as in the scenario's ``data.name``
    name: str
    #: number of output classes of the task
    num_classes: int
    #: shape of one input sample (without the batch dimension)
    input_shape: tuple[int, ...]
    #: dtype of inputs: "float" for features/images, "long" for token ids
    input_kind: str = "float"

    #: set by each subclass's constructor
    _num_clients: int
    _design_pool_size: int

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
