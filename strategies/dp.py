"""DP aggregation strategies: what the server does with one round's client updates.

Each strategy turns the cohort's updates (flat vectors relative to the global model)
into the average update the server applies, and reports the numbers a privacy
researcher needs: the fraction of updates that were clipped and the standard deviation
of the noise actually added to the averaged update.

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

from fedsim.strategies.aggregation import clip_updates, noisy_sums, update_norms


@dataclass(frozen=True)
class RoundAggregate:
    """What one round's aggregation produced."""

    mean_update: np.ndarray
    clip_fraction: float | None
    noise_std: float
    clip_norm: float | None


class Aggregator(ABC):
    """Turns a cohort's updates into the averaged update, with DP where configured."""

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

    def prepare(self, updates: np.ndarray) -> np.ndarray:
        """The updates as they enter the sum (clipped where this strategy clips)."""
        return updates

    def release(self, updates: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
        """The noisy sum this strategy releases for a cohort's updates.

        Exactly the clip-sum-noise of a real round, without changing any state; the
        canary audit replays the same mechanism (:meth:`prepare`, :attr:`release_std`)
        on re-drawn cohorts through :meth:`release_many` and :meth:`release_scores`.
        """
        return self.release_many(updates, include=np.ones((1, len(updates)), dtype=bool), rng=rng)[0]

    def release_many(self, updates: np.ndarray, *, include: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Releases for many cohorts at once: row t is ``release(updates[include[t]])``,
        each with fresh noise (``include`` is a boolean (T, n) matrix)."""
        return noisy_sums(self.prepare(updates), include=include, noise_std=self.release_std, rng=rng)

    def release_scores(
        self, updates: np.ndarray, *, include: np.ndarray, direction: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """<direction, release_many(...)[t]> for each t, for a unit ``direction``, without
        materialising T x d noise: the projection of N(0, s^2 I) on a unit vector is
        N(0, s^2). Same distribution as projecting :meth:`release_many`, at O(T + n d)."""
        projected = self.prepare(updates).astype(np.float64) @ direction
        scores = include.astype(np.float64) @ projected
        if self.release_std > 0:
            scores = scores + rng.normal(0.0, self.release_std * float(np.linalg.norm(direction)), size=len(scores))
        return scores

    @abstractmethod
    def aggregate(
        self,
        *,
        updates: np.ndarray,
        weights: np.ndarray,
        reported_norms: np.ndarray | None,
        rng: np.random.Generator,
    ) -> RoundAggregate:
        """Aggregate an (n, d) array of updates; ``weights`` are example counts."""

    def state_dict(self) -> dict[str, Any]:
        """State that changes across rounds (for resume)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - stateless by default
        """Restore what :meth:`state_dict` returned."""


class PlainAggregator(Aggregator):
    """FedAvg without DP: the mean of updates weighted by example counts."""

    def aggregate(self, *, updates, weights, reported_norms, rng) -> RoundAggregate:
        if len(updates) == 0:
            return RoundAggregate(np.zeros(updates.shape[1]), None, 0.0, None)
        mean = np.average(updates.astype(np.float64), axis=0, weights=weights)
        return RoundAggregate(mean, None, 0.0, None)


class FixedClippingAggregator(Aggregator):
    """DP-FedAvg with a fixed clip norm C and Gaussian noise z C on the sum.

    Args:
        noise_multiplier: z.
        clip_norm: C.
        expected_cohort: the divisor, q N (Poisson) or the fixed cohort size.
        clip_on_server: True clips here (server-side clipping); False trusts the
            clients' clipping (client-side clipping) and only adds noise.
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

    def prepare(self, updates: np.ndarray) -> np.ndarray:
        if self.clip_on_server:
            return clip_updates(updates, clip_norm=self.clip_norm)
        if len(updates) and np.any(update_norms(updates) > self.clip_norm * (1 + 1e-4)):
            raise RuntimeError("a client sent an update above the clip norm; client-side clipping failed")
        return updates

    def aggregate(self, *, updates, weights, reported_norms, rng) -> RoundAggregate:
        norms = update_norms(updates) if reported_norms is None else np.asarray(reported_norms)
        total = self.release(updates, rng=rng)
        clip_fraction = float(np.mean(norms > self.clip_norm)) if len(norms) else None
        return RoundAggregate(
            mean_update=total / self.expected_cohort,
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

    def prepare(self, updates: np.ndarray) -> np.ndarray:
        return clip_updates(updates, clip_norm=self.clip_norm)

    def aggregate(self, *, updates, weights, reported_norms, rng) -> RoundAggregate:
        clip_norm = self.clip_norm
        norms = update_norms(updates)
        total = self.release(updates, rng=rng)
        below = float(np.sum((norms <= clip_norm) - 0.5)) + rng.normal(0.0, self.count_noise_std or 0.0)
        fraction_below = below / self.expected_cohort + 0.5
        self.clip_norm = clip_norm * math.exp(-self.clip_lr * (fraction_below - self.target_quantile))
        return RoundAggregate(
            mean_update=total / self.expected_cohort,
            clip_fraction=float(np.mean(norms > clip_norm)) if len(norms) else None,
            noise_std=self.update_noise_multiplier * clip_norm / self.expected_cohort,
            clip_norm=clip_norm,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"clip_norm": self.clip_norm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clip_norm = float(state["clip_norm"])
