"""Federated data sets and the registry that builds them by name.

The loaders need torch; they are imported on first use (``from fedsim.data import
Sent140Dataset`` works as usual), so checking a scenario's data options
(``fedsim.data.options``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fedsim.data.options import DATA_OPTIONS, options_model, parse_options
from fedsim.errors import DataError

if TYPE_CHECKING:
    from fedsim.data.base import ClientData, FederatedDataset
    from fedsim.data.celeba import CelebaDataset
    from fedsim.data.cifar10 import Cifar10Dataset
    from fedsim.data.digits import DigitsDataset
    from fedsim.data.sent140 import Sent140Dataset
    from fedsim.data.shakespeare import ShakespeareDataset
    from fedsim.data.synthetic import SyntheticDataset

__all__ = [
    "DATA_OPTIONS",
    "CelebaDataset",
    "Cifar10Dataset",
    "ClientData",
    "DigitsDataset",
    "FederatedDataset",
    "Sent140Dataset",
    "ShakespeareDataset",
    "SyntheticDataset",
    "dataset_class",
    "make_dataset",
]

#: data-set name -> (module, class) of its loader
_LOADERS = {
    "synthetic": ("fedsim.data.synthetic", "SyntheticDataset"),
    "digits": ("fedsim.data.digits", "DigitsDataset"),
    "sent140": ("fedsim.data.sent140", "Sent140Dataset"),
    "shakespeare": ("fedsim.data.shakespeare", "ShakespeareDataset"),
    "celeba": ("fedsim.data.celeba", "CelebaDataset"),
    "cifar10": ("fedsim.data.cifar10", "Cifar10Dataset"),
}
_LAZY = {cls: module for module, cls in _LOADERS.values()} | {
    "ClientData": "fedsim.data.base",
    "FederatedDataset": "fedsim.data.base",
}


def __getattr__(attr: str) -> Any:
    if attr in _LAZY:
        return getattr(importlib.import_module(_LAZY[attr]), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def dataset_class(name: str) -> type[FederatedDataset]:
    """The loader class of a registered data set (a key of ``DATA_OPTIONS``)."""
    try:
        options_model(name)
    except ValueError as error:
        raise DataError(str(error)) from None
    module, cls = _LOADERS[name]
    return getattr(importlib.import_module(module), cls)


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
        name: Registered name (a key of ``DATA_OPTIONS``).
        num_clients: Number of training clients.
        design_pool: Number of design-pool users reserved for the adversary.
        test_fraction: Fraction of each user's samples held out for evaluation.
        seed: Seed of the data generation and partitioning.
        root: Folder with downloaded files, for data sets that read files.
        options: The data set's ``data.options`` (see ``fedsim.data.options``).

    Returns:
        The data set.

    Raises:
        DataError: If the name or an option is unknown, or the data set rejects a value.
    """
    cls = dataset_class(name)
    parse_options(name, options or {})  # names a scenario-level key before it could clash with one
    return cls(
        num_clients=num_clients,
        design_pool_size=design_pool,
        test_fraction=test_fraction,
        seed=seed,
        root=root,
        **(options or {}),
    )
