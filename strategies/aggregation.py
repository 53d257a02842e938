"""The clip-sum-noise core of DP-FedAvg, on flat update vectors.

These pure functions are the one place where updates are clipped, summed and noised:
the nodes that train clients prepare each update by a strategy's
:class:`ContributionRule` and sum them, the strategies release the sums, and the canary
audit replays the strategies' releases, so all of them run the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class ContributionRule:
    """How each client's update enters a round's sum (what a strategy asks of the nodes).

    Attributes:
        clip_norm: Clip each update to this L2 norm on its own (None: no clipping).
        client_clips: The client clips (Flower's ``fixedclipping_mod`` arithmetic on its
            trained weights) rather than the server (:func:`clip_update`).
        by_examples: Weight each update by its client's example count (FedAvg without
            DP); otherwise every update counts once.
    """

    clip_norm: float | None = None
    client_clips: bool = False
    by_examples: bool = False


def update_norms(updates: np.ndarray) -> np.ndarray:
    """L2 norm of each row of an (n, d) array of updates."""
    return np.linalg.norm(updates, axis=1) if len(updates) else np.zeros(0)


def clip_factors(norms: np.ndarray, clip_norm: float) -> np.ndarray:
    """Per-update scale min(1, C / |u|) that clips each update to L2 norm C."""
    return np.minimum(1.0, clip_norm / np.maximum(norms, 1e-12))


def clip_update(update: np.ndarray, *, norm: float, clip_norm: float) -> np.ndarray:
    """One update (d,) of L2 norm ``norm`` clipped to ``clip_norm``."""
    return update * clip_factors(np.array([norm]), clip_norm)[0]


def prepare_update(update: np.ndarray, *, norm: float, rule: ContributionRule) -> np.ndarray:
    """A flat update (d,) of L2 norm ``norm`` as it enters the sum under ``rule``: clipped
    on its own where the rule clips (example weights are applied by whoever sums)."""
    return update if rule.clip_norm is None else clip_update(update, norm=norm, clip_norm=rule.clip_norm)


def clip_updates(updates: np.ndarray, *, clip_norm: float) -> np.ndarray:
    """Each row of ``updates`` (n, d) clipped to L2 norm ``clip_norm``."""
    return updates * clip_factors(update_norms(updates), clip_norm)[:, None]


def noisy_sums(
    prepared: np.ndarray,
    *,
    include: np.ndarray,
    noise_std: float,
    rng: np.random.Generator,
    direction: np.ndarray | None = None,
) -> np.ndarray:
    """The one release of DP-FedAvg: for each row t of the boolean (T, n) ``include``, the
    sum of the included rows of ``prepared`` (n, d) plus fresh N(0, noise_std^2 I) noise.

    Returns a (T, d) array; with a ``direction`` (d,), the projections of those sums on it,
    a (T,) array drawn without materialising T x d noise (the projection of N(0, s^2 I)
    on v is N(0, s^2 |v|^2)): the same distribution at O(T + n d). The real round and the
    canary audit's replays both release through this function.
    """
    include = include.astype(np.float64)
    prepared = np.asarray(prepared, dtype=np.float64)
    if direction is None:
        sums = include @ prepared
        scale = noise_std
    else:
        sums = include @ (prepared @ direction)
        scale = noise_std * float(np.linalg.norm(direction))
    if noise_std > 0:
        sums = sums + rng.normal(0.0, scale, size=sums.shape)
    return sums
