"""Exact epsilon between two normal distributions with possibly unequal variances.

Equal variances are mu-GDP, i.e. the Gaussian mechanism, and go to dp_accounting; unequal
variances (which dp_accounting does not cover) go through the exact hockey-stick
divergence. numpy, scipy and dp_accounting only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

from dp_accounting import get_epsilon_gaussian
from scipy.optimize import brentq
from scipy.special import ndtr

__all__ = ["gaussians_epsilon"]


def gaussians_epsilon(*, mu_in: float, sigma_in: float, mu_out: float, sigma_out: float, delta: float) -> float:
    """Smallest epsilon at which two normal distributions are (eps, delta)-indistinguishable.

    With P = N(mu_in, sigma_in^2) and Q = N(mu_out, sigma_out^2), returns the smallest
    eps >= 0 with max(E_{e^eps}(P||Q), E_{e^eps}(Q||P)) <= delta, where
    E_g(P||Q) = integral of max(0, p - g q) is the hockey-stick divergence. Equal variances
    are mu-GDP with mu = |mu_in - mu_out| / sigma, the Gaussian mechanism with noise
    1 / mu (``dp_accounting.get_epsilon_gaussian``). For unequal variances the set
    {p > e^eps q} is bounded by the roots of a quadratic, so the divergence is a sum of
    normal CDF differences; eps is found with brentq.

    Args:
        mu_in: Mean of the first normal (e.g. the scores with the canary).
        sigma_in: Its standard deviation, >= 0.
        mu_out: Mean of the second normal (e.g. the scores without the canary).
        sigma_out: Its standard deviation, >= 0.
        delta: Target delta in (0, 1).

    Returns:
        Epsilon; 0.0 for identical distributions, ``math.inf`` when a standard deviation is
        0 and the distributions differ.

    Raises:
        ValueError: If an argument is not finite, a sigma is negative, or ``delta`` is
            not in (0, 1).
    """
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not 0 < delta < 1:
        raise ValueError(f"delta must be a number in (0, 1), got {delta!r}")
    for name, value in (("mu_in", mu_in), ("mu_out", mu_out)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    for name, value in (("sigma_in", sigma_in), ("sigma_out", sigma_out)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    if sigma_in == sigma_out:
        if mu_in == mu_out:
            return 0.0
        if sigma_in == 0:
            return math.inf
        return float(get_epsilon_gaussian(sigma_in / abs(mu_in - mu_out), delta))
    if sigma_in == 0 or sigma_out == 0:
        return math.inf  # a point mass against a density: an event of mass 1 vs 0

    def excess(eps: float) -> float:
        forward = _hockey_stick(mu_in, sigma_in, mu_out, sigma_out, eps)
        backward = _hockey_stick(mu_out, sigma_out, mu_in, sigma_in, eps)
        return max(forward, backward) - delta

    return _solve_decreasing(excess)


def _hockey_stick(m1: float, s1: float, m2: float, s2: float, eps: float) -> float:
    """E_{e^eps}(N(m1, s1^2) || N(m2, s2^2)), exact, for s1, s2 > 0."""
    # Both normals go through the same affine map x -> (x - m2) / s2, which leaves the
    # divergence unchanged: Q becomes N(0, 1), P becomes N(m, s^2).
    m, s = (m1 - m2) / s2, s1 / s2
    # log p(x) - log q(x) - eps = a x^2 + b x + c
    a = 0.5 - 0.5 / s**2
    b = m / s**2
    c = -0.5 * m**2 / s**2 - math.log(s) - eps
    total = 0.0
    for lo, hi in _positive_set(a, b, c):
        p_mass = _normal_mass(lo, hi, m, s)
        q_mass = _normal_mass(lo, hi, 0.0, 1.0)
        # On this set p > e^eps q, so e^eps * q_mass <= p_mass <= 1: no overflow.
        total += p_mass - (math.exp(eps + math.log(q_mass)) if q_mass > 0 else 0.0)
    return max(total, 0.0)


def _positive_set(a: float, b: float, c: float) -> list[tuple[float, float]]:
    """Disjoint open intervals on which a x^2 + b x + c > 0."""
    everywhere, nowhere = [(-math.inf, math.inf)], []
    if a == 0:
        if b == 0:
            return everywhere if c > 0 else nowhere
        root = -c / b
        return [(root, math.inf)] if b > 0 else [(-math.inf, root)]
    disc = b * b - 4 * a * c
    if disc <= 0:
        return everywhere if a > 0 else nowhere
    q = -0.5 * (b + math.copysign(math.sqrt(disc), b))  # stable quadratic formula
    r1, r2 = sorted((q / a, c / q))
    return [(-math.inf, r1), (r2, math.inf)] if a > 0 else [(r1, r2)]


def _normal_mass(lo: float, hi: float, m: float, s: float) -> float:
    """P(lo < X < hi) for X ~ N(m, s^2), accurate in both tails."""
    z_lo, z_hi = (lo - m) / s, (hi - m) / s
    if z_lo > 0:
        return float(ndtr(-z_lo) - ndtr(-z_hi))
    return float(ndtr(z_hi) - ndtr(z_lo))


def _solve_decreasing(excess: Callable[[float], float]) -> float:
    """Smallest eps >= 0 with excess(eps) <= 0, for a continuous non-increasing excess."""
    if excess(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while excess(hi) > 0:
        lo, hi = hi, 2 * hi
        if hi > 1e300:
            return math.inf
    return float(brentq(excess, lo, hi, xtol=1e-12, rtol=1e-12))
