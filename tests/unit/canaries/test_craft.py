"""Canary crafting: the objective really goes down, the gradient norm reaches C_norm,
and the crafted directions avoid the design updates."""

import numpy as np
import pytest
import torch
from torch import nn

import fedsim.canaries.design as design_module
from fedsim.canaries.craft import craft_sample_canary, craft_update_canary, flat_grad
from fedsim.canaries.design import DesignPool


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
    g = flat_grad(model, loss, create_graph=False)
    assert float(g.norm()) >= 5.0 * 0.95
    unit = (g / g.norm()).numpy()
    random_unit = rng.normal(size=dim)
    random_unit /= np.linalg.norm(random_unit)
    assert np.mean((design.rows @ unit) ** 2) < np.mean((design.rows @ random_unit) ** 2)


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
