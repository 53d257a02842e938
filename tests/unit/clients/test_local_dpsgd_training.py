"""Local DP-SGD inside a client: the mechanism Opacus runs is the one that is accounted.

Measured, not recomputed: with all-zero inputs a linear layer's weight gradient is zero
for every sample, so after one step at lr 1 the weights moved by exactly the noise Opacus
added to the step's mean gradient.
"""

import pytest
import torch
from torch import nn

from fedsim.clients.training import TrainSettings, train_client
from fedsim.data.base import ClientData


def _data(n: int) -> ClientData:
    x, y = torch.zeros(n, 200), torch.zeros(n, dtype=torch.long)
    return ClientData(x_train=x, y_train=y, x_test=x[:0], y_test=y[:0])


def _settings(*, batch_size: int, epochs: int = 1, z: float = 1.0) -> TrainSettings:
    return TrainSettings(epochs=epochs, batch_size=batch_size, lr=1.0, dpsgd_clip_norm=2.0, dpsgd_noise_multiplier=z)


@pytest.mark.parametrize(("n", "expected_batch"), [(10, 10), (21, 7), (35, 8)])
def test_reported_noise_std_is_the_noise_actually_added(n, expected_batch):
    """Opacus divides the noisy sum by its own expected batch size, int(n / ceil(n / B)):
    21 samples at B = 10 give 3 batches and 7, not B. One epoch = ceil(n / B) steps."""
    model = nn.Linear(200, 250, bias=False)  # 50,000 weights: the std is measured to ~0.3%
    before = model.weight.detach().clone()
    steps = -(-n // 10)
    result = train_client(model=model, data=_data(n), settings=_settings(batch_size=10), seed=1)
    moved = (model.weight.detach() - before).flatten()
    # steps independent noise draws of std s each: the total move has std s * sqrt(steps)
    measured = float(moved.std()) / steps**0.5
    assert measured == pytest.approx(1.0 * 2.0 / expected_batch, rel=0.02)
    assert result.noise_std == pytest.approx(measured, rel=0.02)


def test_empty_poisson_batches_still_take_a_noisy_step():
    """n = 2, B = 1: two Poisson batches at rate 1/2 an epoch, a quarter of them empty. The
    accountant counts every step as a noisy one, so every step must add noise."""
    model = nn.Linear(200, 250, bias=False)
    calls = []
    model.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    before = model.weight.detach().clone()
    train_client(model=model, data=_data(2), settings=_settings(batch_size=1, epochs=20), seed=3)
    assert len(calls) == 40 and 0 in calls  # every step ran, empty batches included
    moved = (model.weight.detach() - before).flatten()
    # 40 noisy steps of std z C / 1 = 2: the total has std 2 * sqrt(40); 30 steps would give 11
    assert float(moved.std()) == pytest.approx(2.0 * 40**0.5, rel=0.02)
