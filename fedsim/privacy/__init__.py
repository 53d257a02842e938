"""Privacy: accounting of theoretical epsilon (the canary audit lives elsewhere)."""

from fedsim.privacy.accounting import (
    AccountantName,
    RoundAccountant,
    Sampling,
    cumulative_epsilon,
    dpsgd_round_event,
    epsilon_for_event,
    gaussian_epsilon,
    gaussian_noise_for_epsilon,
    noise_multiplier_for_epsilon,
    round_event,
)

__all__ = [
    "AccountantName",
    "RoundAccountant",
    "Sampling",
    "cumulative_epsilon",
    "dpsgd_round_event",
    "epsilon_for_event",
    "gaussian_epsilon",
    "gaussian_noise_for_epsilon",
    "noise_multiplier_for_epsilon",
    "round_event",
]
