"""Federated data sets and the registry that builds them by name."""

from __future__ import annotations

import inspect
from typing import Any

from fedsim.data.base import ClientData, FederatedDataset
from fedsim.data.celeba import CelebaDataset
from fedsim.data.cifar10 import Cifar10Dataset
from fedsim.data.digits import DigitsDataset
from fedsim.data.sent140 import Sent140Dataset
from fedsim.data.shakespeare import ShakespeareDataset
from fedsim.data.synthetic import SyntheticDataset
from fedsim.errors import DataError

__all__ = [
    "DATASETS",
    "CelebaDataset",
    "Cifar10Dataset",
    "ClientData",
    "DigitsDataset",
    "FederatedDataset",
    "Sent140Dataset",
    "ShakespeareDataset",
    "SyntheticDataset",
    "make_dataset",
]

#: data-set name -> class; a class takes keyword-only ``num_clients``,
#: ``design_pool_size``, ``test_fraction``, ``seed`` (and ``root`` if it reads files)
DATASETS: dict[str, type[FederatedDataset]] = {
    "synthetic": SyntheticDataset,
    "digits": DigitsDataset,
    "sent140": Sent140Dataset,
    "shakespeare": ShakespeareDataset,
    "celeba": CelebaDataset,
    "cifar10": Cifar10Dataset,
}

# arguments that make_dataset sets itself, never through ``options``
_COMMON = ("num_clients", "design_pool_size", "test_fraction", "seed", "root")


def make_dataset(
    *,
    name: str,
    num_clients: int,
    design_pool: int,
    test_fraction: float,
    seed: int,
    root: str | None = None,
    options: dict[str, Any] | None = None,
) -> FederatedDataset:
    """Build a registered federated data set.

    Args:
        name: Registered name (a key of ``DATASETS``).
        num_clients: Number of training clients.
        design_pool: Number of design-pool users reserved for the adversary.
        test_fraction: Fraction of each user's samples held out for evaluation.
        seed: Seed of the data generation and partitioning.
        root: Folder with downloaded files, for data sets that read files.
        options: Data-set specific keyword arguments of its constructor.

    Returns:
        The data set.

    Raises:
        DataError: If the name or an option is unknown, or the data set rejects a value.
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    cls = DATASETS[name]
    params = inspect.signature(cls.__init__).parameters
    allowed = sorted(p for p in params if p != "self" and p not in _COMMON)
    options = dict(options or {})
    for key in options:
        if key in _COMMON:
            raise DataError(f"data option {key!r} is set by the scenario itself, not in {name}'s options")
        if key not in allowed:
            raise DataError(f"unknown option {key!r} for data set {name!r}; allowed: {', '.join(allowed) or '(none)'}")
    kwargs: dict[str, Any] = dict(
        num_clients=num_clients,
        design_pool_size=design_pool,
        test_fraction=test_fraction,
        seed=seed,
    )
    if "root" in params:
        kwargs["root"] = root
    try:
        return cls(**kwargs, **options)
    except TypeError as err:  # e.g. a string where a number belongs
        raise DataError(f"data set {name!r}: an option has the wrong type ({err})") from None
