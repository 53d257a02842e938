"""Server optimisers: FedAvg applies the averaged update; FedAdam normalises it (Reddi et al.)."""

import numpy as np
import pytest

from fedsim.strategies.server_opt import FedAdamOptimizer, FedAvgOptimizer


def test_fedavg_applies_server_lr_times_the_update():
    params = np.array([1.0, -1.0])
    new = FedAvgOptimizer(lr=0.5).step(params=params, mean_update=np.array([2.0, 4.0]))
    np.testing.assert_allclose(new, [2.0, 1.0])


def test_fedadam_steps_are_scale_free_and_follow_the_update_sign():
    small = FedAdamOptimizer(lr=0.1, beta1=0.9, beta2=0.99, tau=1e-9)
    large = FedAdamOptimizer(lr=0.1, beta1=0.9, beta2=0.99, tau=1e-9)
    params = np.zeros(3)
    update = np.array([1e-3, -2e-3, 5e-4])
    a = small.step(params=params, mean_update=update)
    b = large.step(params=params, mean_update=update * 1000)
    np.testing.assert_allclose(a, b, rtol=1e-4)  # Adam normalises by sqrt(v)
    # first step: m = 0.1 u, v = 0.01 u^2 -> step = lr * 0.1 u / (0.1 |u|) = lr * sign(u)
    np.testing.assert_allclose(a, 0.1 * np.sign(update), rtol=1e-4)


def test_fedadam_state_round_trips():
    opt = FedAdamOptimizer(lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    params = opt.step(params=np.zeros(2), mean_update=np.array([1.0, 2.0]))
    clone = FedAdamOptimizer(lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    clone.load_state_dict(opt.state_dict())
    update = np.array([0.5, -0.5])
    np.testing.assert_allclose(
        clone.step(params=params, mean_update=update), opt.step(params=params, mean_update=update)
    )
    assert pytest.approx(0.0) != float(np.abs(opt.m).sum())
