"""Privacy accounting: DP events in, epsilon at delta out.

Describes what happened as dp-accounting ``DpEvent`` objects (a Gaussian with noise
multiplier sigma, sampled with rate q = cohort / population, composed over rounds) and
lets Google's PLD or RDP accountant turn them into epsilon at one delta. Independent of
any training code.

Sampling and adjacency: Poisson sampling is accounted under add-or-remove-one adjacency
(PLD and RDP). A fixed-size cohort sampled without replacement is only supported by the
RDP accountant under replace-one adjacency; asking PLD for it raises ``PrivacyError``.
"""

import copy
import functools
import math
import numbers
from typing import Literal, get_args

import dp_accounting
from dp_accounting import pld, rdp
from scipy import optimize, stats

from fedsim.errors import PrivacyError

Sampling = Literal["poisson", "without_replacement"]
AccountantName = Literal["pld", "rdp"]

# PLD grid step on the privacy-loss axis. 1e-3 is ~10x faster than dp-accounting's
# default 1e-4 and changes epsilon by < 0.1% in our reference settings (the
# discretisation is pessimistic, so the result stays an upper bound).
PLD_DISCRETIZATION = 1e-3

# Range searched by noise_multiplier_for_epsilon. Below 0.1 the PLD grid gets huge.
_MIN_NOISE, _MAX_NOISE = 0.1, 1e4
_NOISE_RTOL = 1e-3


# --- validation -------------------------------------------------------------------


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise PrivacyError(f"delta must be in (0, 1), got {delta!r}")


def _check_noise(noise_multiplier: float, name: str = "noise_multiplier") -> None:
    if not noise_multiplier >= 0:  # also rejects NaN
        raise PrivacyError(f"{name} must be >= 0, got {noise_multiplier!r}")


def _check_rate(rate: float, name: str) -> None:
    if not 0 < rate <= 1:
        raise PrivacyError(f"{name} must be in (0, 1], got {rate!r}")


def _check_count(count: int, name: str) -> None:
    if not isinstance(count, numbers.Integral) or isinstance(count, bool) or count < 1:
        raise PrivacyError(f"{name} must be an integer >= 1, got {count!r}")


def _check_choice(value: str, name: str, allowed: object) -> None:
    choices = get_args(allowed)
    if value not in choices:
        raise PrivacyError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_cohort(population: int, cohort: int) -> None:
    _check_count(population, "population")
    _check_count(cohort, "cohort")
    if cohort > population:
        raise PrivacyError(f"cohort must be <= population ({population}), got {cohort!r}")


# --- events -----------------------------------------------------------------------


def _gaussian(noise_multiplier: float) -> dp_accounting.DpEvent:
    if noise_multiplier == 0:
        return dp_accounting.NonPrivateDpEvent()
    if math.isinf(noise_multiplier):
        return dp_accounting.NoOpDpEvent()
    return dp_accounting.GaussianDpEvent(noise_multiplier)


def round_event(*, noise_multiplier: float, sampling: Sampling, population: int, cohort: int) -> dp_accounting.DpEvent:
    """One DP-FedAvg round: a sampled Gaussian with sensitivity 1.

    Args:
        noise_multiplier: Noise std divided by the clipping norm; 0 means no privacy.
        sampling: "poisson" (rate cohort/population) or "without_replacement"
            (a fixed cohort of ``cohort`` out of ``population``).
        population: Number of clients.
        cohort: Clients per round (expected number for Poisson sampling).

    Returns:
        The round's DpEvent (NonPrivateDpEvent when noise_multiplier is 0).
    """
    _check_noise(noise_multiplier)
    _check_choice(sampling, "sampling", Sampling)
    _check_cohort(population, cohort)
    gaussian = _gaussian(noise_multiplier)
    if not isinstance(gaussian, dp_accounting.GaussianDpEvent):
        return gaussian
    if sampling == "poisson":
        return dp_accounting.PoissonSampledDpEvent(cohort / population, gaussian)
    # Replace-one adjacency: swapping one clipped update for another moves the sum by up
    # to 2C, so the mechanism's noise multiplier relative to its sensitivity is z / 2.
    # dp-accounting's RDP formula for this event is normalised by the L2 sensitivity
    # (google/differential-privacy issue #378), so it must receive z / 2; passing z
    # underestimates the RDP by a factor of four (3.58 instead of 20.99 for z = 1,
    # 10 of 1,000, 1,000 rounds, delta 1e-5).
    return dp_accounting.SampledWithoutReplacementDpEvent(
        population, cohort, dp_accounting.GaussianDpEvent(noise_multiplier / 2)
    )


def dpsgd_round_event(*, noise_multiplier: float, sample_rate: float, steps: int) -> dp_accounting.DpEvent:
    """Local DP-SGD inside one client's training (sample-level), as one event.

    Args:
        noise_multiplier: DP-SGD noise multiplier; 0 means no privacy.
        sample_rate: Poisson sampling rate of examples per step (batch / dataset size).
        steps: Number of optimiser steps.

    Returns:
        SelfComposed(PoissonSampled(sample_rate, Gaussian(noise_multiplier)), steps).
    """
    _check_noise(noise_multiplier)
    _check_rate(sample_rate, "sample_rate")
    _check_count(steps, "steps")
    gaussian = _gaussian(noise_multiplier)
    if not isinstance(gaussian, dp_accounting.GaussianDpEvent):
        return gaussian
    return dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(sample_rate, gaussian), steps)


def _has_without_replacement(event: dp_accounting.DpEvent) -> bool:
    if isinstance(event, dp_accounting.SampledWithoutReplacementDpEvent):
        return True
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        return _has_without_replacement(event.event)
    if isinstance(event, dp_accounting.ComposedDpEvent):
        return any(_has_without_replacement(e) for e in event.events)
    return False


def _new_accountant(accountant: AccountantName, without_replacement: bool) -> dp_accounting.PrivacyAccountant:
    _check_choice(accountant, "accountant", AccountantName)
    if accountant == "pld":
        if without_replacement:
            raise PrivacyError(
                "the pld accountant does not support sampling without replacement; "
                "use accountant=rdp or sampling=poisson"
            )
        return pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    relation = (
        dp_accounting.NeighboringRelation.REPLACE_ONE
        if without_replacement
        else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    )
    return rdp.RdpAccountant(neighboring_relation=relation)


def _compose(acc: dp_accounting.PrivacyAccountant, event: dp_accounting.DpEvent, count: int = 1) -> None:
    try:
        acc.compose(event, count)
    except dp_accounting.UnsupportedEventError as exc:
        message = " ".join(str(exc).split())
        raise PrivacyError(f"event not supported by the accountant: {message}") from exc


def epsilon_for_event(*, event: dp_accounting.DpEvent, delta: float, accountant: AccountantName) -> float:
    """Epsilon at delta of a DpEvent.

    Args:
        event: What happened (possibly composed).
        delta: Target delta in (0, 1).
        accountant: "pld" (tight) or "rdp". Events with sampling without replacement
            are accounted by RDP under replace-one adjacency; PLD rejects them.

    Returns:
        Epsilon; math.inf if the event contains a non-private part.

    Raises:
        PrivacyError: On bad inputs or an event the accountant does not support.
    """
    _check_delta(delta)
    acc = _new_accountant(accountant, _has_without_replacement(event))
    _compose(acc, event)
    return float(acc.get_epsilon(delta))


# --- the single Gaussian mechanism (per-round epsilon, what the audit compares) ------


def _log_delta(sigma: float, epsilon: float) -> float:
    """log delta(epsilon) of the Gaussian mechanism, sensitivity 1 (Balle & Wang 2018).

    delta = Phi(1/(2s) - eps*s) - e^eps * Phi(-1/(2s) - eps*s), in log space.
    """
    a = stats.norm.logcdf(0.5 / sigma - epsilon * sigma)
    b = epsilon + stats.norm.logcdf(-0.5 / sigma - epsilon * sigma)
    return a + math.log1p(-math.exp(b - a)) if b < a else -math.inf


def gaussian_epsilon(*, noise_multiplier: float, delta: float, accountant: AccountantName = "pld") -> float:
    """Epsilon of one Gaussian mechanism (sensitivity 1, std noise_multiplier).

    No subsampling, no composition: the per-round epsilon the canary audit compares
    against.

    Args:
        noise_multiplier: Noise std; 0 gives math.inf, math.inf gives 0.
        delta: Target delta in (0, 1).
        accountant: "pld" for the exact analytic Gaussian (Balle & Wang 2018),
            "rdp" for dp-accounting's RDP accountant.

    Returns:
        Epsilon at delta.
    """
    _check_noise(noise_multiplier)
    _check_delta(delta)
    _check_choice(accountant, "accountant", AccountantName)
    if noise_multiplier == 0:
        return math.inf
    if math.isinf(noise_multiplier):
        return 0.0
    if accountant == "rdp":
        return epsilon_for_event(
            event=dp_accounting.GaussianDpEvent(noise_multiplier),
            delta=delta,
            accountant="rdp",
        )

    log_delta = math.log(delta)

    def excess(eps: float) -> float:
        return _log_delta(noise_multiplier, eps) - log_delta

    if excess(0.0) <= 0:
        return 0.0
    hi = 1.0
    while excess(hi) > 0:
        hi *= 2
    return float(optimize.brentq(excess, 0.0, hi, xtol=1e-12))


def gaussian_noise_for_epsilon(*, epsilon: float, delta: float) -> float:
    """Inverse of the exact analytic Gaussian epsilon.

    Args:
        epsilon: Single-release epsilon, >= 0 (math.inf gives 0.0, 0 gives math.inf).
        delta: Target delta in (0, 1).

    Returns:
        The noise std (sensitivity 1) whose single-release epsilon at delta is epsilon.
    """
    _check_delta(delta)
    if not epsilon >= 0:
        raise PrivacyError(f"epsilon must be >= 0, got {epsilon!r}")
    if math.isinf(epsilon):
        return 0.0
    if epsilon == 0:
        return math.inf
    log_delta = math.log(delta)

    def excess(sigma: float) -> float:  # decreasing in sigma
        return _log_delta(sigma, epsilon) - log_delta

    lo = hi = 1.0
    while excess(lo) < 0:
        lo /= 2
    while excess(hi) > 0:
        hi *= 2
    return float(optimize.brentq(excess, lo, hi, xtol=1e-12, rtol=1e-12))


# --- cumulative accounting over rounds ----------------------------------------------


def _groups(noise_multipliers: list[float]) -> list[tuple[float, int]]:
    """Runs of equal consecutive noise multipliers as (noise, count)."""
    groups: list[tuple[float, int]] = []
    for noise in noise_multipliers:
        if groups and groups[-1][0] == noise:
            groups[-1] = (noise, groups[-1][1] + 1)
        else:
            groups.append((noise, 1))
    return groups


class RoundAccountant:
    """Composes DP-FedAvg rounds one at a time; cumulative epsilon at one delta.

    Equal consecutive noise multipliers are composed as one self-composition. Runs
    that have ended are composed once into a kept accountant; each query copies it
    and adds the current run, so a query costs about the same after 10 or 1,000
    rounds (roughly 0.1 s for PLD or RDP).
    """

    def __init__(self, *, delta: float, sampling: Sampling, population: int, cohort: int) -> None:
        """Sets up an empty accountant.

        Args:
            delta: Target delta in (0, 1), used for every query.
            sampling: "poisson" or "without_replacement" (RDP only).
            population: Number of clients.
            cohort: Clients per round (expected number for Poisson sampling).
        """
        _check_delta(delta)
        _check_choice(sampling, "sampling", Sampling)
        _check_cohort(population, cohort)
        self._delta = delta
        self._sampling = sampling
        self._population = population
        self._cohort = cohort
        self._noise: list[float] = []
        # accountant name -> (accountant holding the first n rounds, n); n ends a run.
        self._closed: dict[str, tuple[dp_accounting.PrivacyAccountant, int]] = {}

    @property
    def rounds(self) -> int:
        """Number of rounds recorded so far."""
        return len(self._noise)

    def step(self, *, noise_multiplier: float) -> None:
        """Records one round.

        Args:
            noise_multiplier: The round's noise multiplier (0 means no privacy).
        """
        _check_noise(noise_multiplier)
        self._noise.append(float(noise_multiplier))

    def _event(self, noise_multiplier: float) -> dp_accounting.DpEvent:
        return round_event(
            noise_multiplier=noise_multiplier,
            sampling=self._sampling,
            population=self._population,
            cohort=self._cohort,
        )

    def epsilon(self, *, accountant: AccountantName = "pld") -> float:
        """Cumulative epsilon at the accountant's delta after the rounds so far.

        Args:
            accountant: "pld" or "rdp" ("rdp" only for sampling without replacement).

        Returns:
            Epsilon (0.0 before any round, math.inf after a non-private round).
        """
        without_replacement = self._sampling == "without_replacement"
        fresh = _new_accountant(accountant, without_replacement)  # validates
        if not self._noise:
            return 0.0
        *ended, (current_noise, current_count) = _groups(self._noise)
        acc, done = self._closed.get(accountant, (fresh, 0))
        seen = 0
        for noise, count in ended:
            if seen >= done:
                _compose(acc, self._event(noise), count)
            seen += count
        self._closed[accountant] = (acc, seen)
        acc = copy.deepcopy(acc)
        _compose(acc, self._event(current_noise), current_count)
        return float(acc.get_epsilon(self._delta))

    def state_dict(self) -> dict:
        """JSON-able state: the per-round noise multipliers."""
        return {"noise_multipliers": list(self._noise)}

    def load_state_dict(self, state: dict) -> None:
        """Restores the rounds recorded by ``state_dict``.

        Args:
            state: A dict from ``state_dict``.
        """
        noise = state.get("noise_multipliers") if isinstance(state, dict) else None
        if not isinstance(noise, list):
            raise PrivacyError("accountant state must be a dict with a list 'noise_multipliers'")
        for value in noise:
            _check_noise(value, "noise_multipliers entry")
        self._noise = [float(value) for value in noise]
        self._closed = {}


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
        sampling: "poisson" or "without_replacement" (then population is required,
            cohort = round(q * population), and only "rdp" works).
        population: Number of clients; required for "without_replacement".
        accountant: "pld" or "rdp".

    Returns:
        Cumulative epsilon at delta.
    """
    _check_noise(noise_multiplier)
    _check_rate(sampling_rate, "sampling_rate")
    _check_count(rounds, "rounds")
    _check_delta(delta)
    _check_choice(sampling, "sampling", Sampling)
    _check_choice(accountant, "accountant", AccountantName)
    if sampling == "poisson":
        event = _gaussian(noise_multiplier)
        if isinstance(event, dp_accounting.GaussianDpEvent):
            event = dp_accounting.PoissonSampledDpEvent(sampling_rate, event)
    else:
        if population is None:
            raise PrivacyError("population is required for sampling=without_replacement")
        _check_count(population, "population")
        cohort = round(sampling_rate * population)
        if cohort < 1:
            raise PrivacyError(
                f"sampling_rate * population must round to >= 1 client, got {sampling_rate!r} * {population!r}"
            )
        event = round_event(
            noise_multiplier=noise_multiplier,
            sampling=sampling,
            population=population,
            cohort=cohort,
        )
    return epsilon_for_event(
        event=dp_accounting.SelfComposedDpEvent(event, rounds),
        delta=delta,
        accountant=accountant,
    )


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
    """Smallest noise multiplier whose cumulative epsilon is at most the target.

    Bisection on a log scale to a relative tolerance of 1e-3, over noise multipliers
    0.1 to 1e4; the result errs on the side of more noise.

    Args:
        target_epsilon: Epsilon to reach, > 0.
        sampling_rate: q = cohort / population, in (0, 1].
        rounds: Number of rounds, >= 1.
        delta: Target delta in (0, 1).
        sampling: "poisson" or "without_replacement" (see cumulative_epsilon).
        population: Number of clients; required for "without_replacement".
        accountant: "pld" or "rdp".

    Returns:
        The noise multiplier.

    Raises:
        PrivacyError: If no noise multiplier in the searched range reaches the target.
    """
    if not 0 < target_epsilon < math.inf:
        raise PrivacyError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")

    @functools.cache
    def eps(noise: float) -> float:
        return cumulative_epsilon(
            noise_multiplier=noise,
            sampling_rate=sampling_rate,
            rounds=rounds,
            delta=delta,
            sampling=sampling,
            population=population,
            accountant=accountant,
        )

    # Bracket eps(lo) > target >= eps(hi), stepping by factors of 4 from 1.
    lo = hi = 1.0
    if eps(1.0) > target_epsilon:
        while eps(hi) > target_epsilon:
            if hi >= _MAX_NOISE:
                raise PrivacyError(
                    f"target_epsilon {target_epsilon!r} is unreachable: even "
                    f"noise_multiplier {_MAX_NOISE:g} gives more; raise the target"
                )
            lo, hi = hi, min(4 * hi, _MAX_NOISE)
    else:
        while eps(lo) <= target_epsilon:
            if lo <= _MIN_NOISE:
                raise PrivacyError(
                    f"target_epsilon {target_epsilon!r} is met by any noise_multiplier "
                    f">= {_MIN_NOISE:g} (the smallest searched); set the noise directly"
                )
            lo, hi = max(lo / 4, _MIN_NOISE), lo
    while hi / lo > 1 + _NOISE_RTOL:
        mid = math.sqrt(lo * hi)
        if eps(mid) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi
