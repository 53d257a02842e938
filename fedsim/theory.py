"""The theoretical epsilon of each round and of the run so far, from the accountant.

Turns the scenario's DP mode and sampler into accounting events (fedsim.privacy) and
keeps them composed round by round, at the scenario's one delta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import dp_accounting

from fedsim.config import Scenario
from fedsim.privacy import (
    RoundAccountant,
    dpsgd_round_event,
    epsilon_for_event,
    gaussian_epsilon,
    gaussian_noise_for_epsilon,
)


@dataclass(frozen=True)
class TheoryEpsilon:
    """Theoretical epsilons after one round."""

    round: float  # this round alone: one Gaussian mechanism, no subsampling
    cumulative: float  # all rounds so far, with the sampling the run really did (headline)
    cumulative_rdp: float  # the same with the RDP accountant, for comparability


class TheoryTracker:
    """Composes each round's DP event and reports epsilons at the scenario's delta.

    Central DP (user level): Gaussian with the aggregator's noise multiplier, sampled
    as the run samples (Poisson: PLD headline; fixed cohort: RDP under replace-one,
    the only accountant that covers it). Local DP-SGD (sample level): each round is
    the DP-SGD of one local training on the smallest client (the worst case), composed
    over all rounds without client-sampling amplification (an upper bound).
    """

    def __init__(self, *, scenario: Scenario, min_client_samples: int | None = None) -> None:
        self.delta = scenario.dp.delta
        self.mode = scenario.dp.mode
        sampling = "poisson" if scenario.sampling == "poisson" else "without_replacement"
        self.headline = "pld" if sampling == "poisson" else "rdp"
        self.accountant = RoundAccountant(
            delta=self.delta,
            sampling=sampling,
            population=scenario.data.num_clients,
            cohort=scenario.clients_per_round,
        )
        self._local_event = None
        if self.mode == "local_dpsgd":
            # Opacus' Poisson batches: rate 1 / len(loader) = 1 / ceil(n / B), that many steps per epoch
            n = max(1, min_client_samples or 1)
            steps_per_epoch = math.ceil(n / scenario.client.batch_size)
            self._local_event = dpsgd_round_event(
                noise_multiplier=scenario.dp.noise_multiplier,
                sample_rate=1 / steps_per_epoch,
                steps=scenario.client.epochs * steps_per_epoch,
            )
        self.rounds = 0

    def step(self, *, noise_multiplier: float) -> TheoryEpsilon:
        """Account one more round released with ``noise_multiplier``."""
        self.rounds += 1
        if self.mode == "none":
            return TheoryEpsilon(math.inf, math.inf, math.inf)
        if self._local_event is not None:
            one = self._local_event
            total = dp_accounting.SelfComposedDpEvent(one, self.rounds)
            return TheoryEpsilon(
                round=epsilon_for_event(event=one, delta=self.delta, accountant="pld"),
                cumulative=epsilon_for_event(event=total, delta=self.delta, accountant="pld"),
                cumulative_rdp=epsilon_for_event(event=total, delta=self.delta, accountant="rdp"),
            )
        self.accountant.step(noise_multiplier=noise_multiplier)
        return TheoryEpsilon(
            round=gaussian_epsilon(noise_multiplier=noise_multiplier, delta=self.delta),
            cumulative=self.accountant.epsilon(accountant=self.headline),
            cumulative_rdp=self.accountant.epsilon(accountant="rdp"),
        )


class EmpiricalTracker:
    """Cumulative *empirical* epsilon: each per-round estimate becomes the noise
    multiplier of a Gaussian mechanism with that epsilon at delta, and those are composed
    over rounds with the run's sampling, exactly as the theoretical line is. Rounds
    without an audit reuse the latest estimate. Where an estimate is so large that its
    noise multiplier falls below PLD's working range, RDP composes instead (an upper
    bound); beyond 1,000 per round the audit found no privacy and the result is inf."""

    PLD_MIN_NOISE = 0.25
    NO_PRIVACY_EPSILON = 1000.0

    def __init__(self, *, scenario: Scenario) -> None:
        self.delta = scenario.dp.delta
        sampling = "poisson" if scenario.sampling == "poisson" else "without_replacement"
        self.headline = "pld" if sampling == "poisson" else "rdp"
        self.accountant = RoundAccountant(
            delta=self.delta, sampling=sampling, population=scenario.data.num_clients, cohort=scenario.clients_per_round
        )
        self.noise_multiplier: float | None = None
        self.smallest = math.inf

    def step(self, *, round_epsilon: float | None) -> float | None:
        """Account one round; ``round_epsilon`` is its estimate, None if not audited."""
        if round_epsilon is not None:
            if round_epsilon > self.NO_PRIVACY_EPSILON:
                round_epsilon = math.inf
            self.noise_multiplier = gaussian_noise_for_epsilon(epsilon=round_epsilon, delta=self.delta)
            self.smallest = min(self.smallest, self.noise_multiplier)
        if self.noise_multiplier is None:
            return None
        self.accountant.step(noise_multiplier=self.noise_multiplier)
        accountant = self.headline if self.smallest >= self.PLD_MIN_NOISE else "rdp"
        return self.accountant.epsilon(accountant=accountant)
