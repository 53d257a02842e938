"""The run's DP mechanism: one adjacency for every epsilon of a run."""

import dp_accounting
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


def test_the_extrapolation_composes_a_new_noise_level_per_audit_as_dp_accounting_does():
    """Estimates that change every other round (a new noise level each audit, the next
    round reusing it) against dp-accounting's own PLD accountant at its fine default grid."""
    mechanism = _mechanism(dp={"noise_multiplier": 0.7}, clients_per_round=10, data={"num_clients": 100})
    empirical = EmpiricalTracker(mechanism=mechanism)
    reference = dp_accounting.pld.PLDAccountant()
    for round_number, estimate in enumerate([9.1, None, 7.4, None, 11.2, None, 3.3], start=1):
        got = empirical.step(round_epsilon=estimate)
        z = empirical.noise_multiplier  # the Gaussian whose single release has the latest estimate
        if estimate is not None:
            assert dp_accounting.get_epsilon_gaussian(z, 1e-5) == pytest.approx(estimate, rel=1e-6)
        reference.compose(dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(z)))
        assert got == pytest.approx(reference.get_epsilon(1e-5), rel=1e-3), round_number


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
