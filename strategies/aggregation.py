"""The clip-sum-noise core of DP-FedAvg, on flat update vectors.

These pure functions are the one place where updates are clipped, summed and noised:
the strategies use them for the real rounds and the canary audit uses them to replay
aggregates, so both always run the same code.
"""

from __future__ import annotations

import numpy as np


def update_norms(updates: np.ndarray) -> np.ndarray:
    """L2 norm of each row of an (n, d) array of updates."""
    return np.linalg.norm(updates, axis=1) if len(updates) else np.zeros(0)


def clip_factors(norms: np.ndarray, clip_norm: float) -> np.ndarray:
    """Per-update scale min(1, C / |u|) that clips each update to L2 norm C."""
    return np.minimum(1.0, clip_norm / np.maximum(norms, 1e-12))


def clipped_sum(updates: np.ndarray, *, clip_norm: float) -> tuple[np.ndarray, int]:
    """Sum of updates each clipped to L2 norm ``clip_norm``, and how many were clipped."""
    if len(updates) == 0:
        return np.zeros(updates.shape[1], dtype=np.float64), 0
    norms = update_norms(updates)
    factors = clip_factors(norms, clip_norm)
    total = (updates.astype(np.float64) * factors[:, None]).sum(axis=0)
    return total, int(np.count_nonzero(norms > clip_norm))


def gaussian_noise(*, dim: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """Isotropic Gaussian noise N(0, std^2 I_dim)."""
    if std == 0:
        return np.zeros(dim)
    return rng.normal(0.0, std, size=dim)
