"""Build what a scenario describes: its data set, its model, its client settings.

Used on both sides of the simulation (server thread and Ray workers); the data set is
built once per process and cached.
"""

from __future__ import annotations

import functools

from torch import nn

from fedsim.clients.training import TrainSettings
from fedsim.config import Scenario
from fedsim.data import FederatedDataset, make_dataset
from fedsim.models import build_model
from fedsim.privacy import DpMechanism


@functools.lru_cache(maxsize=4)
def _dataset(data_json: str, seed: int) -> FederatedDataset:
    from fedsim.config import DataConfig

    data = DataConfig.model_validate_json(data_json)
    return make_dataset(
        name=data.name,
        num_clients=data.num_clients,
        design_pool=data.design_pool,
        test_fraction=data.test_fraction,
        seed=seed,
        root=data.root,
        options=dict(data.options),
    )


def dataset_for(scenario: Scenario) -> FederatedDataset:
    """The scenario's federated data set (cached per process)."""
    return _dataset(scenario.data.model_dump_json(), scenario.seed)


def model_for(scenario: Scenario, dataset: FederatedDataset) -> nn.Module:
    """A fresh model of the scenario, initialised from the scenario's seed."""
    return build_model(
        name=scenario.model.name,
        input_shape=dataset.input_shape,
        num_classes=dataset.num_classes,
        hidden=scenario.model.hidden,
        seed=scenario.seed,
        vocab_size=getattr(dataset, "vocab_size", None),
        dp_compatible=DpMechanism.from_scenario(scenario).local,  # DPLSTM instead of nn.LSTM for Opacus
    )


def train_settings(scenario: Scenario) -> TrainSettings:
    """How clients train locally (with DP-SGD settings in local_dpsgd mode)."""
    local_dp = DpMechanism.from_scenario(scenario).local
    return TrainSettings(
        epochs=scenario.client.epochs,
        batch_size=scenario.client.batch_size,
        optimizer=scenario.client.optimizer,
        lr=scenario.client.lr,
        momentum=scenario.client.momentum,
        dpsgd_clip_norm=scenario.dp.clip_norm if local_dp else None,
        dpsgd_noise_multiplier=scenario.dp.noise_multiplier if local_dp else None,
    )
