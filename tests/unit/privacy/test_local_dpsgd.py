"""Local DP-SGD accounting: the worst client size of the population, as Opacus runs it.

References are computed here with dp-accounting's PLD accountant on each client size's
schedule, the schedule read off Opacus' own data loader and sampler.
"""

import math

import dp_accounting
import pytest
import torch
from dp_accounting import pld
from opacus.data_loader import DPDataLoader
from torch.utils.data import DataLoader, TensorDataset

from fedsim.privacy import LocalDpsgdAccountant, opacus_schedule

DELTA = 1e-5


def _opacus_steps(n: int, batch_size: int) -> tuple[float, int]:
    """(sample rate, steps an epoch) of Opacus' Poisson loader for n samples."""
    loader = DPDataLoader.from_data_loader(DataLoader(TensorDataset(torch.zeros(n, 1)), batch_size=batch_size))
    return loader.sample_rate, len(loader.batch_sampler)


def _pld_epsilon(n: int, *, batch_size: int, epochs: int, rounds: int, z: float) -> float:
    rate, steps = _opacus_steps(n, batch_size)
    event = dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(z))
    accountant = pld.PLDAccountant(value_discretization_interval=1e-3)
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, epochs * steps * rounds))
    return accountant.get_epsilon(DELTA)


@pytest.mark.parametrize("n", [1, 7, 10, 11, 21, 30, 99, 1000])
def test_schedule_is_the_one_opacus_runs(n):
    schedule = opacus_schedule(num_samples=n, batch_size=10)
    assert (schedule.sample_rate, schedule.steps_per_epoch) == _opacus_steps(n, 10)


def test_a_larger_client_is_worse_than_the_smallest():
    """The issue's figures: z = 0.5, B = 10, one epoch: 10 samples give 10.00 a round, 21
    samples (3 Poisson steps at rate 1/3) about 14-16."""
    small = _pld_epsilon(10, batch_size=10, epochs=1, rounds=1, z=0.5)
    larger = _pld_epsilon(21, batch_size=10, epochs=1, rounds=1, z=0.5)
    assert small == pytest.approx(10.00, abs=0.02)
    assert 14 < larger < 16
    accountant = LocalDpsgdAccountant(noise_multiplier=0.5, delta=DELTA, batch_size=10, epochs=1, client_sizes=[10, 21])
    assert accountant.epsilon(rounds=1) == pytest.approx(larger, rel=1e-6)


@pytest.mark.parametrize(("z", "epochs", "rounds"), [(0.5, 1, 1), (1.0, 2, 3), (1.0, 1, 30)])
def test_reports_the_maximum_over_the_populations_sizes(z, epochs, rounds):
    sizes = [3, 10, 10, 21, 35, 64, 64, 150, 7]
    expected = max(_pld_epsilon(n, batch_size=10, epochs=epochs, rounds=rounds, z=z) for n in set(sizes))
    accountant = LocalDpsgdAccountant(noise_multiplier=z, delta=DELTA, batch_size=10, epochs=epochs, client_sizes=sizes)
    assert accountant.groups == len({math.ceil(n / 10) for n in sizes})
    assert accountant.epsilon(rounds=rounds) == pytest.approx(expected, rel=1e-6)
    # the RDP column is the maximum of the RDP epsilons, an upper bound above PLD
    assert accountant.epsilon(rounds=rounds, accountant="rdp") >= expected


def test_many_clients_cost_only_their_distinct_sizes():
    sizes = [1 + (i % 40) for i in range(100_000)]  # 100,000 clients, 4 schedules at B = 10
    accountant = LocalDpsgdAccountant(noise_multiplier=1.0, delta=DELTA, batch_size=10, epochs=1, client_sizes=sizes)
    assert accountant.groups == 4
    expected = max(_pld_epsilon(n, batch_size=10, epochs=1, rounds=5, z=1.0) for n in (10, 20, 30, 40))
    assert accountant.epsilon(rounds=5) == pytest.approx(expected, rel=1e-6)
