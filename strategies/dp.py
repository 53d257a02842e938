"""DP aggregation strategies: what the server does with one round's client updates.

Each strategy says how each client's update enters the round's sum (its
:class:`ContributionRule`: the nodes that train the clients clip each update on its own
and sum them), turns that sum into the average update the server applies, and reports
the numbers a privacy researcher needs: the fraction of updates that were clipped and
the standard deviation of the noise actually added to the averaged update.

The noisy sum is always divided by the *expected* cohort size (q N for Poisson
sampling), never by the realised one, which would leak the cohort size (McMahan et al.
2018). Flower's own DP wrappers divide by the realised count and add the noise after
the inner strategy's step (wrong for FedAdam), so fedsim owns this arithmetic; clipping
on the client uses Flower's ``fixedclipping_mod`` (see fedsim.clients.app).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsim.strategies.aggregation import ContributionRule, noisy_sums


@dataclass(frozen=True)
class RoundAggregate:
    """What one round's aggregation produced."""

    mean_update: np.ndarray
    clip_fraction: float | None
    noise_std: float
    clip_norm: float | None


class Aggregator(ABC):
    """Turns a cohort's summed updates into the averaged update, with DP where configured.

    :meth:`release` is the one place a strategy's noisy sum comes from: the real round
    (:meth:`aggregate`) and the canary audit's replays both call it, so a bug in the
    release cannot hide from the audit.
    """

    #: noise multiplier of the whole round's release, for the accountant (0: no DP)
    noise_multiplier: float = 0.0

    @property
    def clip_norm_now(self) -> float | None:
        """The clip norm the next release uses (None without clipping)."""
        return None

    @property
    def release_std(self) -> float:
        """Std of the Gaussian noise added to each coordinate of the released sum."""
        return 0.0

    @property
    def rule(self) -> ContributionRule:
        """How each client's update enters the next round's sum."""
        return ContributionRule()

    def release(
        self,
        prepared: np.ndarray,
        *,
        include: np.ndarray,
        rng: np.random.Generator,
        direction: np.ndarray | None = None,
    ) -> np.ndarray:
        """The noisy sums this strategy releases: row t for the cohort ``include[t]`` (a
        boolean (T, n) matrix over the rows of ``prepared``: updates prepared by
        :attr:`rule`, or sums of them), each with fresh noise; with a unit ``direction``,
        their projections on it (see ``noisy_sums``). No state changes."""
        return noisy_sums(prepared, include=include, noise_std=self.release_std, rng=rng, direction=direction)

    def replay(
        self,
        updates: np.ndarray,
        *,
        examples: np.ndarray,
        include: np.ndarray,
        rng: np.random.Generator,
        direction: np.ndarray | None = None,
    ) -> np.ndarray:
        """The audit's replays of this strategy's round: row t is what the server would
        release for the cohort ``include[t]`` over ``updates`` (prepared by :attr:`rule`,
        not yet weighted; ``examples``: each one's example count), projected on a unit
        ``direction`` if given. Central DP: the noisy sums (their divisor, the expected
        cohort, is a constant that no estimate depends on)."""
        return self.release(updates, include=include, rng=rng, direction=direction)

    def with_noise_multiplier(self, noise_multiplier: float) -> Aggregator:
        """A copy releasing with another noise multiplier (the audit's what-if replays)."""
        raise ValueError(f"{type(self).__name__} adds no noise; a what-if noise level needs central DP")

    def _release_total(self, total: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The real round's release: the cohort's summed prepared updates, once."""
        return self.release(total[None], include=np.ones((1, 1), dtype=bool), rng=rng)[0]

    @abstractmethod
    def aggregate(
        self, *, total: np.ndarray, weight: float, norms: np.ndarray, rng: np.random.Generator
    ) -> RoundAggregate:
        """Aggregate a round: ``total`` is the sum of the cohort's updates prepared by
        :attr:`rule` (zeros for an empty cohort), ``weight`` the sum of their weights,
        ``norms`` each update's L2 norm before any clipping."""

    def state_dict(self) -> dict[str, Any]:
        """State that changes across rounds (for resume)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - stateless by default
        """Restore what :meth:`state_dict` returned."""


class PlainAggregator(Aggregator):
    """FedAvg without noise: the mean of the updates, weighted by example counts, or
    uniform (under local DP-SGD the example count is private: it changes when one
    sample is added or removed)."""

    def __init__(self, *, uniform: bool) -> None:
        self.uniform = uniform

    @property
    def rule(self) -> ContributionRule:
        return ContributionRule(by_examples=not self.uniform)

    def aggregate(self, *, total, weight, norms, rng) -> RoundAggregate:
        return RoundAggregate(_mean(self._release_total(total, rng), weight), None, 0.0, None)

    def replay(self, updates, *, examples, include, rng, direction=None) -> np.ndarray:
        """The cohorts' means as :meth:`aggregate` takes them: weighted by example counts
        (or uniform) and divided by each cohort's own weight, which is not a constant."""
        weights = np.ones(len(updates)) if self.uniform else np.asarray(examples, dtype=np.float64)
        sums = self.release(updates * weights[:, None], include=include, rng=rng, direction=direction)
        cohort_weights = include @ weights
        return _mean(sums, cohort_weights[:, None] if sums.ndim == 2 else cohort_weights)


def _mean(total: np.ndarray, weight: np.ndarray | float) -> np.ndarray:
    """``total / weight``, and zeros where the weight is 0 (nobody in the cohort)."""
    return np.divide(total, weight, out=np.zeros_like(total), where=np.asarray(weight) > 0)


class FixedClippingAggregator(Aggregator):
    """DP-FedAvg with a fixed clip norm C and Gaussian noise z C on the sum.

    Args:
        noise_multiplier: z.
        clip_norm: C.
        expected_cohort: the divisor, q N (Poisson) or the fixed cohort size.
        clip_on_server: True clips on the server's behalf (server-side clipping); False
            has each client clip its own update (client-side clipping, Flower's
            ``fixedclipping_mod`` arithmetic); the server only adds noise.
    """

    def __init__(
        self, *, noise_multiplier: float, clip_norm: float, expected_cohort: float, clip_on_server: bool
    ) -> None:
        self.noise_multiplier = noise_multiplier
        self.clip_norm = clip_norm
        self.expected_cohort = expected_cohort
        self.clip_on_server = clip_on_server

    @property
    def clip_norm_now(self) -> float:
        return self.clip_norm

    @property
    def release_std(self) -> float:
        return self.noise_multiplier * self.clip_norm

    @property
    def rule(self) -> ContributionRule:
        return ContributionRule(clip_norm=self.clip_norm, client_clips=not self.clip_on_server)

    def with_noise_multiplier(self, noise_multiplier: float) -> FixedClippingAggregator:
        return FixedClippingAggregator(
            noise_multiplier=noise_multiplier,
            clip_norm=self.clip_norm,
            expected_cohort=self.expected_cohort,
            clip_on_server=self.clip_on_server,
        )

    def aggregate(self, *, total, weight, norms, rng) -> RoundAggregate:
        norms = np.asarray(norms)
        clip_fraction = float(np.mean(norms > self.clip_norm)) if len(norms) else None
        return RoundAggregate(
            mean_update=self._release_total(total, rng) / self.expected_cohort,
            clip_fraction=clip_fraction,
            noise_std=self.noise_multiplier * self.clip_norm / self.expected_cohort,
            clip_norm=self.clip_norm,
        )


class AdaptiveClippingAggregator(Aggregator):
    """DP-FedAvg with adaptive clipping (Andrew et al. 2021, "Differentially Private
    Learning with Adaptive Clipping").

    The clip norm follows the target quantile gamma of update norms: each client
    contributes b_i = 1[|u_i| <= C] - 1/2 (sensitivity 1/2); the server releases the
    noisy fraction b = (sum b_i + N(0, sigma_b^2)) / m + 1/2 and sets
    C <- C exp(-eta (b - gamma)). The update sum gets noise multiplier
    z_u = (z^-2 - (2 sigma_b)^-2)^(-1/2), so the two releases together are exactly one
    Gaussian mechanism with noise multiplier z, which is what the accountant composes.
    """

    def __init__(
        self,
        *,
        noise_multiplier: float,
        initial_clip_norm: float,
        expected_cohort: float,
        target_quantile: float,
        clip_lr: float,
        count_noise_std: float,
    ) -> None:
        if noise_multiplier > 0 and 2 * count_noise_std <= noise_multiplier:
            raise ValueError(
                f"adaptive clipping needs 2 * count noise ({2 * count_noise_std:g}) > noise_multiplier "
                f"({noise_multiplier:g}); raise dp.adaptive.count_noise_multiplier"
            )
        self.noise_multiplier = noise_multiplier
        self.clip_norm = initial_clip_norm
        self.expected_cohort = expected_cohort
        self.target_quantile = target_quantile
        self.clip_lr = clip_lr
        self.configured_count_noise_std = count_noise_std
        self.count_noise_std = count_noise_std if noise_multiplier > 0 else 0.0
        self.update_noise_multiplier = (
            (noise_multiplier**-2 - (2 * count_noise_std) ** -2) ** -0.5 if noise_multiplier > 0 else 0.0
        )

    @property
    def clip_norm_now(self) -> float:
        return self.clip_norm

    @property
    def release_std(self) -> float:
        return self.update_noise_multiplier * self.clip_norm

    @property
    def rule(self) -> ContributionRule:
        return ContributionRule(clip_norm=self.clip_norm)

    def with_noise_multiplier(self, noise_multiplier: float) -> AdaptiveClippingAggregator:
        return AdaptiveClippingAggregator(
            noise_multiplier=noise_multiplier,
            initial_clip_norm=self.clip_norm,
            expected_cohort=self.expected_cohort,
            target_quantile=self.target_quantile,
            clip_lr=self.clip_lr,
            count_noise_std=self.configured_count_noise_std,
        )

    def aggregate(self, *, total, weight, norms, rng) -> RoundAggregate:
        clip_norm = self.clip_norm
        norms = np.asarray(norms)
        released = self._release_total(total, rng)
        below = float(np.sum((norms <= clip_norm) - 0.5)) + rng.normal(0.0, self.count_noise_std or 0.0)
        fraction_below = below / self.expected_cohort + 0.5
        self.clip_norm = clip_norm * math.exp(-self.clip_lr * (fraction_below - self.target_quantile))
        return RoundAggregate(
            mean_update=released / self.expected_cohort,
            clip_fraction=float(np.mean(norms > clip_norm)) if len(norms) else None,
            noise_std=self.update_noise_multiplier * clip_norm / self.expected_cohort,
            clip_norm=clip_norm,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"clip_norm": self.clip_norm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clip_norm = float(state["clip_norm"])
