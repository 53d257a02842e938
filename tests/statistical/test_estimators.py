"""Statistical tests of the empirical-epsilon estimators against independent ground truth.

Ground truth comes from formulas written out here with scipy.stats (Dong-Roth-Su for
mu-GDP, Clopper-Pearson through beta quantiles and binomtest, numerical integration of the
hockey-stick divergence), never from the package's own helpers.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from fedsim.canaries import EpsilonEstimate, empirical_epsilon, estimators

DELTA = 1e-5


# ----------------------------------------------------------------- independent references


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
    grid = np.linspace(lo, hi, 40_001)
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


def reference_two_normals_epsilon(p, q, delta: float) -> float:
    """Smallest eps with both hockey-stick divergences <= delta, by quadrature and brentq."""

    def excess(eps: float) -> float:
        return max(brute_force_hockey_stick(p, q, eps), brute_force_hockey_stick(q, p, eps)) - delta

    return optimize.brentq(excess, 0.0, 50.0, xtol=1e-6)


def cp_interval(k: np.ndarray, n: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Clopper-Pearson interval for k successes of n, via beta quantiles."""
    k = np.asarray(k, dtype=float)
    tail = (1 - level) / 2
    with np.errstate(invalid="ignore"):
        low = np.where(k > 0, stats.beta.ppf(tail, k, n - k + 1), 0.0)
        high = np.where(k < n, stats.beta.ppf(1 - tail, k + 1, n - k), 1.0)
    return low, high


def eps_of_rates(fpr, fnr, delta: float):
    """log max((1-delta-FPR)/FNR, (1-delta-FNR)/FPR), clamped at 0, x/0 = inf for x > 0."""
    fpr, fnr = np.asarray(fpr, dtype=float), np.asarray(fnr, dtype=float)
    out = np.zeros(np.broadcast(fpr, fnr).shape)
    for num, den in ((1 - delta - fpr, fnr), (1 - delta - fnr, fpr)):
        ratio = np.full(out.shape, -np.inf)
        positive = num > 0
        ratio[positive & (den == 0)] = np.inf
        finite = positive & (den > 0)
        ratio[finite] = np.log(num[finite] / den[finite])
        out = np.maximum(out, ratio)
    return out


def reference_threshold_sweep(with_, without, delta: float, confidence: float):
    """Per-threshold rates and CP bounds, one threshold per unique score (attack: score > t)."""
    with_, without = np.asarray(with_), np.asarray(without)
    values = np.concatenate([with_, without])
    is_with = np.concatenate([np.ones(with_.size, int), np.zeros(without.size, int)])
    order = np.argsort(values, kind="stable")
    values, is_with = values[order], is_with[order]
    thresholds, first = np.unique(values, return_index=True)
    last = np.append(first[1:], values.size) - 1  # last position of each unique score
    fn = np.cumsum(is_with)[last]  # with-scores at or below t
    fp = without.size - np.cumsum(1 - is_with)[last]  # without-scores above t
    level = 1 - (1 - confidence) / 2  # each rate's interval, so both hold at `confidence`
    fpr_lo, fpr_hi = cp_interval(fp, without.size, level)
    fnr_lo, fnr_hi = cp_interval(fn, with_.size, level)
    lower = eps_of_rates(fpr_hi, fnr_hi, delta)
    upper = eps_of_rates(fpr_lo, fnr_lo, delta)
    point = eps_of_rates(fp / without.size, fn / with_.size, delta)
    return thresholds, lower, point, upper


def cp_cap(n: int, delta: float, confidence: float) -> float:
    """Largest possible threshold lower bound with n scores per side: zero errors of both kinds.

    The CP upper limit of a rate with 0 of n at two-sided level 1 - a is 1 - (a/2)^(1/n).
    """
    u = 1 - ((1 - confidence) / 4) ** (1 / n)
    return math.log((1 - delta - u) / u)


def gaussian_scores(seed: int, mu: float, n_with: int, n_without: int | None = None):
    rng = np.random.default_rng(seed)
    return rng.normal(mu, 1.0, n_with), rng.normal(0.0, 1.0, n_without or n_with)


# ------------------------------------------------------------------ gaussian-fit estimator


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0])
def test_gaussian_method_recovers_gdp_epsilon(mu):
    with_, without = gaussian_scores(seed=int(mu * 10), mu=mu, n_with=100_000)
    truth = reference_gdp_epsilon(mu, DELTA)
    est = empirical_epsilon(with_, without, delta=DELTA, method="gaussian")
    assert est.method == "gaussian" and est.threshold is None
    assert est.epsilon == pytest.approx(truth, rel=0.05)
    assert est.lower <= est.epsilon <= est.upper
    assert est.upper - est.lower < 0.2 * truth  # 100,000 scores pin it down


def test_gaussian_method_fits_each_side_separately():
    # Unequal true variances: the estimate must approach the epsilon of the true pair (by
    # quadrature here), not of an equal-variance pair.
    rng = np.random.default_rng(21)
    with_, without = rng.normal(1.0, 1.5, 100_000), rng.normal(0.0, 1.0, 100_000)
    truth = reference_two_normals_epsilon(stats.norm(1.0, 1.5), stats.norm(0.0, 1.0), DELTA)
    assert truth > 2 * reference_gdp_epsilon(1.0, DELTA)  # far from either equal-variance value
    est = empirical_epsilon(with_, without, delta=DELTA, method="gaussian", n_bootstrap=20)
    assert est.epsilon == pytest.approx(truth, rel=0.05)


def test_gaussian_method_interval_covers_the_truth():
    # The fit is biased upwards at small delta; the interval must still cover the truth at
    # about its confidence level (the plain percentile interval managed ~75-80% here).
    mu, n, trials = 1.0, 500, 30
    truth = reference_gdp_epsilon(mu, DELTA)
    covered = 0
    for seed in range(trials):
        with_, without = gaussian_scores(seed=seed, mu=mu, n_with=n)
        est = empirical_epsilon(with_, without, delta=DELTA, method="gaussian", n_bootstrap=100, seed=seed)
        covered += est.lower <= truth <= est.upper
    assert covered / trials >= 0.85


def test_gaussian_method_is_seeded():
    with_, without = gaussian_scores(seed=3, mu=1.0, n_with=300)
    a = empirical_epsilon(with_, without, delta=DELTA, method="gaussian", seed=7)
    b = empirical_epsilon(with_, without, delta=DELTA, method="gaussian", seed=7)
    c = empirical_epsilon(with_, without, delta=DELTA, method="gaussian", seed=8)
    assert a == b
    assert a.epsilon == c.epsilon and (a.lower, a.upper) != (c.lower, c.upper)


# ------------------------------------------------------------------- threshold estimator


@pytest.mark.parametrize(
    ("n_with", "n_without", "mu", "rounding"),
    [(37, 61, 1.0, 1), (60, 25, 0.0, None), (3_000, 20_000, 1.0, None), (20_000, 3_000, 0.0, 2)],
)
@pytest.mark.parametrize("delta", [1e-5, 0.05])
@pytest.mark.parametrize("grid_points", [None, 12])
def test_threshold_sweep_matches_reference(n_with, n_without, mu, rounding, delta, grid_points, monkeypatch):
    # Unequal counts catch CANIFE's mix-up (FPR's interval over the with-count); rounding
    # makes ties, which pin down "FNR counts scores at or below t". The sweep computes
    # exact CP limits on a grid of counts and refines; a very coarse grid must change
    # nothing but the speed.
    if grid_points is not None:
        monkeypatch.setattr(estimators, "_CP_GRID_POINTS", grid_points)
    with_, without = gaussian_scores(seed=n_with + n_without, mu=mu, n_with=n_with, n_without=n_without)
    if rounding is not None:
        with_, without = np.round(with_, rounding), np.round(without, rounding)
    est = empirical_epsilon(with_, without, delta=delta, confidence=0.9)
    thresholds, lower, point, upper = reference_threshold_sweep(with_, without, delta, 0.9)

    assert est.method == "threshold"
    assert est.lower == pytest.approx(lower.max(), rel=1e-9, abs=1e-12)
    # The reported threshold is one of the best ones; point and upper are read off it.
    k = np.searchsorted(thresholds, est.threshold, side="right") - 1
    assert lower[k] == pytest.approx(lower.max(), rel=1e-9, abs=1e-12)
    assert est.epsilon == pytest.approx(point[k], rel=1e-9, abs=1e-12)
    assert est.upper == pytest.approx(upper[k], rel=1e-9, abs=1e-12)
    assert est.lower <= est.epsilon <= est.upper


def test_threshold_sweep_matches_binomtest_on_small_samples():
    # Scipy's own Clopper-Pearson ("exact") interval, one threshold at a time.
    with_, without = gaussian_scores(seed=11, mu=1.5, n_with=23, n_without=41)
    confidence = 0.95
    best = 0.0
    for t in np.unique(np.concatenate([with_, without])):
        fp = int((without > t).sum())
        fn = int((with_ <= t).sum())
        level = 1 - (1 - confidence) / 2
        fpr_hi = stats.binomtest(fp, without.size).proportion_ci(level, method="exact").high
        fnr_hi = stats.binomtest(fn, with_.size).proportion_ci(level, method="exact").high
        best = max(best, float(eps_of_rates(fpr_hi, fnr_hi, DELTA)))
    est = empirical_epsilon(with_, without, delta=DELTA, confidence=confidence)
    assert est.lower == pytest.approx(best, rel=1e-8)
    assert best > 0  # the comparison is not vacuous


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0, 3.0])
def test_threshold_lower_bound_never_exceeds_exact_epsilon(mu):
    truth = reference_gdp_epsilon(mu, DELTA)
    for seed in range(8):
        with_, without = gaussian_scores(seed=seed, mu=mu, n_with=2_000)
        assert empirical_epsilon(with_, without, delta=DELTA).lower <= truth


def test_threshold_lower_bound_coverage_where_it_is_tight():
    # At delta 0.05 the optimal test of N(1,1) vs N(0,1) has FPR ~ 2%, well inside 1,000
    # samples, so the bound comes close to the truth; it may exceed it only about as often
    # as its confidence level allows (each threshold's bound fails with prob <= 2.5%; the
    # maximum over thresholds adds a little).
    mu, delta, trials = 1.0, 0.05, 200
    truth = reference_gdp_epsilon(mu, delta)
    lowers = np.array(
        [empirical_epsilon(*gaussian_scores(seed=s, mu=mu, n_with=1_000), delta=delta).lower for s in range(trials)]
    )
    assert np.mean(lowers > truth) <= 0.05
    assert np.median(lowers) > 0.6 * truth  # and it is not vacuous


@pytest.mark.parametrize(("mu", "delta"), [(0.5, 0.05), (1.0, 0.05), (1.0, 0.01)])
def test_threshold_estimate_recovers_truth_when_the_optimal_test_is_sampled(mu, delta):
    # With 100,000 scores per side and a delta whose optimal threshold has an FPR of a few
    # percent, the sweep sees the optimal test: the estimate lands near the exact epsilon.
    truth = reference_gdp_epsilon(mu, delta)
    est = empirical_epsilon(*gaussian_scores(seed=5, mu=mu, n_with=100_000), delta=delta)
    assert est.epsilon == pytest.approx(truth, rel=0.05)
    assert 0.85 * truth <= est.lower <= truth
    assert est.lower <= est.epsilon <= est.upper


def test_threshold_estimate_saturates_with_few_samples():
    # mu = 3 has eps 16.7 at delta 1e-5, but 100 scores per side cannot show that much:
    # a finite plug-in ratio has a rate >= 1/100 in its denominator, so eps <= log(100),
    # and no lower bound exceeds the one of a perfect separation.
    cap = cp_cap(100, DELTA, 0.95)
    assert 3.0 < cap < math.log(100)
    for seed in range(20):
        est = empirical_epsilon(*gaussian_scores(seed=seed, mu=3.0, n_with=100), delta=DELTA)
        assert est.epsilon == math.inf or est.epsilon <= math.log(100)
        assert est.lower <= cap + 1e-12


@pytest.mark.parametrize("n", [100, 1_000, 10_000])
def test_perfect_separation(n):
    rng = np.random.default_rng(n)
    without = rng.uniform(-1.0, 0.0, n)
    with_ = rng.uniform(0.5, 1.5, n)
    est = empirical_epsilon(with_, without, delta=DELTA)
    assert est.epsilon == math.inf
    assert est.upper == math.inf
    # Zero errors of both kinds: the CP upper limit of each rate is 1 - (alpha/4)^(1/n).
    assert est.lower == pytest.approx(cp_cap(n, DELTA, 0.95), rel=1e-9)
    assert without.max() < est.threshold < with_.min()
    if n >= 1_000:
        assert est.lower > 5


def test_perfect_separation_bound_grows_with_samples():
    bounds = [empirical_epsilon(np.ones(n), np.zeros(n), delta=DELTA).lower for n in (100, 1_000, 10_000)]
    assert bounds[0] < bounds[1] < bounds[2] < math.inf


def test_no_evidence_gives_a_finite_point_estimate():
    # With 100 scores per side from one distribution the bound is almost always 0. The
    # point estimate then comes from the most accurate threshold at which both errors occur:
    # an error count of 0 would make it inf, which would be no estimate at all.
    no_evidence = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        est = empirical_epsilon(rng.normal(0, 1, 100), rng.normal(0, 1, 100), delta=DELTA)
        if est.lower == 0:
            no_evidence += 1
            assert est.epsilon < math.log(100)
    assert no_evidence >= 50


def test_identical_distributions_show_no_privacy_loss():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        with_, without = rng.normal(0, 1, 10_000), rng.normal(0, 1, 10_000)
        est = empirical_epsilon(with_, without, delta=DELTA)
        assert est.lower <= 0.05
        assert est.epsilon < 0.3
    rng = np.random.default_rng(99)
    with_, without = rng.normal(0, 1, 100_000), rng.normal(0, 1, 100_000)
    est = empirical_epsilon(with_, without, delta=DELTA, method="gaussian")
    assert est.epsilon < 0.1
    assert est.lower == pytest.approx(0.0, abs=0.02)


def test_gaussian_method_perfect_separation_is_infinite():
    est = empirical_epsilon(np.ones(50), np.zeros(50), delta=DELTA, method="gaussian")
    assert est.epsilon == math.inf and est.upper == math.inf


def test_estimate_is_a_frozen_value():
    est = empirical_epsilon([1.0, 2.0, 3.0], [0.0, 0.5, 1.5], delta=DELTA)
    assert isinstance(est, EpsilonEstimate)
    assert all(isinstance(v, float) for v in (est.epsilon, est.lower, est.upper, est.threshold))
    with pytest.raises(dataclasses.FrozenInstanceError):
        est.epsilon = 0.0  # type: ignore[misc]


# ----------------------------------------------------------------------------- bad input

GOOD = np.array([0.1, 0.2, 0.3])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"scores_with": []}, "scores_with"),
        ({"scores_without": np.array([])}, "scores_without"),
        ({"scores_with": [0.1, np.nan]}, "scores_with"),
        ({"scores_without": [0.1, np.inf]}, "scores_without"),
        ({"scores_with": np.ones((2, 2))}, "scores_with"),
        ({"scores_with": ["a", "b"]}, "scores_with"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"delta": -1e-5}, "delta"),
        ({"delta": math.nan}, "delta"),
        ({"confidence": 0.0}, "confidence"),
        ({"confidence": 1.0}, "confidence"),
        ({"confidence": 95}, "confidence"),
        ({"method": "canife"}, "method"),
        ({"method": "gaussian", "scores_with": [1.0]}, "gaussian"),
        ({"method": "gaussian", "n_bootstrap": 0}, "n_bootstrap"),
    ],
)
def test_empirical_epsilon_rejects_bad_input(kwargs, name):
    args = {"scores_with": GOOD, "scores_without": GOOD - 1, "delta": DELTA, **kwargs}
    with_, without = args.pop("scores_with"), args.pop("scores_without")
    with pytest.raises(ValueError, match=name) as info:
        empirical_epsilon(with_, without, **args)
    assert "\n" not in str(info.value)
