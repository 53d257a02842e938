"""Local training and evaluation of one client: plain functions of (model, data, settings).

Nothing here knows about Flower messages, so the same functions train a client inside a
ClientApp, a design-pool mock client of the canary audit, or many clients in a loop.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedsim.data.base import ClientData
from fedsim.seeding import seeded


@dataclass(frozen=True)
class TrainSettings:
    """How a client trains locally."""

    epochs: int
    batch_size: int
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    #: local DP-SGD (Opacus): per-sample clip norm and noise multiplier; None disables
    dpsgd_clip_norm: float | None = None
    dpsgd_noise_multiplier: float | None = None


@dataclass(frozen=True)
class TrainResult:
    """What local training reports besides the trained weights."""

    num_examples: int
    mean_loss: float
    #: DP-SGD: std of the noise Opacus added to each step's mean gradient (None without)
    noise_std: float | None = None


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """The client optimiser of ``settings`` over ``model``'s parameters."""
    if settings.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=settings.lr)
    return torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum)


def train_client(
    *,
    model: nn.Module,
    data: ClientData,
    settings: TrainSettings,
    seed: int,
    optimizer: torch.optim.Optimizer | None = None,
) -> TrainResult:
    """Train ``model`` in place on the client's training samples.

    Batches are shuffled by a generator seeded with ``seed``. With DP-SGD settings the
    training runs through Opacus (per-sample clipping, Gaussian noise, Poisson batches)
    with its noise drawn from the same seeded generator. ``optimizer`` (from
    :func:`make_optimizer` over ``model``) is reused with its state cleared, which is the
    same as a fresh one; without it a fresh one is built.
    """
    if optimizer is None:
        optimizer = make_optimizer(model, settings)
    else:
        optimizer.state.clear()  # momentum buffers, Adam moments: a fresh start
    with seeded(seed, device=_device_of(model)):  # dropout and anything else drawing from torch's global RNG
        return _train(model=model, data=data, settings=settings, seed=seed, optimizer=optimizer)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _train(
    *, model: nn.Module, data: ClientData, settings: TrainSettings, seed: int, optimizer: torch.optim.Optimizer
) -> TrainResult:
    model.train()  # a reused model may come from evaluation; Opacus needs training mode
    generator = torch.Generator().manual_seed(seed)
    device = _device_of(model)
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]]
    trained: nn.Module = model
    if settings.dpsgd_noise_multiplier is None:
        loader = _ShuffledBatches(x_train, y_train, batch_size=settings.batch_size, generator=generator)
    else:  # Opacus draws Poisson batches from a DataLoader of its own making
        from opacus import PrivacyEngine  # imported lazily: only local-DP scenarios pay for it

        loader = DataLoader(
            TensorDataset(x_train, y_train), batch_size=settings.batch_size, shuffle=True, generator=generator
        )

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            engine = PrivacyEngine(accountant="rdp")
            trained, optimizer, loader = engine.make_private(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                noise_multiplier=settings.dpsgd_noise_multiplier,
                max_grad_norm=settings.dpsgd_clip_norm,
                poisson_sampling=True,
                noise_generator=generator if device.type == "cpu" else torch.Generator(device).manual_seed(seed),
            )
    trained.train()
    loss_fn = nn.CrossEntropyLoss()
    total_loss, batches = 0.0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(settings.epochs):
            for x, y in loader:
                optimizer.zero_grad()
                if len(y) == 0:
                    # an empty Poisson batch still takes a step: under DP-SGD Opacus adds
                    # noise to the zero gradient, as the accountant assumes
                    if trained is model:
                        continue
                    nn.functional.cross_entropy(trained(x), y, reduction="sum").backward()  # 0, no NaN
                    optimizer.step()
                    continue
                loss = loss_fn(trained(x), y)
                loss.backward()
                optimizer.step()
                total_loss += float(loss)
                batches += 1
    noise_std = None
    if trained is not model:
        trained.remove_hooks()  # the Opacus wrapper trained ``model``'s own parameters
        noise_std = optimizer.noise_multiplier * optimizer.max_grad_norm / optimizer.expected_batch_size
    return TrainResult(num_examples=data.num_train, mean_loss=total_loss / max(batches, 1), noise_std=noise_std)


def shuffled_batches(*, num_samples: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's batches of sample indices, drawn from ``generator`` exactly as
    ``DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)`` draws
    them (its iterator's base seed, the epoch's permutation, and the permutation its
    sampler draws once the epoch is exhausted), without its per-sample indexing and
    collation (~1 ms a client of 100 samples). A test checks it against DataLoader."""
    if num_samples <= 0:
        raise ValueError(f"a client needs training samples to train, it has {num_samples}")
    torch.empty((), dtype=torch.int64).random_(generator=generator)  # the loader iterator's base seed
    order = torch.randperm(num_samples, generator=generator)
    torch.randperm(num_samples, generator=generator)  # RandomSampler's draw for the remainder, at the end
    return list(order.split(batch_size))


@dataclass(frozen=True)
class _ShuffledBatches:
    """A client's (x, y) batches, each epoch shuffled as :func:`shuffled_batches` says."""

    x: torch.Tensor
    y: torch.Tensor
    batch_size: int
    generator: torch.Generator

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in shuffled_batches(num_samples=len(self.y), batch_size=self.batch_size, generator=self.generator):
            yield self.x[batch], self.y[batch]


@torch.no_grad()
def evaluate_client(*, model: nn.Module, data: ClientData, batch_size: int = 256) -> tuple[float, int, int]:
    """Summed loss, number correct and number of held-out samples of one client."""
    model.eval()
    device = _device_of(model)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    loss_sum, correct = 0.0, 0
    for start in range(0, data.num_test, batch_size):
        x = data.x_test[start : start + batch_size].to(device)
        y = data.y_test[start : start + batch_size].to(device)
        logits = model(x)
        loss_sum += float(loss_fn(logits, y))
        correct += int((logits.argmax(dim=1) == y).sum())
    return loss_sum, correct, data.num_test
