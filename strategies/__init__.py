"""What the server does with client updates: sampling, DP aggregation, server optimiser."""

from __future__ import annotations

from fedsim.config import Scenario
from fedsim.errors import ScenarioError
from fedsim.strategies.dp import (
    AdaptiveClippingAggregator,
    Aggregator,
    FixedClippingAggregator,
    PlainAggregator,
    RoundAggregate,
)
from fedsim.strategies.sampling import sample_cohort
from fedsim.strategies.server_opt import FedAdamOptimizer, FedAvgOptimizer, ServerOptimizer

__all__ = [
    "AdaptiveClippingAggregator",
    "Aggregator",
    "FixedClippingAggregator",
    "PlainAggregator",
    "RoundAggregate",
    "ServerOptimizer",
    "build_aggregator",
    "build_server_optimizer",
    "sample_cohort",
]


def build_aggregator(*, scenario: Scenario) -> Aggregator:
    """The aggregation strategy the scenario's ``dp.mode`` asks for."""
    dp = scenario.dp
    expected_cohort = float(scenario.clients_per_round)  # q N for Poisson, exact for fixed
    if dp.mode in ("none", "local_dpsgd"):
        return PlainAggregator()
    if dp.mode in ("server_fixed", "client_fixed"):
        return FixedClippingAggregator(
            noise_multiplier=dp.noise_multiplier,
            clip_norm=dp.clip_norm,
            expected_cohort=expected_cohort,
            clip_on_server=dp.mode == "server_fixed",
        )
    if dp.mode == "server_adaptive":
        # Andrew et al. use m / 20; small cohorts need at least z, or z_u explodes
        count_noise = dp.adaptive.count_noise_multiplier or max(expected_cohort / 20, dp.noise_multiplier)
        try:
            return AdaptiveClippingAggregator(
                noise_multiplier=dp.noise_multiplier,
                initial_clip_norm=dp.clip_norm,
                expected_cohort=expected_cohort,
                target_quantile=dp.adaptive.target_quantile,
                clip_lr=dp.adaptive.clip_lr,
                count_noise_std=count_noise,
            )
        except ValueError as error:
            raise ScenarioError(f"scenario key 'dp.adaptive.count_noise_multiplier': {error}") from None
    raise ValueError(f"unknown dp.mode {dp.mode!r}")


def build_server_optimizer(*, scenario: Scenario) -> ServerOptimizer:
    """The server optimiser the scenario's ``server`` section asks for."""
    server = scenario.server
    if server.optimizer == "fedadam":
        return FedAdamOptimizer(lr=server.lr, beta1=server.beta1, beta2=server.beta2, tau=server.tau)
    return FedAvgOptimizer(lr=server.lr)
