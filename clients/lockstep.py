"""Many clients' local training in lockstep: one batched SGD step of all of them at a time.

A small dense model (logistic regression, an MLP) spends most of a local SGD step in
per-call overhead, not arithmetic, so training its clients one after the other pays that
overhead once per client and step. Here every client of a group keeps its own copy of
the weights (stacked), and step t of all clients still training is one batched forward
(batched matrix products over the copies) and one backward pass: each client's batch t of its
own shuffled schedule (the batches :func:`fedsim.clients.training.shuffled_batches`
draws from its seed, epoch after epoch), its mean loss, its own SGD step (with momentum
as ``torch.optim.SGD`` takes it). Clients are ordered by their number of steps, so the
ones still training are a prefix of the stack and finished ones cost nothing.

Each client's trained weights equal its client-by-client training's up to float rounding
(tests check updates to 1e-5 relative); only ``nn.Sequential`` models of dense layers and
elementwise activations are trained this way (convolutions under ``torch.func.vmap``
gained little and drifted more).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedsim.clients.training import TrainSettings, shuffled_batches

#: clients per lockstep group (bounds the stacked weights and batches held at once)
GROUP_USERS = 32

#: the layers a lockstep model may stack in its ``nn.Sequential`` (:func:`_forward` runs them)
_LAYERS = (nn.Flatten, nn.Linear, nn.Identity, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.ELU)


@dataclass(frozen=True)
class Trained:
    """A client's weights after lockstep training and its mean training loss."""

    weights: dict[str, torch.Tensor]
    mean_loss: float


def trains_in_lockstep(*, model: nn.Module, settings: TrainSettings, device: str) -> bool:
    """Whether clients of ``model`` trained with ``settings`` on ``device`` train in lockstep:
    a sequence of dense layers and activations, on the CPU, SGD (momentum allowed), no
    local DP-SGD."""
    return (
        device == "cpu"
        and settings.optimizer == "sgd"
        and settings.dpsgd_noise_multiplier is None
        and not list(model.buffers())
        and type(model) is nn.Sequential
        and all(type(layer) in _LAYERS for layer in model.children())
    )


def train_lockstep(
    model: nn.Module, clients: list[tuple[torch.Tensor, torch.Tensor, int]], *, settings: TrainSettings
) -> list[Trained]:
    """Train each client, given as (x, y, seed), from ``model``'s weights (left unchanged),
    in lockstep groups of clients with similar step counts; results in the given order."""
    schedules = [_schedule(num_samples=len(y), seed=seed, settings=settings) for _, y, seed in clients]
    order = sorted(range(len(clients)), key=lambda i: -len(schedules[i]))
    results: list[Trained | None] = [None] * len(clients)
    for first in range(0, len(order), GROUP_USERS):
        group = order[first : first + GROUP_USERS]
        trained = _train_group(model, [clients[i] for i in group], [schedules[i] for i in group], settings)
        for index, result in zip(group, trained):
            results[index] = result
    return results


def _schedule(*, num_samples: int, seed: int, settings: TrainSettings) -> list[torch.Tensor]:
    """The client's batches of sample indices, epoch after epoch, as its own training draws them."""
    generator = torch.Generator().manual_seed(seed)
    return [
        batch
        for _ in range(settings.epochs)
        for batch in shuffled_batches(num_samples=num_samples, batch_size=settings.batch_size, generator=generator)
    ]


def _train_group(model: nn.Module, clients, schedules: list[list[torch.Tensor]], settings: TrainSettings):
    """One lockstep group, its clients ordered by non-increasing step count."""
    count, width = len(clients), settings.batch_size
    steps = [len(schedule) for schedule in schedules]
    # all samples in one table; step t's batches as rows of indices into it, padded with weight 0
    offsets = torch.tensor([0, *(len(y) for _, y, _ in clients)]).cumsum(0)
    x_all, y_all = torch.cat([x for x, _, _ in clients]), torch.cat([y for _, y, _ in clients])
    index = torch.zeros(steps[0], count, width, dtype=torch.long)
    weight = torch.zeros(steps[0], count, width)
    for row, schedule in enumerate(schedules):
        for t, batch in enumerate(schedule):
            index[t, row, : len(batch)] = batch + offsets[row]
            weight[t, row, : len(batch)] = 1.0 / len(batch)
    stacked = {name: p.detach().expand(count, *p.shape).clone() for name, p in model.named_parameters()}
    momentum = {name: None for name in stacked}
    loss_sums = torch.zeros(count, dtype=torch.float64)
    for t in range(steps[0]):
        active = sum(1 for s in steps if s > t)  # a prefix: the stack is ordered by steps
        leaves = {name: value[:active].detach().requires_grad_() for name, value in stacked.items()}
        logits = _forward(model, leaves, x_all[index[t, :active]])
        losses = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y_all[index[t, :active]].reshape(-1), reduction="none"
        )
        per_client = (losses.view(active, width) * weight[t, :active]).sum(dim=1)
        grads = torch.autograd.grad(per_client.sum(), list(leaves.values()))
        with torch.no_grad():
            for (name, value), grad in zip(stacked.items(), grads):
                if settings.momentum:  # torch.optim.SGD: buf = grad at the first step, then m * buf + grad
                    buffer = momentum[name]
                    if buffer is None:
                        momentum[name] = buffer = grad.clone()
                    else:
                        buffer = buffer[:active].mul_(settings.momentum).add_(grad)
                    grad = buffer
                value[:active].add_(grad, alpha=-settings.lr)
        loss_sums[:active] += per_client.detach().to(torch.float64)
    return [
        Trained({name: value[row] for name, value in stacked.items()}, float(loss_sums[row]) / steps[row])
        for row in range(count)
    ]


def _forward(model: nn.Sequential, weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The model's forward pass for each client's own weights at once: ``weights`` holds
    each parameter stacked over clients, ``x`` (clients, batch, ...) each client's batch."""
    for name, layer in model.named_children():
        if isinstance(layer, nn.Linear):
            weight = weights[f"{name}.weight"].transpose(1, 2)
            bias = weights.get(f"{name}.bias")
            x = torch.bmm(x, weight) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, weight)
        elif isinstance(layer, nn.Flatten):  # its dims count from a client's batch: one more here
            x = x.flatten(*(d if d < 0 else d + 1 for d in (layer.start_dim, layer.end_dim)))
        else:  # elementwise activations
            x = layer(x)
    return x
