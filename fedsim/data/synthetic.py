"""The FedProx / LEAF ``synthetic(alpha, beta)`` data set, generated lazily per user.

Li et al. 2020 (FedProx, section 5.1) and LEAF's synthetic data: user k draws
``u_k ~ N(0, alpha^2)``, ``W_k ~ N(u_k, 1)`` (classes x dim), ``b_k ~ N(u_k, 1)``,
``B_k ~ N(0, beta^2)``, ``v_k ~ N(B_k, 1)`` (dim), then samples ``x ~ N(v_k, Sigma)``
with ``Sigma = diag(j^-1.2)`` and labels ``y = argmax(W_k x + b_k)``. ``alpha`` controls
how much the users' models differ, ``beta`` how much their inputs differ.

Every user is generated from generators seeded by ``(seed, stream, client_id)``, so a
user's tensors do not depend on which users were loaded before, and a population of
100,000 users costs nothing until a user is asked for.
"""

from __future__ import annotations

import numpy as np
import torch

from fedsim.data.base import ClientData, FederatedDataset
from fedsim.data.partition import train_test_sizes, train_test_split_indices
from fedsim.errors import DataError

# Independent random streams; seed keys always have the same length ([seed, stream,
# id]) because SeedSequence treats [a, b] and [a, b, 0] as the same entropy.
_SIZE_STREAM = 0
_USER_STREAM = 1
_SHARED_STREAM = 2


class SyntheticDataset(FederatedDataset):
    """FedProx's synthetic(alpha, beta) data, or synthetic_iid with ``iid=True``.

    With ``iid=True`` all users share one model ``W, b ~ N(0, 1)`` and draw
    ``x ~ N(0, Sigma)`` (FedProx's generator with ``iid=1, alpha=beta=0``, the published
    synthetic_iid); ``alpha`` and ``beta`` are then unused.

    A user's number of samples is ``min(max_samples, min_samples + floor(s))`` with
    ``s ~ LogNormal(mean_log_samples, sigma_log_samples)`` (FedProx: ``LogNormal(4, 2) +
    50``), drawn from its own stream so it is known without generating the samples.

    Args:
        num_clients: Number of training users (ids ``0 .. num_clients - 1``).
        design_pool_size: Number of design-pool users (the ids after the training ones).
        alpha: Spread of the users' model means (standard deviation of ``u_k``), >= 0.
        beta: Spread of the users' input means (standard deviation of ``B_k``), >= 0.
        iid: Generate synthetic_iid instead.
        dim: Input dimension.
        num_classes: Number of classes.
        mean_log_samples: Mean of the log of the lognormal sample-count part.
        sigma_log_samples: Standard deviation of that log, >= 0 (0: equal sizes).
        min_samples: Samples every user has at least, >= 1.
        max_samples: Cap on a user's samples, >= min_samples.
        test_fraction: Fraction of each user's samples held out, in [0, 1).
        seed: Seed of the whole population, >= 0.

    Raises:
        DataError: If an argument is out of range.
    """

    name = "synthetic"
    input_kind = "float"

    def __init__(
        self,
        *,
        num_clients: int,
        design_pool_size: int,
        alpha: float = 1.0,
        beta: float = 1.0,
        iid: bool = False,
        dim: int = 60,
        num_classes: int = 10,
        mean_log_samples: float = 4.0,
        sigma_log_samples: float = 1.0,
        min_samples: int = 10,
        max_samples: int = 1000,
        test_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        _require(num_clients >= 1, "num_clients", num_clients, "at least 1")
        _require(design_pool_size >= 0, "design_pool_size", design_pool_size, ">= 0")
        _require(alpha >= 0, "alpha", alpha, ">= 0")
        _require(beta >= 0, "beta", beta, ">= 0")
        _require(dim >= 1, "dim", dim, "at least 1")
        _require(num_classes >= 2, "num_classes", num_classes, "at least 2")
        _require(sigma_log_samples >= 0, "sigma_log_samples", sigma_log_samples, ">= 0")
        _require(min_samples >= 1, "min_samples", min_samples, "at least 1")
        _require(max_samples >= min_samples, "max_samples", max_samples, f">= min_samples ({min_samples})")
        _require(0 <= test_fraction < 1, "test_fraction", test_fraction, "in [0, 1)")
        _require(seed >= 0, "seed", seed, ">= 0")

        self._num_clients = int(num_clients)
        self._design_pool_size = int(design_pool_size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.iid = bool(iid)
        self.dim = int(dim)
        self.num_classes = int(num_classes)
        self.input_shape = (self.dim,)
        self.mean_log_samples = float(mean_log_samples)
        self.sigma_log_samples = float(sigma_log_samples)
        self.min_samples = int(min_samples)
        self.max_samples = int(max_samples)
        self.test_fraction = float(test_fraction)
        self.seed = int(seed)
        self._x_std = np.arange(1, self.dim + 1, dtype=np.float64) ** -0.6  # sqrt(j^-1.2)
        if self.iid:
            shared = np.random.default_rng([self.seed, _SHARED_STREAM, 0])
            self._shared_w = shared.normal(0.0, 1.0, (self.num_classes, self.dim))
            self._shared_b = shared.normal(0.0, 1.0, self.num_classes)

    def num_samples(self, client_id: int) -> int:
        """Total number of samples (train + test) of a user, without generating them."""
        client_id = self._check_id(client_id)
        rng = np.random.default_rng([self.seed, _SIZE_STREAM, client_id])
        extra = int(rng.lognormal(self.mean_log_samples, self.sigma_log_samples))
        return min(self.max_samples, self.min_samples + extra)

    def num_train_samples(self, client_id: int) -> int:
        n = self.num_samples(client_id)
        return train_test_sizes(num_samples=n, test_fraction=self.test_fraction)[0]

    def client(self, client_id: int) -> ClientData:
        n = self.num_samples(client_id)
        rng = np.random.default_rng([self.seed, _USER_STREAM, int(client_id)])
        if self.iid:
            w, b = self._shared_w, self._shared_b
            x_mean = np.zeros(self.dim)
        else:
            u = rng.normal(0.0, self.alpha)
            w = rng.normal(u, 1.0, (self.num_classes, self.dim))
            b = rng.normal(u, 1.0, self.num_classes)
            x_mean = rng.normal(rng.normal(0.0, self.beta), 1.0, self.dim)
        x = x_mean + rng.standard_normal((n, self.dim)) * self._x_std
        y = np.argmax(x @ w.T + b, axis=1)  # softmax is monotone: argmax of the logits
        train, test = train_test_split_indices(num_samples=n, test_fraction=self.test_fraction, rng=rng)
        xt = torch.from_numpy(x.astype(np.float32))
        yt = torch.from_numpy(y.astype(np.int64))
        train_t, test_t = torch.from_numpy(train), torch.from_numpy(test)
        return ClientData(x_train=xt[train_t], y_train=yt[train_t], x_test=xt[test_t], y_test=yt[test_t])


def _require(ok: bool, option: str, value: object, allowed: str) -> None:
    if not ok:
        raise DataError(f"synthetic data option {option}={value!r} is invalid; must be {allowed}")
