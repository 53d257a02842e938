"""The FedProx / LEAF ``synthetic(alpha, beta)`` data set, generated lazily per user.

Li et al. 2020 (FedProx, section 5.1) and LEAF's synthetic data: user k draws
``u_k ~ N(0, alpha^2)``, ``W_k ~ N(u_k, 1)`` (classes x dim), ``b_k ~ N(u_k, 1)``,
``B_k ~ N(0, beta^2)``, ``v_k ~ N(B_k, 1)`` (dim), then samples ``x ~ N(v_k, Sigma)``
with ``Sigma = diag(j^-1.2)`` and labels ``y = argmax(W_k x + b_k)``. ``alpha`` controls
how much the users' models differ, ``beta`` how much their inputs differ.

Every user is generated from its own generators (``fedsim.seeding``'s ``DATA_SIZES`` and
``DATA_SYNTHETIC`` streams, keyed by the client id), so a user's tensors do not depend on
which users were loaded before, and a population of 100,000 users costs nothing until a
user is asked for.
"""

from __future__ import annotations

import numpy as np
import torch

from fedsim.data.base import ClientData, FederatedDataset
from fedsim.data.options import SyntheticOptions
from fedsim.data.partition import train_test_sizes, train_test_split_indices
from fedsim.seeding import DATA_SIZES, DATA_SYNTHETIC


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
        test_fraction: Fraction of each user's samples held out, in [0, 1).
        seed: Seed of the whole population, >= 0.
        root: Unused (nothing is read).
        **options: ``data.options``: see ``SyntheticOptions`` (``alpha``, ``beta``,
            ``iid``, ``dim``, ``num_classes``, the sample-count parameters).

    Raises:
        DataError: If an argument or option is out of range.
    """

    name = "synthetic"
    input_kind = "float"
    options: SyntheticOptions

    def _build(self) -> None:
        self.num_classes = self.options.num_classes
        self.input_shape = (self.options.dim,)
        self._x_std = np.arange(1, self.options.dim + 1, dtype=np.float64) ** -0.6  # sqrt(j^-1.2)
        if self.options.iid:
            shared = self._rng(DATA_SYNTHETIC)
            self._shared_w = shared.normal(0.0, 1.0, (self.num_classes, self.options.dim))
            self._shared_b = shared.normal(0.0, 1.0, self.num_classes)

    def num_samples(self, client_id: int) -> int:
        """Total number of samples (train + test) of a user, without generating them."""
        opts = self.options
        rng = self._rng(DATA_SIZES, self._check_id(client_id))
        extra = int(rng.lognormal(opts.mean_log_samples, opts.sigma_log_samples))
        return min(opts.max_samples, opts.min_samples + extra)

    def num_train_samples(self, client_id: int) -> int:
        n = self.num_samples(client_id)
        return train_test_sizes(num_samples=n, test_fraction=self.test_fraction)[0]

    def client(self, client_id: int) -> ClientData:
        n = self.num_samples(client_id)
        opts = self.options
        rng = self._rng(DATA_SYNTHETIC, self._check_id(client_id))
        if opts.iid:
            w, b = self._shared_w, self._shared_b
            x_mean = np.zeros(opts.dim)
        else:
            u = rng.normal(0.0, opts.alpha)
            w = rng.normal(u, 1.0, (self.num_classes, opts.dim))
            b = rng.normal(u, 1.0, self.num_classes)
            x_mean = rng.normal(rng.normal(0.0, opts.beta), 1.0, opts.dim)
        x = x_mean + rng.standard_normal((n, opts.dim)) * self._x_std
        y = np.argmax(x @ w.T + b, axis=1)  # softmax is monotone: argmax of the logits
        train, test = train_test_split_indices(num_samples=n, test_fraction=self.test_fraction, rng=rng)
        xt = torch.from_numpy(x.astype(np.float32))
        yt = torch.from_numpy(y.astype(np.int64))
        train_t, test_t = torch.from_numpy(train), torch.from_numpy(test)
        return ClientData(x_train=xt[train_t], y_train=yt[train_t], x_test=xt[test_t], y_test=yt[test_t])
