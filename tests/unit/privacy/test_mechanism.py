"""The run's DP mechanism: one adjacency for every epsilon of a run."""

import pytest

from fedsim.config import scenario_from_dict
from fedsim.privacy import DpMechanism, EmpiricalTracker, TheoryTracker


def _mechanism(**tree) -> DpMechanism:
    return DpMechanism.from_scenario(scenario_from_dict(tree))


@pytest.mark.parametrize("sampling", ["poisson", "fixed"])
def test_an_estimate_equal_to_the_theory_extrapolates_to_the_theory(sampling):
    """The empirical extrapolation uses the run's adjacency: feeding it the per-round theory
    must give back the cumulative theory, round after round."""
    mechanism = _mechanism(sampling=sampling, dp={"noise_multiplier": 0.9}, data={"num_clients": 50})
    theory, empirical = TheoryTracker(mechanism=mechanism), EmpiricalTracker(mechanism=mechanism)
    for _ in range(3):
        bound = theory.step(noise_multiplier=0.9)
        assert empirical.step(round_epsilon=bound.round) == pytest.approx(bound.cumulative, rel=1e-4)


def test_modes_are_interpreted_in_one_place():
    facts = {
        mode: _mechanism(dp={"mode": mode})
        for mode in ("none", "server_fixed", "client_fixed", "server_adaptive", "local_dpsgd")
    }
    assert [m.private for m in facts.values()] == [False, True, True, True, True]
    assert [m.central for m in facts.values()] == [False, True, True, True, False]
    assert [m.client_clips for m in facts.values()] == [False, False, True, False, False]
    assert [m.server_clips for m in facts.values()] == [False, True, False, True, False]
    assert [m.unit for m in facts.values()] == ["none", "user", "user", "user", "sample"]
    assert _mechanism(sampling="fixed").adjacency == "replace_one"
    assert _mechanism(sampling="fixed", dp={"mode": "local_dpsgd"}).adjacency == "add_or_remove_one"
