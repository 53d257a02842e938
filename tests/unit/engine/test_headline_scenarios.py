"""The real-data scenarios users start with measure privacy by default: a finite noise
multiplier, the canary audit on, and the theoretical epsilon the README promises."""

import math

import dp_accounting
import pytest

from fedsim.config import load_scenario
from fedsim.runner import run_scenario
from tests.fixtures.fake_datasets import write_fake_celeba

# The cumulative theoretical epsilon each scenario file and the README quote (delta 1e-5).
QUOTED_EPSILON = {"sent140": 2.71, "shakespeare": 5.14, "celeba": 2.35, "cifar10": 7.05}


def _independent_epsilon(*, q: float, z: float, rounds: int, delta: float) -> float:
    """Poisson-sampled Gaussian rounds composed with dp_accounting's PLD accountant."""
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds
    )
    accountant = dp_accounting.pld.PLDAccountant()
    accountant.compose(event)
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize("name", sorted(QUOTED_EPSILON))
def test_headline_scenario_is_private_audited_and_quotes_its_epsilon(project_root, tmp_path, name):
    scenario = load_scenario(project_root / "scenarios" / f"{name}.yaml", overrides=[f"data.root={tmp_path}"])
    assert scenario.dp.mode != "none" and 0 < scenario.dp.noise_multiplier < math.inf
    assert scenario.audit.enabled and scenario.sampling == "poisson"
    epsilon = _independent_epsilon(
        q=scenario.clients_per_round / scenario.data.num_clients,
        z=scenario.dp.noise_multiplier,
        rounds=scenario.rounds,
        delta=scenario.dp.delta,
    )
    assert round(epsilon, 2) == QUOTED_EPSILON[name]
    readme = (project_root / "README.md").read_text()
    assert f"| {QUOTED_EPSILON[name]:.2f} |" in readme.split(f"`scenarios/{name}.yaml`")[1].splitlines()[0]


def _first_round(project_root, tmp_path, name, overrides):
    scenario = load_scenario(project_root / "scenarios" / f"{name}.yaml", overrides=overrides)
    return run_scenario(scenario=scenario, out_dir=tmp_path / "runs", engine="inprocess").rows[0]


SMALL = ["rounds=1", "data.design_pool=5", "audit.tests=2000", "audit.iterations=5", "evaluation.clients=4"]


def test_cifar10_scenario_trains_and_audits_its_first_round(project_root, tmp_path, fake_cifar10):
    fake_cifar10(tmp_path / "cifar10", images_per_batch=60)
    row = _first_round(
        project_root,
        tmp_path,
        "cifar10",
        [*SMALL, f"data.root={tmp_path / 'cifar10'}", "data.num_clients=20", "clients_per_round=4"],
    )
    assert row.epsilon_round_theory < math.inf and row.epsilon_round_empirical is not None
    assert math.isfinite(row.epsilon_round_empirical)


def test_celeba_scenario_trains_and_audits_its_first_round(project_root, tmp_path):
    pytest.importorskip("PIL")
    root = write_fake_celeba(tmp_path / "celeba", celebrities=30, images_each=6)
    row = _first_round(
        project_root, tmp_path, "celeba", [*SMALL, f"data.root={root}", "data.num_clients=25", "clients_per_round=4"]
    )
    assert row.epsilon_round_theory < math.inf and row.epsilon_round_empirical is not None
    assert math.isfinite(row.epsilon_round_empirical)


@pytest.mark.parametrize(
    ("name", "q", "z", "rounds", "quoted"),
    [
        ("sent140", 1000 / 660_000, 1.0, 40, "epsilon 0.065"),  # all of LEAF's users, 1,000 a round
        ("shakespeare", 57 / 1100, 1.5, 30, "epsilon 1.02"),  # ~1,100 roles, 57 a round
    ],
)
def test_full_data_set_epsilons_in_the_readme(project_root, name, q, z, rounds, quoted):
    row = (project_root / "README.md").read_text().split(f"`scenarios/{name}.yaml`")[1].splitlines()[0]
    assert quoted in row
    assert (
        f"epsilon {_independent_epsilon(q=q, z=z, rounds=rounds, delta=1e-5):.{len(quoted.split('.')[1])}f}" == quoted
    )
