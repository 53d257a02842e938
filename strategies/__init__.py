"""What the server does with client updates: sampling, DP aggregation, server optimiser."""

from __future__ import annotations

from fedsim.config import AdaptiveConfig, Scenario
from fedsim.errors import ScenarioError
from fedsim.privacy import DpMechanism
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


def build_aggregator(*, mechanism: DpMechanism, adaptive: AdaptiveConfig) -> Aggregator:
    """The aggregation strategy of the run's DP mechanism."""
    expected_cohort = float(mechanism.expected_cohort)  # q N for Poisson, exact for fixed
    if not mechanism.central:
        return PlainAggregator(uniform=mechanism.uniform_weights)
    if not mechanism.adaptive:
        return FixedClippingAggregator(
            noise_multiplier=mechanism.noise_multiplier,
            clip_norm=mechanism.clip_norm,
            expected_cohort=expected_cohort,
            clip_on_server=mechanism.server_clips,
        )
    # Andrew et al. use m / 20; small cohorts need at least z, or z_u explodes
    count_noise = adaptive.count_noise_multiplier or max(expected_cohort / 20, mechanism.noise_multiplier)
    try:
        return AdaptiveClippingAggregator(
            noise_multiplier=mechanism.noise_multiplier,
            initial_clip_norm=mechanism.clip_norm,
            expected_cohort=expected_cohort,
            target_quantile=adaptive.target_quantile,
            clip_lr=adaptive.clip_lr,
            count_noise_std=count_noise,
        )
    except ValueError as error:
        raise ScenarioError(f"scenario key 'dp.adaptive.count_noise_multiplier': {error}") from None


def build_server_optimizer(*, scenario: Scenario) -> ServerOptimizer:
    """The server optimiser the scenario's ``server`` section asks for."""
    server = scenario.server
    if server.optimizer == "fedadam":
        return FedAdamOptimizer(lr=server.lr, beta1=server.beta1, beta2=server.beta2, tau=server.tau)
    return FedAvgOptimizer(lr=server.lr)
