"""Local training shuffles and steps exactly as a plain DataLoader loop would."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedsim.clients.training import TrainSettings, shuffled_batches, train_client
from fedsim.data.base import ClientData
from fedsim.seeding import seeded


@pytest.mark.parametrize("num_samples", [1, 7, 10, 23, 100])
@pytest.mark.parametrize("batch_size", [1, 3, 10, 64])
def test_shuffled_batches_draw_as_dataloader_does(num_samples, batch_size):
    epochs = 3
    loader_generator = torch.Generator().manual_seed(11)
    loader = DataLoader(range(num_samples), batch_size=batch_size, shuffle=True, generator=loader_generator)
    expected = [batch.tolist() for _ in range(epochs) for batch in loader]
    generator = torch.Generator().manual_seed(11)
    got = [
        batch.tolist()
        for _ in range(epochs)
        for batch in shuffled_batches(num_samples=num_samples, batch_size=batch_size, generator=generator)
    ]
    assert got == expected
    # the generator is left where the loader leaves it: later draws agree too
    assert torch.equal(torch.rand(4, generator=generator), torch.rand(4, generator=loader_generator))


def test_shuffled_batches_refuse_a_client_without_samples():
    with pytest.raises(ValueError, match="has 0"):
        shuffled_batches(num_samples=0, batch_size=4, generator=torch.Generator())


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


def test_train_client_matches_a_dataloader_loop():
    """The reference is the textbook loop: DataLoader(shuffle, seeded generator), SGD with
    momentum, cross-entropy, dropout from torch's seeded global RNG."""
    rows = torch.Generator().manual_seed(3)
    x, y = torch.randn(37, 6, generator=rows), torch.randint(3, (37,), generator=rows)
    data = ClientData(x_train=x, y_train=y, x_test=x[:0], y_test=y[:0])
    settings = TrainSettings(epochs=3, batch_size=8, lr=0.05, momentum=0.9)
    seed = 1234

    model = _model()
    result = train_client(model=model, data=data, settings=settings, seed=seed)

    reference = _model()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(seed))
    losses = []
    with seeded(seed, device=torch.device("cpu")):
        for _ in range(3):
            for xb, yb in loader:
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(reference(xb), yb)
                loss.backward()
                optimizer.step()
                losses.append(float(loss))

    for got, expected in zip(model.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(got, expected)
    assert result.mean_loss == pytest.approx(sum(losses) / len(losses), rel=1e-12)
    assert result.num_examples == 37
