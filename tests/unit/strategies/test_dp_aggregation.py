"""DP aggregation: clipping, the noise actually added, and division by the expected cohort."""

import numpy as np
import pytest

from fedsim.config import scenario_from_dict
from fedsim.errors import ScenarioError
from fedsim.strategies import build_aggregator
from fedsim.strategies.aggregation import clip_updates
from fedsim.strategies.dp import AdaptiveClippingAggregator, FixedClippingAggregator, PlainAggregator


def test_clip_updates_clips_each_update_to_the_norm():
    updates = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 10.0]])  # norms 5, 0.5, 10
    np.testing.assert_allclose(clip_updates(updates, clip_norm=1.0), [[0.6, 0.8], [0.3, 0.4], [0.0, 1.0]])


@pytest.mark.parametrize("mode", ["server", "client", "adaptive"])
def test_release_many_is_the_release_of_each_cohort(mode):
    """The audit's batched replays and the real round's release are the same mechanism."""
    rng = np.random.default_rng(5)
    updates = rng.normal(size=(6, 8)) * 0.3
    if mode == "adaptive":
        aggregator = AdaptiveClippingAggregator(
            noise_multiplier=0.0,
            initial_clip_norm=0.5,
            expected_cohort=6,
            target_quantile=0.5,
            clip_lr=0.2,
            count_noise_std=1.0,
        )
    else:
        aggregator = FixedClippingAggregator(
            noise_multiplier=0.0, clip_norm=0.5, expected_cohort=6, clip_on_server=mode == "server"
        )
        if mode == "client":
            updates = clip_updates(updates, clip_norm=0.5)
    include = rng.random((5, 6)) < 0.5
    batched = aggregator.release_many(updates, include=include, rng=rng)
    one_by_one = np.stack([aggregator.release(updates[mask], rng=rng) for mask in include])
    np.testing.assert_allclose(batched, one_by_one)
    expected = np.stack([clip_updates(updates[mask], clip_norm=0.5).sum(axis=0) for mask in include])
    np.testing.assert_allclose(batched, expected)


def test_release_scores_are_projections_of_releases():
    """The audit's projected replays: exact sums, and noise of the release's std."""
    rng = np.random.default_rng(2)
    updates = rng.normal(size=(5, 40))
    direction = rng.normal(size=40)
    direction /= np.linalg.norm(direction)
    include = rng.random((7, 5)) < 0.5
    exact = FixedClippingAggregator(noise_multiplier=0.0, clip_norm=0.8, expected_cohort=5, clip_on_server=True)
    np.testing.assert_allclose(
        exact.release_scores(updates, include=include, direction=direction, rng=rng),
        exact.release_many(updates, include=include, rng=rng) @ direction,
    )
    noisy = FixedClippingAggregator(noise_multiplier=1.3, clip_norm=0.8, expected_cohort=5, clip_on_server=True)
    many = np.ones((20_000, 5), dtype=bool)
    projected = noisy.release_scores(updates, include=many, direction=direction, rng=rng)
    full = noisy.release_many(updates, include=many[:2000], rng=rng) @ direction
    assert projected.std() == pytest.approx(1.3 * 0.8, rel=0.03)
    assert full.std() == pytest.approx(1.3 * 0.8, rel=0.06)
    assert projected.mean() == pytest.approx(full.mean(), abs=0.1)


def test_adaptive_release_adds_noise_with_std_z_u_times_c():
    aggregator = AdaptiveClippingAggregator(
        noise_multiplier=1.0,
        initial_clip_norm=0.4,
        expected_cohort=10,
        target_quantile=0.5,
        clip_lr=0.2,
        count_noise_std=1.0,
    )
    noise = aggregator.release(np.zeros((3, 100_000)), rng=np.random.default_rng(0))
    assert noise.std() == pytest.approx(aggregator.update_noise_multiplier * 0.4, rel=0.01)


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
    aggregator.aggregate(updates=updates, weights=np.ones(4), reported_norms=None, rng=np.random.default_rng(0))
    assert aggregator.clip_norm == pytest.approx(np.exp(0.1))


def test_server_fixed_noise_std_on_the_average_is_z_c_over_cohort():
    """Statistically: zero updates leave only the noise; its std must be z*C/m."""
    z, c, m, dim = 1.3, 0.7, 10, 200_000
    aggregator = FixedClippingAggregator(noise_multiplier=z, clip_norm=c, expected_cohort=m, clip_on_server=True)
    updates = np.zeros((7, dim))  # a Poisson cohort of 7 while 10 were expected
    result = aggregator.aggregate(
        updates=updates, weights=np.ones(7), reported_norms=None, rng=np.random.default_rng(0)
    )
    expected = z * c / m
    # std estimate over 200k coordinates has relative standard error ~ 1/sqrt(2*dim) = 0.16%
    assert result.mean_update.std() == pytest.approx(expected, rel=0.01)
    assert abs(result.mean_update.mean()) < 5 * expected / np.sqrt(dim)
    assert result.noise_std == pytest.approx(expected)


def test_noisy_sum_is_divided_by_expected_not_realised_cohort():
    dim = 5
    aggregator = FixedClippingAggregator(noise_multiplier=0.0, clip_norm=10.0, expected_cohort=4, clip_on_server=True)
    updates = np.ones((2, dim))
    result = aggregator.aggregate(
        updates=updates, weights=np.array([1.0, 100.0]), reported_norms=None, rng=np.random.default_rng(0)
    )
    np.testing.assert_allclose(result.mean_update, np.full(dim, 2 / 4))  # sum / expected, equal weights


def test_clip_fraction_and_clipping_bound_the_contribution():
    rng = np.random.default_rng(1)
    updates = rng.normal(size=(10, 50))
    norms = np.linalg.norm(updates, axis=1)
    clip = float(np.median(norms))
    aggregator = FixedClippingAggregator(noise_multiplier=0.0, clip_norm=clip, expected_cohort=10, clip_on_server=True)
    result = aggregator.aggregate(updates=updates, weights=np.ones(10), reported_norms=None, rng=rng)
    assert result.clip_fraction == pytest.approx(np.mean(norms > clip))
    # one client's influence on the average is bounded by C / m
    changed = updates.copy()
    changed[0] *= 1000
    other = aggregator.aggregate(updates=changed, weights=np.ones(10), reported_norms=None, rng=rng)
    assert np.linalg.norm(other.mean_update - result.mean_update) <= 2 * clip / 10 + 1e-9


def test_client_side_mode_does_not_reclip_but_rejects_unclipped_updates():
    aggregator = FixedClippingAggregator(noise_multiplier=0.0, clip_norm=1.0, expected_cohort=2, clip_on_server=False)
    clipped = np.array([[0.6, 0.8], [0.0, 0.5]])
    result = aggregator.aggregate(
        updates=clipped, weights=np.ones(2), reported_norms=np.array([7.0, 0.5]), rng=np.random.default_rng(0)
    )
    np.testing.assert_allclose(result.mean_update, clipped.sum(axis=0) / 2)
    assert result.clip_fraction == 0.5  # from the norms the clients reported before clipping
    with pytest.raises(RuntimeError, match="client-side clipping"):
        aggregator.aggregate(
            updates=np.array([[3.0, 4.0]]), weights=np.ones(1), reported_norms=None, rng=np.random.default_rng(0)
        )


def test_plain_fedavg_weights_by_examples():
    updates = np.array([[1.0], [4.0]])
    result = PlainAggregator().aggregate(updates=updates, weights=np.array([3.0, 1.0]), reported_norms=None, rng=None)
    assert result.mean_update[0] == pytest.approx(7 / 4)
    assert result.noise_std == 0.0


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
        aggregator.aggregate(updates=updates, weights=np.ones(200), reported_norms=None, rng=rng)
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


def test_factory_builds_the_mode_and_reports_bad_adaptive_settings_as_scenario_errors():
    assert isinstance(build_aggregator(scenario=scenario_from_dict({"dp": {"mode": "none"}})), PlainAggregator)
    server = build_aggregator(scenario=scenario_from_dict({"dp": {"mode": "server_fixed"}}))
    assert isinstance(server, FixedClippingAggregator) and server.clip_on_server
    client = build_aggregator(scenario=scenario_from_dict({"dp": {"mode": "client_fixed"}}))
    assert isinstance(client, FixedClippingAggregator) and not client.clip_on_server
    bad = scenario_from_dict(
        {"dp": {"mode": "server_adaptive", "noise_multiplier": 3.0, "adaptive": {"count_noise_multiplier": 1.0}}}
    )
    with pytest.raises(ScenarioError, match="count_noise_multiplier"):
        build_aggregator(scenario=bad)
