"""Crafting CANIFE canaries (Maddock, Sablayrolles & Stock 2022).

A *sample* canary is an input x (pixels/features; for text, token logits relaxed with
Gumbel-softmax through the embedding matrix, Guo et al. 2021) optimised with Adam so
that its loss gradient g = grad_theta loss(f_theta(x), y)

- has norm at least C_norm (hinge d * relu(C_norm - |g|)^2), so the canary client's
  update is always clipped to exactly C, and
- has a small projection on the design updates: mean over a minibatch B of
  <C g / |g|, u>^2.

Text canaries use straight-through Gumbel-softmax (the forward pass sees real one-hot
tokens, the backward pass the relaxed gradient), are discretised at the end, and their
gradient is recomputed on the real tokens.

The crafting objective depends on the input through the model's parameter gradient, so
its input gradient is a mixed second derivative; it is computed as a finite difference
of two ordinary input gradients (:func:`objective_gradient`) rather than by
differentiating through the backward pass.

An *update* canary is the stronger threat model: the rogue client submits a crafted
update directly, a unit direction with small projection on the design updates.

Canary health = (L_init - L_final) / L_init of the crafting objective. A sample canary's
crafting checks the discrete objective every CHECK_EVERY steps and stops once PATIENCE
checks in a row each raised the health by less than ``min_improvement`` (the crafting
has converged: on Shakespeare's text canaries health moves by < 0.01 after ~20 steps).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedsim.canaries.design import DesignPool
from fedsim.seeding import seeded

CHECK_EVERY = 10  # crafting steps between checks of the discrete objective
PATIENCE = 2  # checks in a row that gain less than ``min_improvement`` stop the crafting
FD_STEP = 1e-4  # finite-difference step of the crafting gradient, relative to the weights' norm


@dataclass(frozen=True)
class Canary:
    """A crafted canary: an input (sample canary) or a direction (update canary)."""

    kind: str
    health: float
    loss_init: float
    loss_final: float
    gradient_norm: float | None = None
    steps: int | None = None  # Adam steps taken
    x: torch.Tensor | None = None
    y: int | None = None
    direction: np.ndarray | None = None


class FrozenWeights:
    """A model's parameters in state-dict order, read once for many gradients at fixed weights.

    Flat vectors follow the state dict (buffers as zero slots). :meth:`shifted` moves the
    parameters and restores them exactly from a copy taken here, so the weights must not
    change otherwise while this object is in use (the crafting's model is frozen).
    """

    def __init__(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        state = model.state_dict(keep_vars=True)
        self.params = [params[k] for k in state if k in params]
        self.slots = [(params.get(k), v.numel(), v.dtype) for k, v in state.items()]
        self.saved = [p.detach().clone() for p in self.params]
        self.norm = float(torch.cat([p.reshape(-1) for p in self.saved]).norm())

    def grad(
        self, loss: torch.Tensor, *, create_graph: bool, inputs: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Gradient of ``loss`` w.r.t. the parameters, flat; with ``inputs``, also the
        gradient w.r.t. them, from the same backward pass."""
        extra = [] if inputs is None else [inputs]
        (*grads,) = torch.autograd.grad(loss, [*self.params, *extra], create_graph=create_graph, allow_unused=True)
        input_grad = grads.pop() if inputs is not None else None
        grads = iter(grads)
        parts = []
        for param, numel, dtype in self.slots:
            if param is None:
                parts.append(torch.zeros(numel, dtype=dtype))
            else:
                grad = next(grads)
                parts.append((torch.zeros_like(param) if grad is None else grad).reshape(-1))
        flat = torch.cat(parts)
        return flat if inputs is None else (flat, input_grad)

    @contextlib.contextmanager
    def shifted(self, shift: torch.Tensor) -> Iterator[None]:
        """The parameters moved by ``shift`` (flat, as :meth:`grad`) inside, restored exactly after."""
        try:
            with torch.no_grad():
                offset = 0
                for param, numel, _ in self.slots:
                    if param is not None:
                        param.add_(shift[offset : offset + numel].view_as(param))
                    offset += numel
            yield
        finally:
            with torch.no_grad():
                for param, old in zip(self.params, self.saved):
                    param.copy_(old)


def _objective(g: torch.Tensor, batch: torch.Tensor, *, clip_norm: float, norm_constant: float) -> torch.Tensor:
    norm = g.norm()
    projection = batch @ (clip_norm * g / (norm + 1e-12))
    hinge = torch.relu(norm_constant - norm) ** 2
    return g.shape[0] * hinge + (projection**2).mean()


def _objective_grad(g: torch.Tensor, batch: torch.Tensor, *, clip_norm: float, norm_constant: float) -> torch.Tensor:
    """d :func:`_objective` / d g in closed form (a test checks it against autograd): with
    n = |g|, s = n + 1e-12 and q = batch g, it is
    -2 d relu(C_norm - n) g / n + 2 C^2 / (m s^2) (batch^T q - |q|^2 g / (n s)) for m rows
    (scalars as Python floats: four tensor operations a crafting step)."""
    norm = float(g.norm())
    if norm == 0:
        return torch.zeros_like(g)
    scaled = norm + 1e-12
    projection = batch @ g  # s times the projections of :func:`_objective`
    spread = 2 * clip_norm**2 / (batch.shape[0] * scaled**2)
    along_g = -2 * g.shape[0] / norm * max(norm_constant - norm, 0.0) - spread * float(projection @ projection) / (
        norm * scaled
    )
    return torch.addmv(g, batch.T, projection, beta=along_g, alpha=spread)


def _health(loss_init: float, loss_final: float) -> float:
    return (loss_init - loss_final) / loss_init if loss_init > 0 else 0.0


def objective_gradient(
    *,
    weights: FrozenWeights,
    variable: torch.Tensor,
    model_loss,
    objective_grad,
) -> torch.Tensor:
    """The gradient with respect to ``variable`` of an objective of g = d model_loss / d theta,
    given its gradient ``objective_grad(g)`` = v.

    By the chain rule it is J^T v, the derivative of
    <grad_theta loss, v> with respect to the input: a finite difference of the input
    gradient between theta + h v and theta (h moves theta by FD_STEP of its norm). One
    backward pass gives g and the input gradient at theta, a second one the input
    gradient at theta + h v: two ordinary backward passes instead of a double backward
    through the model (on an LSTM ten times faster), accurate to ~1e-3 relative (tests check 1e-2), which
    Adam's crafting steps absorb. ``weights``: the model's :class:`FrozenWeights`.
    """
    g, at_theta = weights.grad(model_loss(), create_graph=False, inputs=variable)
    v = objective_grad(g.detach())
    v_norm = float(v.norm())
    if v_norm == 0:
        return torch.zeros_like(variable)
    h = FD_STEP * max(weights.norm, 1.0) / v_norm
    with weights.shifted(h * v):
        (moved,) = torch.autograd.grad(model_loss(), variable)
    return (moved - at_theta) / h


def craft_sample_canary(
    *,
    model: nn.Module,
    design: DesignPool,
    input_shape: tuple[int, ...],
    input_kind: str,
    label: int,
    clip_norm: float,
    norm_constant: float,
    iterations: int,
    lr: float,
    batch_size: int,
    seed: int,
    min_improvement: float = 0.0,
) -> Canary:
    """Optimise a canary input for the frozen ``model`` (see module docstring); at most
    ``iterations`` Adam steps, fewer once the health stops rising by ``min_improvement``
    (0: every step)."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    y = torch.tensor([label])
    model.eval()
    weights = FrozenWeights(model)
    text = input_kind == "long"
    if text:
        if not hasattr(model, "embedding") or not hasattr(model, "forward_embedded"):
            raise TypeError("text canaries need a model with .embedding and .forward_embedded()")
        vocab = model.embedding.num_embeddings
        variable = (0.1 * torch.randn((*input_shape, vocab), generator=generator)).requires_grad_(True)
    else:
        variable = torch.randn(input_shape, generator=generator).requires_grad_(True)

    def relaxed_loss(noise_seed: int | None) -> torch.Tensor:
        """The model's loss on the relaxed canary (text: straight-through Gumbel-softmax,
        its noise drawn from ``noise_seed``: the forward pass sees real one-hot tokens)."""
        if not text:
            return F.cross_entropy(model(variable[None]), y)
        with seeded(noise_seed, device=variable.device):  # torch's global RNG, no other thread meanwhile
            soft = F.gumbel_softmax(variable, tau=1.0, hard=True)
        embedded = soft @ model.embedding.weight
        return F.cross_entropy(model.forward_embedded(embedded[None]), y)

    def discrete_gradient() -> torch.Tensor:
        if not text:
            return weights.grad(F.cross_entropy(model(variable[None]), y), create_graph=False).detach()
        tokens = variable.argmax(dim=-1)
        return weights.grad(F.cross_entropy(model(tokens[None]), y), create_graph=False).detach()

    def objective_on(batch: torch.Tensor):
        return lambda g: _objective(g, batch, clip_norm=clip_norm, norm_constant=norm_constant)

    def objective_grad_on(batch: torch.Tensor):
        return lambda g: _objective_grad(g, batch, clip_norm=clip_norm, norm_constant=norm_constant)

    evaluation = design.minibatch(rng=np.random.default_rng(seed + 1), size=design.count)

    def discrete_loss() -> float:
        return float(objective_on(evaluation)(discrete_gradient()))

    loss_init = discrete_loss()
    # keep the best canary seen (checked every CHECK_EVERY steps): the relaxed text
    # objective can move away from the discrete one
    best_loss, best = loss_init, variable.detach().clone()
    optimizer = torch.optim.Adam([variable], lr=lr, fused=True)  # one kernel a step
    step = stalled = 0
    while step < iterations and stalled < PATIENCE:
        step += 1
        batch = design.minibatch(rng=rng, size=batch_size)
        noise_seed = int(rng.integers(2**31)) if text else None
        variable.grad = objective_gradient(
            weights=weights,
            variable=variable,
            model_loss=functools.partial(relaxed_loss, noise_seed),
            objective_grad=objective_grad_on(batch),
        )
        optimizer.step()
        if step % CHECK_EVERY == 0 or step == iterations:
            current = discrete_loss()
            gain = (best_loss - current) / loss_init if loss_init > 0 else 0.0  # in health points
            if current < best_loss:
                best_loss, best = current, variable.detach().clone()
            stalled = stalled + 1 if min_improvement > 0 and gain < min_improvement else 0
    with torch.no_grad():
        variable.copy_(best)
    final_gradient = discrete_gradient()
    loss_final = best_loss
    x = variable.detach().argmax(dim=-1) if text else variable.detach()
    return Canary(
        kind="sample",
        health=_health(loss_init, loss_final),
        loss_init=loss_init,
        loss_final=loss_final,
        gradient_norm=float(final_gradient.norm()),
        steps=step,
        x=x,
        y=label,
    )


def craft_update_canary(*, design: DesignPool, iterations: int, lr: float, batch_size: int, seed: int) -> Canary:
    """A unit direction with small mean squared projection on the design updates."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(design.dim, generator=generator, dtype=torch.float32).requires_grad_(True)

    def loss_on(batch: torch.Tensor) -> torch.Tensor:
        unit = direction / direction.norm()
        return ((batch @ unit) ** 2).mean()

    evaluation = design.minibatch(rng=np.random.default_rng(seed + 1), size=design.count)
    loss_init = float(loss_on(evaluation).detach())
    optimizer = torch.optim.Adam([direction], lr=lr)
    for _ in range(iterations):
        optimizer.zero_grad()
        loss = loss_on(design.minibatch(rng=rng, size=batch_size))
        loss.backward()
        optimizer.step()
    loss_final = float(loss_on(evaluation).detach())
    unit = direction.detach().numpy().astype(np.float64)
    unit /= np.linalg.norm(unit)
    return Canary(
        kind="update", health=_health(loss_init, loss_final), loss_init=loss_init, loss_final=loss_final, direction=unit
    )
