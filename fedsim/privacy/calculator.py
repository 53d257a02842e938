"""The DP calculator behind ``fedsim privacy epsilon``: epsilon of equal rounds, and the
noise multiplier for a target epsilon (dp-accounting's ``calibrate_dp_mechanism``)."""

from __future__ import annotations

import math
from collections.abc import Callable

import dp_accounting
from dp_accounting import mechanism_calibration

from fedsim.config import Sampling
from fedsim.errors import PrivacyError
from fedsim.privacy.events import (
    AccountantName,
    adjacency_of,
    check_choice,
    check_count,
    check_delta,
    check_noise,
    epsilon_for_event,
    new_accountant,
    round_event,
)

# Range searched by noise_multiplier_for_epsilon. Below 0.1 the PLD grid gets huge.
_MIN_NOISE, _MAX_NOISE = 0.1, 1e4
_NOISE_RTOL = 1e-3


def _rounds_event(
    *, sampling_rate: float, rounds: int, sampling: Sampling, population: int | None
) -> Callable[[float], dp_accounting.DpEvent]:
    """noise multiplier -> the event of ``rounds`` equal rounds (checks the arguments once)."""
    check_count(rounds, "rounds")
    round_event(noise_multiplier=1.0, sampling=sampling, sampling_rate=sampling_rate, population=population)

    def event(noise_multiplier: float) -> dp_accounting.DpEvent:
        one = round_event(
            noise_multiplier=noise_multiplier, sampling=sampling, sampling_rate=sampling_rate, population=population
        )
        return dp_accounting.SelfComposedDpEvent(one, rounds)

    return event


def cumulative_epsilon(
    *,
    noise_multiplier: float,
    sampling_rate: float,
    rounds: int,
    delta: float,
    sampling: Sampling = "poisson",
    population: int | None = None,
    accountant: AccountantName = "pld",
) -> float:
    """Epsilon after ``rounds`` equal rounds of a sampled Gaussian.

    Args:
        noise_multiplier: Noise multiplier of every round; 0 means no privacy.
        sampling_rate: q = cohort / population, in (0, 1].
        rounds: Number of rounds, >= 1.
        delta: Target delta in (0, 1).
        sampling: "poisson" or "fixed" (then population is required, the cohort is
            round(q * population), and only "rdp" works).
        population: Number of clients; required for "fixed".
        accountant: "pld" or "rdp".

    Returns:
        Cumulative epsilon at delta.
    """
    check_noise(noise_multiplier)
    check_delta(delta)
    check_choice(accountant, "accountant", AccountantName)
    event = _rounds_event(sampling_rate=sampling_rate, rounds=rounds, sampling=sampling, population=population)
    return epsilon_for_event(event=event(noise_multiplier), delta=delta, accountant=accountant)


def noise_multiplier_for_epsilon(
    *,
    target_epsilon: float,
    sampling_rate: float,
    rounds: int,
    delta: float,
    sampling: Sampling = "poisson",
    population: int | None = None,
    accountant: AccountantName = "pld",
) -> float:
    """Smallest noise multiplier (within a relative 1e-3, erring on the side of more noise)
    whose cumulative epsilon is at most the target; searched over 0.1 to 1e4.

    Raises:
        PrivacyError: If no noise multiplier in the searched range reaches the target, or
            every one does.
    """
    if not 0 < target_epsilon < math.inf:
        raise PrivacyError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")
    check_delta(delta)
    event = _rounds_event(sampling_rate=sampling_rate, rounds=rounds, sampling=sampling, population=population)
    adjacency = adjacency_of(sampling)

    def eps(noise: float) -> float:
        return epsilon_for_event(event=event(noise), delta=delta, accountant=accountant)

    # Bracket eps(lo) > target >= eps(hi) by factors of 4 from 1, then let dp-accounting search.
    lo = hi = 1.0
    if eps(1.0) > target_epsilon:
        while eps(hi) > target_epsilon:
            if hi >= _MAX_NOISE:
                raise PrivacyError(
                    f"target_epsilon {target_epsilon!r} is unreachable: even noise_multiplier "
                    f"{_MAX_NOISE:g} gives more; raise the target"
                )
            lo, hi = hi, min(4 * hi, _MAX_NOISE)
    else:
        while eps(lo) <= target_epsilon:
            if lo <= _MIN_NOISE:
                raise PrivacyError(
                    f"target_epsilon {target_epsilon!r} is met by any noise_multiplier >= {_MIN_NOISE:g} "
                    "(the smallest searched); set the noise directly"
                )
            lo, hi = max(lo / 4, _MIN_NOISE), lo
    return float(
        mechanism_calibration.calibrate_dp_mechanism(
            lambda: new_accountant(accountant, adjacency=adjacency),
            event,
            target_epsilon,
            delta,
            mechanism_calibration.ExplicitBracketInterval(lo, hi),
            tol=_NOISE_RTOL * lo,
        )
    )
