"""The audit's replays: the run's adjacency on re-drawn cohorts, fresh noise each."""

import numpy as np
import pytest

from fedsim.canaries.audit import CanaryAuditor
from fedsim.config import scenario_from_dict
from fedsim.experiment import dataset_for
from fedsim.privacy import DpMechanism
from fedsim.strategies.aggregation import clip_updates
from fedsim.strategies.dp import FixedClippingAggregator, PlainAggregator


def _auditor(tests: int, sampling: str = "poisson") -> CanaryAuditor:
    scenario = scenario_from_dict(
        {
            "clients_per_round": 3,
            "sampling": sampling,
            "data": {"num_clients": 10, "design_pool": 2},
            "audit": {"enabled": True, "design_pool": 2, "tests": tests, "estimators": ["gaussian"]},
        }
    )
    mechanism = DpMechanism.from_scenario(scenario)
    return CanaryAuditor(scenario=scenario, dataset=dataset_for(scenario), mechanism=mechanism)


def test_with_aggregates_are_the_same_cohorts_plus_the_canary_client():
    rng = np.random.default_rng(0)
    cohort = rng.normal(size=(6, 20))
    clipped = clip_updates(rng.normal(size=(1, 20)) * 5, clip_norm=1.0)[0]
    aggregator = FixedClippingAggregator(noise_multiplier=0.0, clip_norm=1.0, expected_cohort=3, clip_on_server=True)
    replay = _auditor(tests=300).replay(cohort_updates=cohort, canary_update=clipped, aggregator=aggregator, rng=rng)
    # without noise, adding the canary client to the same cohort moves the score by exactly 1
    np.testing.assert_allclose(replay.scores_with - replay.scores_without, 1.0, atol=1e-5)
    # and the cohorts really are re-drawn (rate 3/6): the scores vary from test to test
    assert np.std(replay.scores_without) > 0.1


def test_fixed_cohorts_are_audited_under_replace_one():
    """A fixed cohort's neighbour swaps one member for the canary client, as its accountant
    (replace-one) assumes: without noise the score moves by 1 - <v, clip(u_j)> / C."""
    rng = np.random.default_rng(4)
    cohort = clip_updates(rng.normal(size=(3, 20)), clip_norm=1.0)
    clipped = clip_updates(rng.normal(size=(1, 20)), clip_norm=1.0)[0]
    direction = clipped / np.linalg.norm(clipped)
    aggregator = FixedClippingAggregator(noise_multiplier=0.0, clip_norm=1.0, expected_cohort=3, clip_on_server=True)
    auditor = _auditor(tests=600, sampling="fixed")
    replay = auditor.replay(cohort_updates=cohort, canary_update=clipped, aggregator=aggregator, rng=rng)
    np.testing.assert_allclose(replay.scores_without, cohort.sum(axis=0) @ direction, rtol=1e-5)  # the whole cohort
    shifts = np.round(replay.scores_with - replay.scores_without, 4)
    expected = np.round(1 - cohort @ direction, 4)  # one of the three members swapped out
    assert set(shifts) == set(expected)
    assert replay.noise_multiplier == 0.0 and auditor.mechanism.adjacency == "replace_one"


def test_replays_add_fresh_noise_with_the_strategys_std():
    rng = np.random.default_rng(1)
    aggregator = FixedClippingAggregator(noise_multiplier=1.5, clip_norm=0.5, expected_cohort=3, clip_on_server=True)
    direction = np.eye(30)[0]
    replay = _auditor(tests=20_000).replay(
        cohort_updates=np.zeros((0, 30)), canary_update=0.5 * direction, aggregator=aggregator, rng=rng
    )
    scores_with, scores_without = replay.scores_with, replay.scores_without
    # s = <v, U> / C: pure noise N(0, z^2) without, N(1, z^2) with (an empty cohort)
    assert scores_without.std() == pytest.approx(1.5, rel=0.03) and scores_with.std() == pytest.approx(1.5, rel=0.03)
    assert scores_with.mean() - scores_without.mean() == pytest.approx(1.0, abs=0.06)
    assert abs(np.corrcoef(scores_with, scores_without)[0, 1]) < 0.05  # fresh noise for each


def test_without_central_dp_the_replays_are_the_example_weighted_means_the_server_applies():
    """dp.mode none releases the example-weighted mean of the cohort: so do the replays."""
    rng = np.random.default_rng(6)
    cohort = rng.normal(size=(3, 20))
    examples = np.array([5.0, 1.0, 30.0])
    canary = rng.normal(size=20)
    direction = canary / np.linalg.norm(canary)
    auditor = _auditor(tests=200, sampling="fixed")
    replay = auditor.replay(
        cohort_updates=cohort,
        cohort_examples=examples,
        canary_update=canary,
        aggregator=PlainAggregator(uniform=False),
        rng=rng,
    )
    whole_cohort_mean = examples @ cohort / examples.sum()
    np.testing.assert_allclose(replay.scores_without, whole_cohort_mean @ direction / np.linalg.norm(canary), rtol=1e-5)
    # with: one member (weight w_j) swapped for the canary client (one sample)
    total, weight = examples @ cohort, examples.sum()
    swapped = np.array([(total - examples[j] * cohort[j] + canary) / (weight - examples[j] + 1) for j in range(3)])
    expected = swapped @ direction / np.linalg.norm(canary)
    nearest = np.abs(replay.scores_with[:, None] - expected[None]).min(axis=1)
    assert nearest.max() < 1e-5 * np.abs(expected).max()
    assert len(np.unique(np.abs(replay.scores_with[:, None] - expected[None]).argmin(axis=1))) == 3  # every swap seen
