"""The clip-sum-noise core of DP-FedAvg, on flat update vectors.

These pure functions are the one place where updates are clipped, summed and noised:
the strategies use them for the real rounds and the canary audit replays the strategies'
releases, so both always run the same code.
"""

from __future__ import annotations

import numpy as np


def update_norms(updates: np.ndarray) -> np.ndarray:
    """L2 norm of each row of an (n, d) array of updates."""
    return np.linalg.norm(updates, axis=1) if len(updates) else np.zeros(0)


def clip_factors(norms: np.ndarray, clip_norm: float) -> np.ndarray:
    """Per-update scale min(1, C / |u|) that clips each update to L2 norm C."""
    return np.minimum(1.0, clip_norm / np.maximum(norms, 1e-12))


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
