"""What happened, as dp-accounting events, and epsilon at delta for an event.

A DP-FedAvg round is a Gaussian mechanism on the clipped sum, sampled as the run samples
clients; a local DP-SGD training is Opacus' Poisson-sampled Gaussian steps. Everything
here is a pure function of its arguments; the accountants and the calculator build on it.

Adjacency (which datasets are neighbours) follows the sampling:

- Poisson sampling: add or remove one client (or sample); the clipped sum moves by at
  most C, so the Gaussian event carries the noise multiplier z.
- A fixed-size cohort sampled without replacement: only replace-one adjacency is
  accounted for (dp-accounting's RDP accountant; PLD has no such event). Swapping one
  clipped update for another moves the sum by up to 2C, and dp-accounting normalises by
  the L2 sensitivity (google/differential-privacy issue #378), so the event carries z / 2.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Literal, get_args

import dp_accounting
from dp_accounting import pld, rdp

from fedsim.config import Sampling
from fedsim.errors import PrivacyError

AccountantName = Literal["pld", "rdp"]
Adjacency = Literal["add_or_remove_one", "replace_one"]

# PLD grid step on the privacy-loss axis. 1e-3 is ~10x faster than dp-accounting's
# default 1e-4 and changes epsilon by < 0.1% in our reference settings (the
# discretisation is pessimistic, so the result stays an upper bound).
PLD_DISCRETIZATION = 1e-3
# The audit's extrapolation (an estimate, not a bound) meets a new noise level after
# every audited round, and building its one-round PLD is most of the cost (~0.1 s at
# 1e-3): 1e-2 builds it ~5x faster and moved epsilon by 1e-5 to 1.3e-4 relative (z 0.5
# to 1, q 0.1, 11 rounds), far below the estimate's own spread.
EXTRAPOLATION_PLD_DISCRETIZATION = 1e-2


# --- validation -------------------------------------------------------------------


def check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise PrivacyError(f"delta must be in (0, 1), got {delta!r}")


def check_noise(noise_multiplier: float, name: str = "noise_multiplier") -> None:
    if not noise_multiplier >= 0:  # also rejects NaN
        raise PrivacyError(f"{name} must be >= 0, got {noise_multiplier!r}")


def check_rate(rate: float, name: str) -> None:
    if not 0 < rate <= 1:
        raise PrivacyError(f"{name} must be in (0, 1], got {rate!r}")


def check_count(count: int, name: str) -> None:
    if not isinstance(count, numbers.Integral) or isinstance(count, bool) or count < 1:
        raise PrivacyError(f"{name} must be an integer >= 1, got {count!r}")


def check_choice(value: str, name: str, allowed: object) -> None:
    choices = get_args(allowed)
    if value not in choices:
        raise PrivacyError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


# --- events -----------------------------------------------------------------------


def adjacency_of(sampling: Sampling) -> Adjacency:
    """The adjacency a run's sampling is accounted under (see the module docstring)."""
    check_choice(sampling, "sampling", Sampling)
    return "add_or_remove_one" if sampling == "poisson" else "replace_one"


def sensitivity(adjacency: Adjacency) -> float:
    """L2 sensitivity of a sum of updates clipped to norm 1, under ``adjacency``."""
    check_choice(adjacency, "adjacency", Adjacency)
    return 1.0 if adjacency == "add_or_remove_one" else 2.0


def gaussian_event(noise_multiplier: float) -> dp_accounting.DpEvent:
    """A Gaussian mechanism of sensitivity 1 (0: no privacy; inf: releases nothing)."""
    check_noise(noise_multiplier)
    if noise_multiplier == 0:
        return dp_accounting.NonPrivateDpEvent()
    if math.isinf(noise_multiplier):
        return dp_accounting.NoOpDpEvent()
    return dp_accounting.GaussianDpEvent(noise_multiplier)


def release_event(*, noise_multiplier: float, adjacency: Adjacency) -> dp_accounting.DpEvent:
    """One release of a noisy clipped sum, no subsampling: what one round alone leaks
    (the per-round theoretical epsilon, which the canary audit measures)."""
    return gaussian_event(noise_multiplier / sensitivity(adjacency))


def fixed_cohort(*, sampling_rate: float, population: int | None) -> int:
    """The cohort size of a fixed-cohort run with ``sampling_rate`` of ``population``."""
    check_rate(sampling_rate, "sampling_rate")
    if population is None:
        raise PrivacyError("population is required for sampling=fixed (a cohort drawn without replacement)")
    check_count(population, "population")
    cohort = round(sampling_rate * population)
    if cohort < 1:
        raise PrivacyError(
            f"sampling_rate * population must round to >= 1 client, got {sampling_rate!r} * {population!r}"
        )
    return cohort


def round_event(
    *, noise_multiplier: float, sampling: Sampling, sampling_rate: float, population: int | None = None
) -> dp_accounting.DpEvent:
    """One DP-FedAvg round: the release of the clipped sum, sampled as the run samples.

    Args:
        noise_multiplier: Noise std divided by the clip norm; 0 means no privacy.
        sampling: "poisson" (each client joins with ``sampling_rate``) or "fixed"
            (round(sampling_rate * population) clients without replacement, replace-one
            adjacency).
        sampling_rate: q = expected cohort / population, in (0, 1].
        population: Number of clients (needed for "fixed").

    Returns:
        The round's DpEvent (NonPrivateDpEvent when noise_multiplier is 0).
    """
    check_rate(sampling_rate, "sampling_rate")
    release = release_event(noise_multiplier=noise_multiplier, adjacency=adjacency_of(sampling))
    if sampling == "poisson":
        if not isinstance(release, dp_accounting.GaussianDpEvent):
            return release
        return dp_accounting.PoissonSampledDpEvent(sampling_rate, release)
    cohort = fixed_cohort(sampling_rate=sampling_rate, population=population)
    if not isinstance(release, dp_accounting.GaussianDpEvent):
        return release
    return dp_accounting.SampledWithoutReplacementDpEvent(population, cohort, release)


def dpsgd_event(*, noise_multiplier: float, sample_rate: float, steps: int) -> dp_accounting.DpEvent:
    """Local DP-SGD (sample level): ``steps`` Poisson-sampled Gaussian steps.

    Args:
        noise_multiplier: DP-SGD noise multiplier; 0 means no privacy.
        sample_rate: Poisson rate of each sample in each step.
        steps: Number of optimiser steps.

    Returns:
        SelfComposed(PoissonSampled(sample_rate, Gaussian(noise_multiplier)), steps).
    """
    check_rate(sample_rate, "sample_rate")
    check_count(steps, "steps")
    gaussian = gaussian_event(noise_multiplier)
    if not isinstance(gaussian, dp_accounting.GaussianDpEvent):
        return gaussian
    return dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(sample_rate, gaussian), steps)


# --- accountants --------------------------------------------------------------------


def _has_without_replacement(event: dp_accounting.DpEvent) -> bool:
    if isinstance(event, dp_accounting.SampledWithoutReplacementDpEvent):
        return True
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        return _has_without_replacement(event.event)
    if isinstance(event, dp_accounting.ComposedDpEvent):
        return any(_has_without_replacement(e) for e in event.events)
    return False


def new_accountant(accountant: AccountantName, *, adjacency: Adjacency) -> dp_accounting.PrivacyAccountant:
    """An empty dp-accounting accountant for ``adjacency`` (PLD only for add/remove)."""
    check_choice(accountant, "accountant", AccountantName)
    check_choice(adjacency, "adjacency", Adjacency)
    if accountant == "pld":
        if adjacency == "replace_one":
            raise PrivacyError(
                "the pld accountant does not support fixed cohorts (sampling without replacement); "
                "use accountant=rdp or sampling=poisson"
            )
        return pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    relation = (
        dp_accounting.NeighboringRelation.REPLACE_ONE
        if adjacency == "replace_one"
        else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    )
    return rdp.RdpAccountant(neighboring_relation=relation)


def compose(acc: dp_accounting.PrivacyAccountant, event: dp_accounting.DpEvent, count: int = 1) -> None:
    """``acc.compose`` with dp-accounting's refusal turned into a one-line PrivacyError."""
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
    """
    check_delta(delta)
    adjacency: Adjacency = "replace_one" if _has_without_replacement(event) else "add_or_remove_one"
    acc = new_accountant(accountant, adjacency=adjacency)
    compose(acc, event)
    return float(acc.get_epsilon(delta))


def gaussian_epsilon(*, noise_multiplier: float, delta: float) -> float:
    """Exact epsilon at delta of one Gaussian mechanism of sensitivity 1 (dp-accounting's
    analytic Gaussian, Balle & Wang 2018); 0 noise gives inf, infinite noise 0."""
    check_noise(noise_multiplier)
    check_delta(delta)
    if noise_multiplier == 0:
        return math.inf
    if math.isinf(noise_multiplier):
        return 0.0
    return _analytic_gaussian_epsilon(float(noise_multiplier), float(delta))


@functools.lru_cache(maxsize=1024)
def _analytic_gaussian_epsilon(noise_multiplier: float, delta: float) -> float:
    """dp-accounting's analytic Gaussian epsilon, kept per (z, delta): a run asks for the
    same one every round."""
    return float(dp_accounting.get_epsilon_gaussian(noise_multiplier, delta))


def gaussian_noise_for_epsilon(*, epsilon: float, delta: float) -> float:
    """The noise multiplier of the Gaussian mechanism (sensitivity 1) whose epsilon at
    delta is ``epsilon`` (dp-accounting's inverse); inf gives 0, 0 gives inf."""
    check_delta(delta)
    if not epsilon >= 0:
        raise PrivacyError(f"epsilon must be >= 0, got {epsilon!r}")
    if math.isinf(epsilon):
        return 0.0
    if epsilon == 0:
        return math.inf
    return float(dp_accounting.get_sigma_gaussian(epsilon, delta))
