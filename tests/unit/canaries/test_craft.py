"""Canary crafting: the objective really goes down, the gradient norm reaches C_norm,
and the crafted directions avoid the design updates."""

import numpy as np
import pytest
import torch
from torch import nn

import fedsim.canaries.design as design_module
from fedsim.canaries.craft import (
    FrozenWeights,
    _objective,
    _objective_grad,
    craft_sample_canary,
    craft_update_canary,
    objective_gradient,
)
from fedsim.canaries.design import DesignPool
from fedsim.models import build_model


def _pool(rows: np.ndarray) -> DesignPool:
    pool = DesignPool(count=rows.shape[0], dim=rows.shape[1])
    pool.rows[:] = rows
    return pool


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 4))


def test_sample_canary_meets_the_norm_and_has_small_projection():
    model = _model()
    dim = sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(0)
    design = _pool(rng.normal(size=(30, dim)).astype(np.float32) * 0.1)
    canary = craft_sample_canary(
        model=model,
        design=design,
        input_shape=(12,),
        input_kind="float",
        label=2,
        clip_norm=1.0,
        norm_constant=5.0,
        iterations=150,
        lr=0.1,
        batch_size=10,
        seed=3,
    )
    assert canary.health > 0.5 and canary.loss_final < canary.loss_init
    # recompute the canary's gradient independently: its norm reaches C_norm
    loss = nn.functional.cross_entropy(model(canary.x[None]), torch.tensor([canary.y]))
    g = FrozenWeights(model).grad(loss, create_graph=False)
    assert float(g.norm()) >= 5.0 * 0.95
    unit = (g / g.norm()).numpy()
    random_unit = rng.normal(size=dim)
    random_unit /= np.linalg.norm(random_unit)
    assert np.mean((design.rows @ unit) ** 2) < np.mean((design.rows @ random_unit) ** 2)


def test_sample_canary_crafting_stops_once_its_health_stops_rising():
    model = _model()
    dim = sum(p.numel() for p in model.parameters())
    design = _pool(np.random.default_rng(0).normal(size=(30, dim)).astype(np.float32) * 0.1)
    common = dict(
        model=model, design=design, input_shape=(12,), input_kind="float", label=2, clip_norm=1.0, norm_constant=5.0
    )
    full = craft_sample_canary(**common, iterations=300, lr=0.1, batch_size=10, seed=3, min_improvement=0.0)
    early = craft_sample_canary(**common, iterations=300, lr=0.1, batch_size=10, seed=3, min_improvement=0.01)
    assert full.steps == 300
    assert early.steps < 300 and early.steps % 10 == 0
    # it stopped where 290 further steps gain less than two points of health
    assert early.health > full.health - 0.02
    # the same steps up to the stop: the early canary is the full run's best at that point
    again = craft_sample_canary(**common, iterations=early.steps, lr=0.1, batch_size=10, seed=3)
    assert torch.equal(again.x, early.x) and again.health == early.health


@pytest.mark.parametrize("text", [False, True])
def test_crafting_gradient_equals_the_double_backward(text):
    """The finite-difference crafting gradient against differentiating through the
    backward pass (what crafting did before): the same direction, to ~1e-3."""
    torch.manual_seed(0)
    if text:
        model = build_model(name="shakespeare_lstm", input_shape=(20,), num_classes=30, hidden=16, vocab_size=30)
        variable = torch.randn(20, 30).requires_grad_(True)
        loss_of = lambda: nn.functional.cross_entropy(  # noqa: E731
            model.forward_embedded((torch.softmax(variable, -1) @ model.embedding.weight)[None]), torch.tensor([3])
        )
    else:
        model = _model()
        variable = torch.randn(12).requires_grad_(True)
        loss_of = lambda: nn.functional.cross_entropy(model(variable[None]), torch.tensor([2]))  # noqa: E731
    dim = sum(p.numel() for p in model.parameters())
    batch = torch.randn(8, dim) * 0.1
    objective = lambda g: _objective(g, batch, clip_norm=1.0, norm_constant=5.0)  # noqa: E731
    (reference,) = torch.autograd.grad(objective(FrozenWeights(model).grad(loss_of(), create_graph=True)), variable)
    before = [p.detach().clone() for p in model.parameters()]
    estimate = objective_gradient(
        weights=FrozenWeights(model),
        variable=variable,
        model_loss=loss_of,
        objective_grad=lambda g: _objective_grad(g, batch, clip_norm=1.0, norm_constant=5.0),
    )
    assert float((estimate - reference).norm()) < 1e-2 * float(reference.norm())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the model is restored


@pytest.mark.parametrize("norm_constant", [0.1, 50.0])  # the hinge inactive and active
def test_the_closed_form_objective_gradient_equals_autograd(norm_constant):
    generator = torch.Generator().manual_seed(0)
    g, batch = torch.randn(300, generator=generator), torch.randn(16, 300, generator=generator)
    leaf = g.clone().requires_grad_(True)
    (reference,) = torch.autograd.grad(_objective(leaf, batch, clip_norm=0.7, norm_constant=norm_constant), leaf)
    closed = _objective_grad(g, batch, clip_norm=0.7, norm_constant=norm_constant)
    assert float((closed - reference).norm()) < 1e-5 * float(reference.norm())


def test_update_canary_is_nearly_orthogonal_to_design_updates():
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(3, 200))
    rows = (rng.normal(size=(40, 3)) @ basis).astype(np.float32)  # updates in a 3-d subspace
    canary = craft_update_canary(design=_pool(rows), iterations=300, lr=0.05, batch_size=16, seed=0)
    assert np.linalg.norm(canary.direction) == pytest.approx(1.0)
    assert canary.health > 0.9
    assert np.abs(rows @ canary.direction).max() < 0.1 * np.abs(rows @ basis[0] / np.linalg.norm(basis[0])).max()


def test_large_design_pools_live_in_a_memory_mapped_file(monkeypatch):
    monkeypatch.setattr(design_module, "IN_MEMORY_BYTES", 1024)
    rows = np.arange(600, dtype=np.float32).reshape(6, 100)
    pool = _pool(rows)
    assert isinstance(pool.rows, np.memmap)
    batch = pool.minibatch(rng=np.random.default_rng(0), size=4)
    assert batch.shape == (4, 100)
    assert {int(r[0]) // 100 for r in batch.numpy()} <= set(range(6))
    pool.close()
