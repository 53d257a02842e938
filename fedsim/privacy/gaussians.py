"""Exact epsilon between two normal distributions with possibly unequal variances.

Equal variances are mu-GDP, i.e. the Gaussian mechanism, and go to dp_accounting; unequal
variances (which dp_accounting does not cover) go through the exact hockey-stick
divergence, evaluated for whole arrays of normal pairs at once (the Gaussian fit's
bootstrap solves hundreds of pairs per audited round). numpy, scipy and dp_accounting only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np
from dp_accounting import get_epsilon_gaussian
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import elementwise
from scipy.special import ndtr

__all__ = ["gaussians_epsilon", "gaussians_epsilons"]

_TOLERANCE = 1e-12  # absolute and relative width of the final bracket
_HUGE = 1e300  # past this the pair is treated as distinguishable at any epsilon

Excess = Callable[..., np.ndarray]  # excess(eps, *args), elementwise


def gaussians_epsilon(*, mu_in: float, sigma_in: float, mu_out: float, sigma_out: float, delta: float) -> float:
    """Smallest epsilon at which two normal distributions are (eps, delta)-indistinguishable.

    With P = N(mu_in, sigma_in^2) and Q = N(mu_out, sigma_out^2), returns the smallest
    eps >= 0 with max(E_{e^eps}(P||Q), E_{e^eps}(Q||P)) <= delta, where
    E_g(P||Q) = integral of max(0, p - g q) is the hockey-stick divergence. Equal variances
    are mu-GDP with mu = |mu_in - mu_out| / sigma, the Gaussian mechanism with noise
    1 / mu (``dp_accounting.get_epsilon_gaussian``). For unequal variances the set
    {p > e^eps q} is bounded by the roots of a quadratic, so the divergence is a sum of
    normal CDF differences; eps is found by bracketing (scipy's Chandrupatla method) to 1e-12.

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
    return float(gaussians_epsilons(mu_in=mu_in, sigma_in=sigma_in, mu_out=mu_out, sigma_out=sigma_out, delta=delta))


def gaussians_epsilons(
    *, mu_in: ArrayLike, sigma_in: ArrayLike, mu_out: ArrayLike, sigma_out: ArrayLike, delta: float
) -> NDArray[np.float64]:
    """:func:`gaussians_epsilon` of each pair of broadcast arrays, computed together."""
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not 0 < delta < 1:
        raise ValueError(f"delta must be a number in (0, 1), got {delta!r}")
    arrays = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (mu_in, sigma_in, mu_out, sigma_out)))
    shape = arrays[0].shape
    m_in, s_in, m_out, s_out = (a.ravel() for a in arrays)
    for name, value in (("mu_in", m_in), ("mu_out", m_out)):
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} must be a finite number, got {value[np.argmin(np.isfinite(value))]!r}")
    for name, value in (("sigma_in", s_in), ("sigma_out", s_out)):
        bad = ~np.isfinite(value) | (value < 0)
        if np.any(bad):
            raise ValueError(f"{name} must be a finite number >= 0, got {value[np.argmax(bad)]!r}")

    eps = np.zeros(m_in.size)
    equal = s_in == s_out
    identical = equal & (m_in == m_out)
    point_mass = ~identical & ((s_in == 0) | (s_out == 0))  # an event of mass 1 against 0
    eps[point_mass] = math.inf
    gdp = equal & ~identical & ~point_mass
    for i in np.flatnonzero(gdp):
        eps[i] = get_epsilon_gaussian(s_in[i] / abs(m_in[i] - m_out[i]), delta)
    unequal = ~equal & ~point_mass
    if np.any(unequal):
        pair = (m_in[unequal], s_in[unequal], m_out[unequal], s_out[unequal])
        eps[unequal] = _solve_decreasing(lambda e, *p: _excess(*p, e, delta), pair)
    return eps.reshape(shape)


def _excess(m1, s1, m2, s2, eps, delta):
    """max(E_{e^eps}(P||Q), E_{e^eps}(Q||P)) - delta for P = N(m1, s1^2), Q = N(m2, s2^2)."""
    return np.maximum(_hockey_stick(m1, s1, m2, s2, eps), _hockey_stick(m2, s2, m1, s1, eps)) - delta


def _hockey_stick(m1, s1, m2, s2, eps):
    """E_{e^eps}(N(m1, s1^2) || N(m2, s2^2)), exact, elementwise for s1 != s2, both > 0."""
    # Both normals go through the same affine map x -> (x - m2) / s2, which leaves the
    # divergence unchanged: Q becomes N(0, 1), P becomes N(m, s^2).
    m, s = (m1 - m2) / s2, s1 / s2
    # log p(x) - log q(x) - eps = a x^2 + b x + c, a != 0 since s != 1
    a = 0.5 - 0.5 / s**2
    b = m / s**2
    c = -0.5 * m**2 / s**2 - np.log(s) - eps
    disc = b * b - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = -0.5 * (b + np.copysign(np.sqrt(np.maximum(disc, 0.0)), b))  # stable quadratic formula
        r1, r2 = np.minimum(q / a, c / q), np.maximum(q / a, c / q)

        def excess_on(p_mass, q_mass):  # p - e^eps q on a set where p > e^eps q (no overflow)
            return p_mass - np.where(q_mass > 0, np.exp(eps + np.log(q_mass)), 0.0)

        # a > 0: p > e^eps q outside the roots; a < 0: between them; no real roots: nowhere
        # (a < 0) or everywhere (a > 0, where it is 1 - e^eps <= 0 for eps >= 0).
        tails = excess_on(ndtr((r1 - m) / s), ndtr(r1)) + excess_on(ndtr((m - r2) / s), ndtr(-r2))
        middle = excess_on(_normal_mass(r1, r2, m, s), _normal_mass(r1, r2, 0.0, 1.0))
    total = np.where(disc > 0, np.where(a > 0, tails, middle), 0.0)
    return np.maximum(total, 0.0)


def _normal_mass(lo, hi, m, s):
    """P(lo < X < hi) for X ~ N(m, s^2), accurate in both tails."""
    z_lo, z_hi = (lo - m) / s, (hi - m) / s
    return np.where(z_lo > 0, ndtr(-z_lo) - ndtr(-z_hi), ndtr(z_hi) - ndtr(z_lo))


def _solve_decreasing(excess: Excess, args: tuple[np.ndarray, ...]) -> NDArray[np.float64]:
    """Elementwise smallest eps >= 0 with excess(eps, *args) <= 0 for continuous
    non-increasing excesses (``args``: equal-length arrays, one element per problem).
    Brackets each by doubling, then narrows the bracket to ``_TOLERANCE`` with scipy's
    Chandrupatla method (~12 evaluations where bisection took ~42) and returns the
    bracket's end where the excess is <= 0."""
    size = args[0].size
    eps = np.zeros(size)
    active = np.flatnonzero(excess(np.zeros(size), *args) > 0)
    lo, hi = np.zeros(active.size), np.ones(active.size)
    growing = np.arange(active.size)
    while growing.size:
        above = excess(hi[growing], *(a[active[growing]] for a in args)) > 0
        growing = growing[above & (hi[growing] <= _HUGE)]
        lo[growing], hi[growing] = hi[growing], 2 * hi[growing]
    endless = hi > _HUGE
    eps[active[endless]] = math.inf
    active, lo, hi = active[~endless], lo[~endless], hi[~endless]
    if active.size:

        def signed(e: np.ndarray, *problem: np.ndarray) -> np.ndarray:
            """The excess with exact zeros made negative: it changes sign at the smallest
            eps where the excess is <= 0, even where it is 0 over a stretch."""
            value = excess(e, *problem)
            return np.where(value > 0, value, np.minimum(value, -np.finfo(np.float64).tiny))

        found = elementwise.find_root(
            signed,
            (lo, hi),
            args=tuple(a[active] for a in args),
            tolerances={"xatol": _TOLERANCE, "xrtol": _TOLERANCE, "fatol": 0.0},
        )
        eps[active] = found.bracket[1]  # the end where the excess is <= 0
    return eps
