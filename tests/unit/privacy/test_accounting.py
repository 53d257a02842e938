"""Tests for fedsim.privacy's events, accountants and calculator.

Reference figures come from the literature / DESIGN.md, not from this code:
Poisson, noise 1.0, q 0.01, 1,000 rounds, delta 1e-5: PLD 1.83, RDP 2.10;
noise 1.0, q 1, 1 round: PLD 4.38, RDP 4.73; without replacement 10 of 1,000, noise 1.0,
1,000 rounds, RDP replace-one: 20.99 with the replace-one sensitivity 2C (3.58 if built
naively, see the test); sigma 1.0, q 0.01, 100 steps: PLD 0.718, RDP 1.214.
"""

import json
import math
import subprocess
import sys

import dp_accounting
import pytest

from fedsim.errors import PrivacyError
from fedsim.privacy import (
    RoundAccountant,
    cumulative_epsilon,
    dpsgd_event,
    epsilon_for_event,
    gaussian_epsilon,
    gaussian_noise_for_epsilon,
    noise_multiplier_for_epsilon,
    round_event,
)

DELTA = 1e-5


# --- reference figures --------------------------------------------------------------


@pytest.mark.parametrize(
    ("accountant", "sampling_rate", "rounds", "expected"),
    [
        ("pld", 0.01, 1000, 1.83),
        ("rdp", 0.01, 1000, 2.10),
        ("pld", 1.0, 1, 4.38),
        ("rdp", 1.0, 1, 4.73),
    ],
)
def test_cumulative_epsilon_matches_reference(accountant, sampling_rate, rounds, expected):
    eps = cumulative_epsilon(
        noise_multiplier=1.0,
        sampling_rate=sampling_rate,
        rounds=rounds,
        delta=DELTA,
        accountant=accountant,
    )
    assert eps == pytest.approx(expected, rel=0.01)


def test_without_replacement_accounts_for_replace_one_sensitivity_2c():
    """Under replace-one adjacency a clipped sum has sensitivity 2C (google/differential-
    privacy issue #378): the event must carry z / 2. Both references are computed here
    with dp-accounting's own RDP accountant: built naively with z it reports 3.58 (a
    fourfold underestimate of the RDP); with z / 2 it reports 20.99, which fedsim must
    match."""
    eps = cumulative_epsilon(
        noise_multiplier=1.0,
        sampling_rate=0.01,
        rounds=1000,
        delta=DELTA,
        sampling="fixed",
        population=1000,
        accountant="rdp",
    )
    naive = dp_accounting.rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    naive.compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.SampledWithoutReplacementDpEvent(1000, 10, dp_accounting.GaussianDpEvent(1.0)), 1000
        )
    )
    assert naive.get_epsilon(DELTA) == pytest.approx(3.58, rel=0.005)
    halved = dp_accounting.rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    halved.compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.SampledWithoutReplacementDpEvent(1000, 10, dp_accounting.GaussianDpEvent(0.5)), 1000
        )
    )
    assert halved.get_epsilon(DELTA) == pytest.approx(20.99, rel=0.001)
    assert eps == pytest.approx(halved.get_epsilon(DELTA), rel=1e-9)


def test_without_replacement_of_everyone_is_the_gaussian_at_half_the_noise():
    """Sampling all clients: replace-one on a sum with sensitivity 2C is exactly the
    Gaussian mechanism with noise multiplier z / 2 (add/remove, sensitivity C)."""
    everyone = cumulative_epsilon(
        noise_multiplier=2.0,
        sampling_rate=1.0,
        rounds=1,
        delta=DELTA,
        sampling="fixed",
        population=10,
        accountant="rdp",
    )
    single = epsilon_for_event(event=dp_accounting.GaussianDpEvent(1.0), delta=DELTA, accountant="rdp")
    assert everyone == pytest.approx(single, rel=1e-6)


@pytest.mark.parametrize(("accountant", "expected"), [("pld", 0.718), ("rdp", 1.214)])
def test_dpsgd_event_matches_reference(accountant, expected):
    event = dpsgd_event(noise_multiplier=1.0, sample_rate=0.01, steps=100)
    eps = epsilon_for_event(event=event, delta=DELTA, accountant=accountant)
    assert eps == pytest.approx(expected, rel=0.002)
    # The same setting through the calculator.
    assert cumulative_epsilon(
        noise_multiplier=1.0,
        sampling_rate=0.01,
        rounds=100,
        delta=DELTA,
        accountant=accountant,
    ) == pytest.approx(expected, rel=0.002)


def test_gaussian_epsilon_matches_reference():
    assert gaussian_epsilon(noise_multiplier=1.0, delta=DELTA) == pytest.approx(4.38, rel=0.01)


# --- the analytic Gaussian ------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 5.0])
def test_analytic_gaussian_agrees_with_pld_accountant(sigma):
    analytic = gaussian_epsilon(noise_multiplier=sigma, delta=DELTA)
    pld = epsilon_for_event(event=dp_accounting.GaussianDpEvent(sigma), delta=DELTA, accountant="pld")
    assert analytic == pytest.approx(pld, rel=0.01)


@pytest.mark.parametrize("delta", [1e-5, 1e-3])
@pytest.mark.parametrize("sigma", [0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0])
def test_gaussian_noise_for_epsilon_inverts_gaussian_epsilon(sigma, delta):
    eps = gaussian_epsilon(noise_multiplier=sigma, delta=delta)
    assert eps > 0
    assert gaussian_noise_for_epsilon(epsilon=eps, delta=delta) == pytest.approx(sigma, rel=1e-6)


@pytest.mark.parametrize("epsilon", [0.05, 0.5, 1.0, 4.0, 20.0])
def test_gaussian_epsilon_inverts_gaussian_noise_for_epsilon(epsilon):
    sigma = gaussian_noise_for_epsilon(epsilon=epsilon, delta=DELTA)
    assert gaussian_epsilon(noise_multiplier=sigma, delta=DELTA) == pytest.approx(epsilon, rel=1e-6)


def test_gaussian_edge_cases():
    assert gaussian_epsilon(noise_multiplier=0.0, delta=DELTA) == math.inf
    assert gaussian_epsilon(noise_multiplier=math.inf, delta=DELTA) == 0.0
    assert gaussian_noise_for_epsilon(epsilon=math.inf, delta=DELTA) == 0.0
    assert gaussian_noise_for_epsilon(epsilon=0.0, delta=DELTA) == math.inf


# --- RoundAccountant --------------------------------------------------------------------


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_round_accountant_rises_and_matches_cumulative(accountant):
    acc = RoundAccountant(delta=DELTA, sampling="poisson", population=1000, cohort=10)
    assert acc.epsilon(accountant=accountant) == 0.0
    previous = 0.0
    for _ in range(8):
        acc.step(noise_multiplier=1.0)
        eps = acc.epsilon(accountant=accountant)
        assert eps > previous
        previous = eps
    assert acc.rounds == 8
    assert previous == pytest.approx(
        cumulative_epsilon(
            noise_multiplier=1.0,
            sampling_rate=0.01,
            rounds=8,
            delta=DELTA,
            accountant=accountant,
        ),
        rel=1e-9,
    )


def test_round_accountant_without_replacement_matches_cumulative():
    acc = RoundAccountant(delta=DELTA, sampling="fixed", population=1000, cohort=10)
    for _ in range(5):
        acc.step(noise_multiplier=1.0)
    assert acc.epsilon(accountant="rdp") == pytest.approx(
        cumulative_epsilon(
            noise_multiplier=1.0,
            sampling_rate=0.01,
            rounds=5,
            delta=DELTA,
            sampling="fixed",
            population=1000,
            accountant="rdp",
        ),
        rel=1e-9,
    )


@pytest.mark.parametrize(("accountant", "rel"), [("pld", 0.01), ("rdp", 1e-9)])
def test_round_accountant_with_changing_noise(accountant, rel):
    noises = [1.0, 1.0, 1.0, 2.0, 2.0, 0.8, 1.0, 1.0]
    acc = RoundAccountant(delta=DELTA, sampling="poisson", population=1000, cohort=10)
    for noise in noises:  # query every round so ended runs are cached in between
        acc.step(noise_multiplier=noise)
        acc.epsilon(accountant=accountant)
    expected = epsilon_for_event(
        event=dp_accounting.ComposedDpEvent(
            [round_event(noise_multiplier=n, sampling="poisson", sampling_rate=0.01) for n in noises]
        ),
        delta=DELTA,
        accountant=accountant,
    )
    assert acc.epsilon(accountant=accountant) == pytest.approx(expected, rel=rel)


@pytest.mark.parametrize(
    ("sampling", "accountant", "noises"),
    [
        ("poisson", "pld", [1.0, 1.0, 1.0, 2.0, 2.0, 0.8, 1.0, 1.0]),
        ("poisson", "rdp", [1.0, 1.0, 1.0, 2.0, 2.0, 0.8, 1.0, 1.0]),
        ("fixed", "rdp", [1.0, 1.0, 0.5, 0.5, 0.5]),
        ("poisson", "pld", [1.0, 0.0, 1.0]),
    ],
)
def test_round_accountant_gives_what_dp_accounting_gives(sampling, accountant, noises):
    """Its one-round PLDs and RDP curves, computed once per noise multiplier, give what
    dp-accounting's accountants give composing the same runs afresh each round: RDP bit
    for bit, PLD (composed one round at a time instead of ``self_compose``: float rounding
    of another order of the same pessimistic compositions) to 1e-9."""
    from fedsim.privacy.accountant import _runs
    from fedsim.privacy.events import new_accountant

    acc = RoundAccountant(delta=DELTA, sampling=sampling, population=1000, cohort=10)
    adjacency = "replace_one" if sampling == "fixed" else "add_or_remove_one"
    for round_number, noise in enumerate(noises, start=1):
        acc.step(noise_multiplier=noise)
        reference = new_accountant(accountant, adjacency=adjacency)
        for run_noise, count in _runs(noises[:round_number]):
            event = round_event(noise_multiplier=run_noise, sampling=sampling, sampling_rate=0.01, population=1000)
            reference.compose(event, count)
        expected = reference.get_epsilon(DELTA)
        if accountant == "rdp":
            assert acc.epsilon(accountant=accountant) == expected
        else:
            assert acc.epsilon(accountant=accountant) == pytest.approx(expected, rel=1e-9)


def test_round_accountant_state_dict_round_trip():
    acc = RoundAccountant(delta=DELTA, sampling="poisson", population=1000, cohort=10)
    for noise in [1.0, 1.0, 1.5, 1.5, 1.0]:
        acc.step(noise_multiplier=noise)
    state = json.loads(json.dumps(acc.state_dict()))
    resumed = RoundAccountant(delta=DELTA, sampling="poisson", population=1000, cohort=10)
    resumed.load_state_dict(state)
    assert resumed.rounds == acc.rounds == 5
    for accountant in ("pld", "rdp"):
        assert resumed.epsilon(accountant=accountant) == pytest.approx(acc.epsilon(accountant=accountant), rel=1e-12)
    with pytest.raises(PrivacyError):
        resumed.load_state_dict({"noise_multipliers": [1.0, -1.0]})
    with pytest.raises(PrivacyError):
        resumed.load_state_dict({})


def test_non_private_rounds_give_infinite_epsilon():
    acc = RoundAccountant(delta=DELTA, sampling="poisson", population=100, cohort=10)
    acc.step(noise_multiplier=1.0)
    acc.step(noise_multiplier=0.0)
    acc.step(noise_multiplier=1.0)
    assert acc.epsilon(accountant="pld") == math.inf
    assert acc.epsilon(accountant="rdp") == math.inf
    for accountant in ("pld", "rdp"):
        assert (
            cumulative_epsilon(
                noise_multiplier=0.0,
                sampling_rate=0.1,
                rounds=3,
                delta=DELTA,
                accountant=accountant,
            )
            == math.inf
        )


# --- noise calibration --------------------------------------------------------------


@pytest.mark.parametrize(("accountant", "sampling_rate", "rounds"), [("pld", 0.01, 100), ("rdp", 1.0, 10)])
def test_noise_multiplier_for_epsilon_hits_target(accountant, sampling_rate, rounds):
    target = 2.0
    kwargs = dict(sampling_rate=sampling_rate, rounds=rounds, delta=DELTA, accountant=accountant)
    noise = noise_multiplier_for_epsilon(target_epsilon=target, **kwargs)
    eps = cumulative_epsilon(noise_multiplier=noise, **kwargs)
    assert eps <= target
    assert eps == pytest.approx(target, rel=0.005)


def test_noise_multiplier_for_epsilon_is_monotone():
    kwargs = dict(sampling_rate=1.0, delta=DELTA, accountant="rdp")
    by_target = [noise_multiplier_for_epsilon(target_epsilon=t, rounds=10, **kwargs) for t in (0.5, 1.0, 2.0, 4.0)]
    assert by_target == sorted(by_target, reverse=True)
    assert len(set(by_target)) == len(by_target)
    by_rounds = [noise_multiplier_for_epsilon(target_epsilon=2.0, rounds=r, **kwargs) for r in (1, 10, 100)]
    assert by_rounds == sorted(by_rounds)
    assert len(set(by_rounds)) == len(by_rounds)


@pytest.mark.parametrize("target", [0.0, -1.0, math.inf, math.nan, 1e-6, 1e4])
def test_noise_multiplier_for_epsilon_unreachable(target):
    with pytest.raises(PrivacyError) as info:
        noise_multiplier_for_epsilon(
            target_epsilon=target,
            sampling_rate=1.0,
            rounds=1,
            delta=DELTA,
            accountant="rdp",
        )
    assert "target_epsilon" in str(info.value)
    assert "\n" not in str(info.value)


# --- errors ----------------------------------------------------------------------------


def test_pld_rejects_sampling_without_replacement():
    event = round_event(noise_multiplier=1.0, sampling="fixed", sampling_rate=0.01, population=1000)
    calls = [
        lambda: epsilon_for_event(event=event, delta=DELTA, accountant="pld"),
        lambda: cumulative_epsilon(
            noise_multiplier=1.0,
            sampling_rate=0.01,
            rounds=10,
            delta=DELTA,
            sampling="fixed",
            population=1000,
        ),
        lambda: RoundAccountant(delta=DELTA, sampling="fixed", population=1000, cohort=10).epsilon(),
    ]
    for call in calls:
        with pytest.raises(PrivacyError) as info:
            call()
        message = str(info.value)
        assert "rdp" in message and "\n" not in message


CALC = dict(noise_multiplier=1.0, sampling_rate=0.1, rounds=10, delta=DELTA)
ROUND = dict(noise_multiplier=1.0, sampling="fixed", sampling_rate=0.1, population=100)


@pytest.mark.parametrize(
    ("call", "overrides", "argument"),
    [
        (cumulative_epsilon, {"delta": 0.0}, "delta"),
        (cumulative_epsilon, {"delta": 1.0}, "delta"),
        (cumulative_epsilon, {"delta": math.nan}, "delta"),
        (cumulative_epsilon, {"sampling_rate": 0.0}, "sampling_rate"),
        (cumulative_epsilon, {"sampling_rate": 1.5}, "sampling_rate"),
        (cumulative_epsilon, {"rounds": 0}, "rounds"),
        (cumulative_epsilon, {"rounds": 2.5}, "rounds"),
        (cumulative_epsilon, {"noise_multiplier": -1.0}, "noise_multiplier"),
        (cumulative_epsilon, {"noise_multiplier": math.nan}, "noise_multiplier"),
        (cumulative_epsilon, {"sampling": "uniform"}, "sampling"),
        (cumulative_epsilon, {"accountant": "prv"}, "accountant"),
        (cumulative_epsilon, {"sampling": "fixed"}, "population"),
        (round_event, {"sampling_rate": 1.01}, "sampling_rate"),
        (round_event, {"population": 0}, "population"),
        (round_event, {"population": None}, "population"),
        (round_event, {"sampling": "without-replacement"}, "sampling"),
        (round_event, {"noise_multiplier": -0.5}, "noise_multiplier"),
        (dpsgd_event, {"sample_rate": 0.0}, "sample_rate"),
        (dpsgd_event, {"steps": 0}, "steps"),
        (gaussian_epsilon, {"delta": 2.0}, "delta"),
        (gaussian_noise_for_epsilon, {"epsilon": -1.0}, "epsilon"),
    ],
)
def test_bad_inputs_raise_one_line_privacy_error(call, overrides, argument):
    defaults = {
        cumulative_epsilon: CALC,
        round_event: ROUND,
        dpsgd_event: dict(noise_multiplier=1.0, sample_rate=0.01, steps=10),
        gaussian_epsilon: dict(noise_multiplier=1.0, delta=DELTA),
        gaussian_noise_for_epsilon: dict(epsilon=1.0, delta=DELTA),
    }[call]
    with pytest.raises(PrivacyError) as info:
        call(**{**defaults, **overrides})
    message = str(info.value)
    assert argument in message and "\n" not in message


def test_round_accountant_bad_inputs():
    with pytest.raises(PrivacyError, match="delta"):
        RoundAccountant(delta=0.0, sampling="poisson", population=10, cohort=1)
    with pytest.raises(PrivacyError, match="cohort"):
        RoundAccountant(delta=DELTA, sampling="poisson", population=10, cohort=11)
    acc = RoundAccountant(delta=DELTA, sampling="poisson", population=10, cohort=1)
    with pytest.raises(PrivacyError, match="noise_multiplier"):
        acc.step(noise_multiplier=-1.0)
    with pytest.raises(PrivacyError, match="accountant"):
        acc.epsilon(accountant="prv")


def test_importing_privacy_does_not_import_training_code():
    code = "import sys, fedsim.privacy; bad = {'torch', 'flwr', 'opacus'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)
