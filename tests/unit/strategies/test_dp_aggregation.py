"""DP aggregation: clipping, the noise actually added, and division by the expected cohort."""

import numpy as np
import pytest
from scipy import stats

from fedsim.config import scenario_from_dict
from fedsim.errors import ScenarioError
from fedsim.privacy import DpMechanism
from fedsim.strategies import build_aggregator
from fedsim.strategies.aggregation import ContributionRule, clip_updates, prepare_update
from fedsim.strategies.dp import AdaptiveClippingAggregator, FixedClippingAggregator, PlainAggregator


def _prepared(aggregator, updates):
    """The updates (n, d) as the nodes prepare them under the aggregator's rule."""
    norms = np.linalg.norm(updates, axis=1)
    rows = [prepare_update(u, norm=n, rule=aggregator.rule) for u, n in zip(updates, norms)]
    return np.array(rows).reshape(updates.shape), norms


def _aggregate(aggregator, updates, *, rng, weights=None, reported_norms=None):
    """What a round does with these updates: the nodes prepare and sum, the strategy releases."""
    prepared, norms = _prepared(aggregator, updates)
    weights = np.ones(len(updates)) if weights is None or not aggregator.rule.by_examples else weights
    return aggregator.aggregate(
        total=weights @ prepared if len(updates) else np.zeros(updates.shape[1]),
        weight=float(weights.sum()),
        norms=norms if reported_norms is None else reported_norms,
        rng=rng,
    )


def test_clip_updates_clips_each_update_to_the_norm():
    updates = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 10.0]])  # norms 5, 0.5, 10
    np.testing.assert_allclose(clip_updates(updates, clip_norm=1.0), [[0.6, 0.8], [0.3, 0.4], [0.0, 1.0]])


def _aggregator(mode: str, *, z: float, clip: float = 0.5, cohort: float = 6):
    if mode == "adaptive":
        return AdaptiveClippingAggregator(
            noise_multiplier=z,
            initial_clip_norm=clip,
            expected_cohort=cohort,
            target_quantile=0.5,
            clip_lr=0.2,
            count_noise_std=2.0,
        )
    return FixedClippingAggregator(
        noise_multiplier=z, clip_norm=clip, expected_cohort=cohort, clip_on_server=mode == "server"
    )


@pytest.mark.parametrize("mode", ["server", "client", "adaptive"])
def test_release_is_each_cohorts_clipped_sum_plus_fresh_noise_of_the_declared_std(mode):
    """The one release function (used by the real round and the audit): for each cohort,
    the clipped sum (computed here with numpy) plus N(0, s^2) noise, fresh per cohort."""
    rng = np.random.default_rng(5)
    dim, z, clip = 50_000, 1.3, 0.5
    updates = rng.normal(size=(6, dim)) * 0.01  # norms ~2.4: all above the clip norm
    if mode == "client":
        updates = updates * (clip / np.linalg.norm(updates, axis=1, keepdims=True))  # the clients clipped
    aggregator = _aggregator(mode, z=z, clip=clip)
    include = np.array([[1, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=bool)
    released = aggregator.release(_prepared(aggregator, updates)[0], include=include, rng=rng)
    norms = np.linalg.norm(updates, axis=1, keepdims=True)
    clipped = updates * np.minimum(1.0, clip / norms)
    noise = released - include.astype(float) @ clipped
    declared = (aggregator.update_noise_multiplier if mode == "adaptive" else z) * clip
    assert declared == pytest.approx(aggregator.release_std)
    for row in noise:  # std over 50,000 coordinates: relative standard error 0.3%
        assert row.std() == pytest.approx(declared, rel=0.02) and abs(row.mean()) < 0.02 * declared
    assert abs(np.corrcoef(noise)[0, 1]) < 0.02  # fresh noise for each cohort


def test_projected_release_has_the_distribution_of_the_projected_full_release():
    """The audit's projected replays: exact projected sums, and noise of the release's std."""
    rng = np.random.default_rng(2)
    updates = clip_updates(rng.normal(size=(5, 40)), clip_norm=0.8)  # prepared by the nodes
    direction = rng.normal(size=40)
    direction /= np.linalg.norm(direction)
    include = rng.random((7, 5)) < 0.5
    exact = _aggregator("server", z=0.0, clip=0.8, cohort=5)
    np.testing.assert_allclose(
        exact.release(updates, include=include, direction=direction, rng=rng),
        exact.release(updates, include=include, rng=rng) @ direction,
    )
    noisy = _aggregator("server", z=1.3, clip=0.8, cohort=5)
    many = np.ones((20_000, 5), dtype=bool)
    projected = noisy.release(updates, include=many, direction=direction, rng=rng)
    full = noisy.release(updates, include=many[:4000], rng=rng) @ direction
    clean = updates.sum(axis=0) @ direction
    assert stats.ks_2samp(projected, full).pvalue > 1e-3
    assert projected.std() == pytest.approx(1.3 * 0.8, rel=0.03)
    assert projected.mean() == pytest.approx(clean, abs=4 * 1.3 * 0.8 / np.sqrt(20_000))


class HalfNoise(FixedClippingAggregator):
    """A buggy release: half the noise it declares."""

    def release(self, updates, *, include, rng, direction=None):
        clean = FixedClippingAggregator(
            noise_multiplier=0.0, clip_norm=self.clip_norm, expected_cohort=1, clip_on_server=True
        )
        sums = clean.release(updates, include=include, rng=rng, direction=direction)
        return sums + rng.normal(0.0, self.release_std / 2, size=sums.shape)


def test_the_real_round_releases_through_the_release_function():
    """A bug in release reaches the real aggregate (and so cannot hide from the audit, which
    replays the same function: tests/statistical/test_canary_audit.py)."""
    z, c, m, dim = 1.0, 1.0, 4, 100_000
    buggy = HalfNoise(noise_multiplier=z, clip_norm=c, expected_cohort=m, clip_on_server=True)
    result = _aggregate(buggy, np.zeros((3, dim)), rng=np.random.default_rng(0))
    assert result.mean_update.std() == pytest.approx(z * c / m / 2, rel=0.02)


@pytest.mark.parametrize("mode", ["server", "client", "adaptive", "none", "local"])
def test_an_empty_cohort_releases_noise_over_the_expected_cohort(mode):
    """An empty Poisson cohort is a normal round: the release is noise / m."""
    z, c, m, dim = 1.0, 0.5, 4, 100_000
    rng = np.random.default_rng(3)
    if mode in ("none", "local"):
        aggregator = PlainAggregator(uniform=mode == "local")
        expected = 0.0
    else:
        aggregator = _aggregator(mode, z=z, clip=c, cohort=m)
        expected = aggregator.release_std / m
    result = _aggregate(aggregator, np.zeros((0, dim)), rng=rng)
    assert result.mean_update.shape == (dim,)
    assert result.mean_update.std() == pytest.approx(expected, rel=0.02, abs=1e-12)
    assert result.noise_std == pytest.approx(expected) and result.clip_fraction is None


def test_adaptive_release_adds_noise_with_std_z_u_times_c():
    aggregator = AdaptiveClippingAggregator(
        noise_multiplier=1.0,
        initial_clip_norm=0.4,
        expected_cohort=10,
        target_quantile=0.5,
        clip_lr=0.2,
        count_noise_std=1.0,
    )
    result = _aggregate(aggregator, np.zeros((3, 100_000)), rng=np.random.default_rng(0))
    z_u = (1.0**-2 - (2 * 1.0) ** -2) ** -0.5  # the count release takes the rest of z
    assert result.mean_update.std() == pytest.approx(z_u * 0.4 / 10, rel=0.01)


def test_adaptive_clip_norm_step_follows_the_geometric_rule():
    aggregator = AdaptiveClippingAggregator(
        noise_multiplier=0.0,
        initial_clip_norm=1.0,
        expected_cohort=4,
        target_quantile=0.5,
        clip_lr=0.2,
        count_noise_std=1.0,
    )
    updates = np.full((4, 2), 10.0)  # all above C: fraction below = 0 -> C * exp(0.2 * 0.5)
    _aggregate(aggregator, updates, rng=np.random.default_rng(0))
    assert aggregator.clip_norm == pytest.approx(np.exp(0.1))


def test_server_fixed_noise_std_on_the_average_is_z_c_over_cohort():
    """Statistically: zero updates leave only the noise; its std must be z*C/m."""
    z, c, m, dim = 1.3, 0.7, 10, 200_000
    aggregator = FixedClippingAggregator(noise_multiplier=z, clip_norm=c, expected_cohort=m, clip_on_server=True)
    updates = np.zeros((7, dim))  # a Poisson cohort of 7 while 10 were expected
    result = _aggregate(aggregator, updates, rng=np.random.default_rng(0))
    expected = z * c / m
    # std estimate over 200k coordinates has relative standard error ~ 1/sqrt(2*dim) = 0.16%
    assert result.mean_update.std() == pytest.approx(expected, rel=0.01)
    assert abs(result.mean_update.mean()) < 5 * expected / np.sqrt(dim)
    assert result.noise_std == pytest.approx(expected)


def test_noisy_sum_is_divided_by_expected_not_realised_cohort():
    dim = 5
    aggregator = FixedClippingAggregator(noise_multiplier=0.0, clip_norm=10.0, expected_cohort=4, clip_on_server=True)
    updates = np.ones((2, dim))
    result = _aggregate(aggregator, updates, weights=np.array([1.0, 100.0]), rng=np.random.default_rng(0))
    np.testing.assert_allclose(result.mean_update, np.full(dim, 2 / 4))  # sum / expected, equal weights


def test_clip_fraction_and_clipping_bound_the_contribution():
    rng = np.random.default_rng(1)
    updates = rng.normal(size=(10, 50))
    norms = np.linalg.norm(updates, axis=1)
    clip = float(np.median(norms))
    aggregator = FixedClippingAggregator(noise_multiplier=0.0, clip_norm=clip, expected_cohort=10, clip_on_server=True)
    result = _aggregate(aggregator, updates, rng=rng)
    assert result.clip_fraction == pytest.approx(np.mean(norms > clip))
    # one client's influence on the average is bounded by C / m
    changed = updates.copy()
    changed[0] *= 1000
    other = _aggregate(aggregator, changed, rng=rng)
    assert np.linalg.norm(other.mean_update - result.mean_update) <= 2 * clip / 10 + 1e-9


def test_client_side_mode_asks_each_client_to_clip_and_counts_the_reported_norms():
    aggregator = FixedClippingAggregator(noise_multiplier=0.0, clip_norm=1.0, expected_cohort=2, clip_on_server=False)
    assert aggregator.rule == ContributionRule(clip_norm=1.0, client_clips=True)
    clipped = np.array([[0.6, 0.8], [0.0, 0.5]])  # what the two clients sent
    result = aggregator.aggregate(
        total=clipped.sum(axis=0), weight=2.0, norms=np.array([7.0, 0.5]), rng=np.random.default_rng(0)
    )
    np.testing.assert_allclose(result.mean_update, clipped.sum(axis=0) / 2)  # the sum is not clipped again
    assert result.clip_fraction == 0.5  # from the norms the clients reported before clipping
    assert _build({"dp": {"mode": "server_fixed"}}).rule == ContributionRule(clip_norm=1.0)
    assert _build({"dp": {"mode": "none"}}).rule == ContributionRule(by_examples=True)
    assert _build({"dp": {"mode": "local_dpsgd"}}).rule == ContributionRule()


def test_plain_fedavg_weights_by_examples_and_local_dp_weighs_uniformly():
    updates = np.array([[1.0], [4.0]])
    weights = np.array([3.0, 1.0])
    plain = _aggregate(PlainAggregator(uniform=False), updates, weights=weights, rng=None)
    assert plain.mean_update[0] == pytest.approx(7 / 4) and plain.noise_std == 0.0
    # under local DP-SGD the example count is private (one sample more or less changes it)
    local = _aggregate(PlainAggregator(uniform=True), updates, weights=weights, rng=np.random.default_rng(0))
    assert local.mean_update[0] == pytest.approx(5 / 2)


@pytest.mark.parametrize("uniform", [False, True])
def test_audit_replays_of_plain_fedavg_are_the_means_the_round_applies(uniform):
    """Without central DP the audit replays each cohort as the server's own mean of it,
    weights and the cohort's own divisor included."""
    rng = np.random.default_rng(5)
    updates = rng.normal(size=(5, 4))
    examples = np.array([3.0, 1.0, 7.0, 2.0, 1.0])
    include = np.array([[1, 0, 1, 1, 0], [0, 1, 0, 0, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    aggregator = PlainAggregator(uniform=uniform)
    replayed = aggregator.replay(updates, examples=examples, include=include, rng=rng)
    for row, cohort in zip(replayed, include):
        applied = _aggregate(aggregator, updates[cohort], weights=examples[cohort], rng=None).mean_update
        np.testing.assert_allclose(row, applied, rtol=1e-12)  # nobody: zeros
    direction = np.array([0.6, 0.0, 0.8, 0.0])
    projected = aggregator.replay(updates, examples=examples, include=include, rng=rng, direction=direction)
    np.testing.assert_allclose(projected, replayed @ direction, rtol=1e-12)


def test_adaptive_clipping_moves_the_clip_norm_towards_the_target_quantile():
    rng = np.random.default_rng(3)
    norms_true = rng.lognormal(mean=0.0, sigma=0.5, size=(200,))
    target = float(np.quantile(norms_true, 0.5))
    aggregator = AdaptiveClippingAggregator(
        noise_multiplier=0.0,
        initial_clip_norm=0.05,
        expected_cohort=200,
        target_quantile=0.5,
        clip_lr=0.2,
        count_noise_std=1.0,
    )
    directions = rng.normal(size=(200, 20))
    updates = directions / np.linalg.norm(directions, axis=1, keepdims=True) * norms_true[:, None]
    for _ in range(100):
        _aggregate(aggregator, updates, rng=rng)
    assert aggregator.clip_norm == pytest.approx(target, rel=0.15)


def test_adaptive_update_noise_and_count_noise_compose_to_z():
    z, sigma_b = 1.0, 2.0
    aggregator = AdaptiveClippingAggregator(
        noise_multiplier=z,
        initial_clip_norm=1.0,
        expected_cohort=10,
        target_quantile=0.5,
        clip_lr=0.2,
        count_noise_std=sigma_b,
    )
    # composition of Gaussians: z^-2 = z_u^-2 + (2 sigma_b)^-2
    assert aggregator.update_noise_multiplier**-2 + (2 * sigma_b) ** -2 == pytest.approx(z**-2)
    with pytest.raises(ValueError, match="count_noise"):
        AdaptiveClippingAggregator(
            noise_multiplier=2.0,
            initial_clip_norm=1.0,
            expected_cohort=10,
            target_quantile=0.5,
            clip_lr=0.2,
            count_noise_std=0.5,
        )


def _build(tree):
    scenario = scenario_from_dict(tree)
    return build_aggregator(mechanism=DpMechanism.from_scenario(scenario), adaptive=scenario.dp.adaptive)


def test_factory_builds_the_mode_and_reports_bad_adaptive_settings_as_scenario_errors():
    plain = _build({"dp": {"mode": "none"}})
    assert isinstance(plain, PlainAggregator) and not plain.uniform
    assert _build({"dp": {"mode": "local_dpsgd"}}).uniform
    server = _build({"dp": {"mode": "server_fixed"}})
    assert isinstance(server, FixedClippingAggregator) and server.clip_on_server
    client = _build({"dp": {"mode": "client_fixed"}})
    assert isinstance(client, FixedClippingAggregator) and not client.clip_on_server
    with pytest.raises(ScenarioError, match="count_noise_multiplier"):
        _build(
            {"dp": {"mode": "server_adaptive", "noise_multiplier": 3.0, "adaptive": {"count_noise_multiplier": 1.0}}}
        )
