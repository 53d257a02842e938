"""The audit's replays: add/remove adjacency on the same re-drawn cohorts."""

import numpy as np
import pytest

from fedsim.canaries.audit import CanaryAuditor
from fedsim.config import scenario_from_dict
from fedsim.experiment import dataset_for
from fedsim.strategies.aggregation import clip_updates
from fedsim.strategies.dp import FixedClippingAggregator


def _auditor(tests: int) -> CanaryAuditor:
    scenario = scenario_from_dict(
        {
            "clients_per_round": 3,
            "data": {"num_clients": 10, "design_pool": 2},
            "audit": {"enabled": True, "design_pool": 2, "tests": tests},
        }
    )
    return CanaryAuditor(scenario=scenario, dataset=dataset_for(scenario))


def test_with_aggregates_are_the_same_cohorts_plus_the_canary_client():
    rng = np.random.default_rng(0)
    cohort = rng.normal(size=(6, 20))
    canary = rng.normal(size=20) * 5
    clipped = clip_updates(canary[None], clip_norm=1.0)[0]
    direction = clipped / np.linalg.norm(clipped)
    aggregator = FixedClippingAggregator(noise_multiplier=0.0, clip_norm=1.0, expected_cohort=3, clip_on_server=True)
    scores_with, scores_without = _auditor(tests=300)._test(
        cohort_updates=cohort, canary_update=clipped, direction=direction, scale=1.0, aggregator=aggregator, rng=rng
    )
    # without noise, adding the canary client to the same cohort moves the score by exactly 1
    np.testing.assert_allclose(scores_with - scores_without, 1.0)
    # and the cohorts really are re-drawn (rate 3/6): the scores vary from test to test
    assert np.std(scores_without) > 0.1


def test_replays_add_fresh_noise_with_the_strategys_std():
    rng = np.random.default_rng(1)
    aggregator = FixedClippingAggregator(noise_multiplier=1.5, clip_norm=0.5, expected_cohort=3, clip_on_server=True)
    direction = np.eye(30)[0]
    scores_with, scores_without = _auditor(tests=20_000)._test(
        cohort_updates=np.zeros((0, 30)),
        canary_update=0.5 * direction,
        direction=direction,
        scale=0.5,
        aggregator=aggregator,
        rng=rng,
    )
    # s = <v, U> / C: pure noise N(0, z^2) without, N(1, z^2) with
    assert scores_without.std() == pytest.approx(1.5, rel=0.03) and scores_with.std() == pytest.approx(1.5, rel=0.03)
    assert scores_with.mean() - scores_without.mean() == pytest.approx(1.0, abs=0.06)
    assert abs(np.corrcoef(scores_with, scores_without)[0, 1]) < 0.05  # fresh noise for each
