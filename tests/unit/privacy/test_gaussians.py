"""Tests of fedsim.privacy.gaussians against independent references.

References: the mu-GDP curve of Dong, Roth & Su (2019, Cor. 2.13) written out here with
scipy.stats and solved directly, and the hockey-stick divergence by numerical quadrature.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from fedsim.privacy.gaussians import _solve_decreasing, gaussians_epsilon, gaussians_epsilons

DELTA = 1e-5


def reference_gdp_epsilon(mu: float, delta: float) -> float:
    """Dong, Roth & Su (2019), Cor. 2.13, written out with scipy.stats.norm and solved directly."""

    def excess(eps: float) -> float:
        return stats.norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2) - delta

    return optimize.brentq(excess, 0.0, 700.0, xtol=1e-13, maxiter=500)


def brute_force_hockey_stick(p, q, eps: float) -> float:
    """Integral of max(0, p(x) - e^eps q(x)) dx by quadrature (crossings found on a grid)."""
    scale = max(p.std(), q.std())
    lo = min(p.mean(), q.mean()) - 40 * scale
    hi = max(p.mean(), q.mean()) + 40 * scale
    gamma = math.exp(eps)
    grid = np.linspace(lo, hi, 400_001)
    diff = p.pdf(grid) - gamma * q.pdf(grid)
    crossings = grid[np.flatnonzero(np.diff(np.sign(diff)))]
    value, _ = integrate.quad(
        lambda x: max(0.0, p.pdf(x) - gamma * q.pdf(x)),
        lo,
        hi,
        points=crossings,
        limit=1000,
        epsabs=1e-15,
        epsrel=1e-10,
    )
    return value


def two_gaussians(**overrides: float) -> float:
    args = {"mu_in": 1.0, "sigma_in": 1.0, "mu_out": 0.0, "sigma_out": 1.0, "delta": DELTA}
    return gaussians_epsilon(**{**args, **overrides})


# ------------------------------------------------------------- equal variances: mu-GDP


@pytest.mark.parametrize("mu", [0.1, 0.5, 1.0, 2.0, 4.0, 25.0])
@pytest.mark.parametrize("delta", [1e-2, 1e-5, 1e-9])
def test_equal_variances_are_gdp(mu, delta):
    expected = reference_gdp_epsilon(mu, delta)
    assert gaussians_epsilon(mu_in=mu, sigma_in=1.0, mu_out=0.0, sigma_out=1.0, delta=delta) == pytest.approx(
        expected, rel=1e-7
    )


@pytest.mark.parametrize(("mu_in", "mu_out", "sigma"), [(1.0, 0.0, 1.0), (0.3, -0.2, 0.5), (-3.0, 1.0, 2.0)])
def test_equal_variances_depend_on_the_shift_over_sigma_only(mu_in, mu_out, sigma):
    expected = reference_gdp_epsilon(abs(mu_in - mu_out) / sigma, DELTA)
    got = gaussians_epsilon(mu_in=mu_in, sigma_in=sigma, mu_out=mu_out, sigma_out=sigma, delta=DELTA)
    assert got == pytest.approx(expected, rel=1e-7)
    # A hair's difference in variance takes the quadratic (unequal-variance) route and must
    # agree: the two computations meet continuously.
    for hair in (1e-7, 1e-12, 1e-14):
        nearly = gaussians_epsilon(
            mu_in=mu_in, sigma_in=sigma * (1 + hair), mu_out=mu_out, sigma_out=sigma, delta=DELTA
        )
        assert nearly == pytest.approx(expected, rel=1e-5)


def test_known_value_of_the_gaussian_mechanism():
    # Gaussian mechanism with sensitivity 1 and sigma 1 (analytic calibration, Balle & Wang
    # 2018): epsilon 4.38 at delta 1e-5.
    assert two_gaussians() == pytest.approx(4.38, abs=0.005)


def test_equal_variance_edges():
    # delta(0) = 2 Phi(mu/2) - 1 is the total variation distance: at or above it, eps is 0.
    tv = 2 * stats.norm.cdf(0.25) - 1
    assert two_gaussians(mu_in=0.5, delta=tv * 1.001) == 0.0
    assert two_gaussians(mu_in=0.5, delta=tv * 0.999) > 0.0
    # Monotone: more separation or a smaller delta never gives a smaller epsilon.
    mus = [0.2, 0.5, 1, 2, 5]
    assert np.all(np.diff([two_gaussians(mu_in=m) for m in mus]) > 0)
    deltas = [1e-2, 1e-4, 1e-6, 1e-8]
    assert np.all(np.diff([two_gaussians(delta=d) for d in deltas]) > 0)


def test_arrays_of_pairs_are_solved_each_on_its_own():
    # One call over a mix of every case: unequal variances (against quadrature), equal
    # variances (against the GDP curve), identical pairs and point masses.
    mu_in = np.array([1.0, 0.3, 1.0, 0.0, 1.0, 2.0])
    sigma_in = np.array([1.5, 0.7, 1.0, 1.0, 0.0, 1.0])
    mu_out = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    sigma_out = np.array([1.0, 1.2, 1.0, 1.0, 1.0, 1.1])
    got = gaussians_epsilons(mu_in=mu_in, sigma_in=sigma_in, mu_out=mu_out, sigma_out=sigma_out, delta=DELTA)
    assert got.shape == (6,)
    for i in (0, 1, 5):
        p, q = stats.norm(mu_in[i], sigma_in[i]), stats.norm(mu_out[i], sigma_out[i])
        reached = max(brute_force_hockey_stick(p, q, got[i]), brute_force_hockey_stick(q, p, got[i]))
        assert reached == pytest.approx(DELTA, rel=1e-5)
    assert got[2] == pytest.approx(reference_gdp_epsilon(1.0, DELTA), rel=1e-6)
    assert got[3] == 0.0 and got[4] == math.inf
    # the 2-D shape of the input is kept
    grid = gaussians_epsilons(mu_in=mu_in.reshape(2, 3), sigma_in=1.5, mu_out=0.0, sigma_out=1.0, delta=DELTA)
    assert grid.shape == (2, 3) and grid[0, 0] == got[0]


def test_the_solver_returns_the_smallest_eps_where_the_excess_is_not_positive():
    # A non-increasing excess that is exactly 0 on [root, root + flat] and negative past
    # it, as a computed hockey stick can round to exactly delta: the answer is the root
    # (the smallest such eps), not another point of the flat stretch; one element is never
    # positive (0), one never reaches 0 (inf).
    root = np.array([0.0, 0.3, 6.94, 21.5, 290.3, 1e301])
    flat = np.array([1.0, 0.5, 3.0, 1e-3, 40.0, 0.0])

    def excess(eps, root, flat):
        return np.where(eps < root, root - eps, np.where(eps <= root + flat, 0.0, root + flat - eps))

    got = _solve_decreasing(excess, (root, flat))
    assert got[:5] == pytest.approx(root[:5], rel=1e-12, abs=1e-12)
    assert got[5] == math.inf


# ------------------------------------------------------------------- unequal variances


@pytest.mark.parametrize(
    ("mu_in", "sigma_in", "mu_out", "sigma_out"),
    [(1.0, 1.5, 0.0, 1.0), (0.3, 0.7, 0.0, 1.2), (2.0, 1.0, 0.0, 1.1), (0.0, 2.0, 0.0, 1.0)],
)
def test_symmetric_in_swapping_in_and_out(mu_in, sigma_in, mu_out, sigma_out):
    forward = gaussians_epsilon(mu_in=mu_in, sigma_in=sigma_in, mu_out=mu_out, sigma_out=sigma_out, delta=DELTA)
    backward = gaussians_epsilon(mu_in=mu_out, sigma_in=sigma_out, mu_out=mu_in, sigma_out=sigma_in, delta=DELTA)
    assert forward == pytest.approx(backward, rel=1e-10)


@pytest.mark.parametrize(
    ("mu_in", "sigma_in", "mu_out", "sigma_out", "delta"),
    [
        (1.0, 1.5, 0.0, 1.0, 1e-3),
        (0.3, 0.7, 0.0, 1.2, 1e-5),
        (2.0, 1.0, 0.0, 1.1, 1e-5),
        (0.0, 2.0, 0.0, 1.0, 1e-4),
    ],
)
def test_matches_numerical_integration(mu_in, sigma_in, mu_out, sigma_out, delta):
    eps = gaussians_epsilon(mu_in=mu_in, sigma_in=sigma_in, mu_out=mu_out, sigma_out=sigma_out, delta=delta)
    p = stats.norm(mu_in, sigma_in)
    q = stats.norm(mu_out, sigma_out)

    def divergence(e: float) -> float:
        return max(brute_force_hockey_stick(p, q, e), brute_force_hockey_stick(q, p, e))

    # At the returned epsilon the worse direction sits exactly at delta; a little less
    # epsilon exceeds delta, a little more stays below it.
    assert divergence(eps) == pytest.approx(delta, rel=1e-5)
    assert divergence(eps - 0.01) > delta
    assert divergence(eps + 0.01) < delta


def test_unequal_variances_leak_more_than_equal_ones():
    # Same means: with equal variances the distributions coincide (eps 0); with unequal
    # variances they differ, so some event separates them and eps > 0.
    assert gaussians_epsilon(mu_in=0, sigma_in=1, mu_out=0, sigma_out=1, delta=DELTA) == 0.0
    assert gaussians_epsilon(mu_in=0, sigma_in=1.5, mu_out=0, sigma_out=1, delta=DELTA) > 0.5
    # Different means: with unequal variances the privacy loss log p/q is quadratic in x, so
    # its tail decays only exponentially, against the Gaussian tail of the linear loss of
    # equal variances. At small delta eps must therefore exceed both equal-variance pairs
    # (sigma = sigma_in and sigma = sigma_out) with the same means, and the gap must grow as
    # delta shrinks.
    for sigma_in in (0.8, 1.25):
        gaps = []
        for delta in (1e-5, 1e-8):
            unequal = gaussians_epsilon(mu_in=1.0, sigma_in=sigma_in, mu_out=0.0, sigma_out=1.0, delta=delta)
            equal = max(reference_gdp_epsilon(1.0, delta), reference_gdp_epsilon(1 / sigma_in, delta))
            assert unequal > equal
            gaps.append(unequal - equal)
        assert gaps[1] > gaps[0]


def test_degenerate_cases():
    same = {"mu_in": 0.5, "sigma_in": 2.0, "mu_out": 0.5, "sigma_out": 2.0}
    assert gaussians_epsilon(**same, delta=DELTA) == 0.0
    assert gaussians_epsilon(mu_in=1, sigma_in=0, mu_out=1, sigma_out=0, delta=DELTA) == 0.0
    assert gaussians_epsilon(mu_in=1, sigma_in=0, mu_out=0, sigma_out=0, delta=DELTA) == math.inf
    # A point mass against a density: the point itself has mass 1 against 0.
    assert gaussians_epsilon(mu_in=0, sigma_in=0, mu_out=0, sigma_out=1, delta=DELTA) == math.inf


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"sigma_in": -1.0}, "sigma_in"),
        ({"sigma_out": math.inf}, "sigma_out"),
        ({"mu_in": math.nan}, "mu_in"),
        ({"mu_out": -math.inf}, "mu_out"),
        ({"delta": 1.5}, "delta"),
        ({"delta": 0.0}, "delta"),
        ({"delta": math.nan}, "delta"),
    ],
)
def test_rejects_bad_input(overrides, name):
    with pytest.raises(ValueError, match=name):
        two_gaussians(**overrides)
