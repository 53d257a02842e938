"""The adversary's design pool: mock clients trained from the frozen global model.

The design-pool users never take part in training. Each trains locally from the audited
round's global model with the clients' own optimiser and settings, and its update is
clipped to the round's clip norm. Updates are kept as float32 rows, in memory when small
and in a memory-mapped temporary file when large, and read back in minibatches, so the
crafting never needs an m x d matrix in RAM.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from fedsim.clients.work import train_one
from fedsim.config import Scenario
from fedsim.params import flatten_state
from fedsim.strategies.aggregation import clip_updates

IN_MEMORY_BYTES = 256 * 2**20


class DesignPool:
    """Clipped updates of m design-pool mock clients, read in minibatches."""

    def __init__(self, *, count: int, dim: int) -> None:
        self.count, self.dim = count, dim
        self._tmp: tempfile.TemporaryDirectory | None = None
        if count * dim * 4 <= IN_MEMORY_BYTES:
            self.rows = np.zeros((count, dim), dtype=np.float32)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="fedsim-design-")
            self.rows = np.lib.format.open_memmap(
                Path(self._tmp.name) / "design.npy", mode="w+", dtype=np.float32, shape=(count, dim)
            )

    @classmethod
    def train(
        cls,
        *,
        scenario: Scenario,
        start: dict[str, torch.Tensor],
        client_ids: list[int],
        round_number: int,
        clip_norm: float | None,
    ) -> DesignPool:
        """Train each design-pool user from ``start`` and keep its clipped update."""
        start_flat = flatten_state(start)
        pool = cls(count=len(client_ids), dim=start_flat.shape[0])
        for row, client_id in enumerate(client_ids):
            trained = train_one(scenario=scenario, start=start, client_id=client_id, round_number=round_number)
            update = trained.update
            if clip_norm is not None:
                update = clip_updates(update[None], clip_norm=clip_norm)[0]
            pool.rows[row] = update
        return pool

    def minibatch(self, *, rng: np.random.Generator, size: int) -> torch.Tensor:
        """A random minibatch of design updates (without replacement) as a float tensor."""
        index = np.sort(rng.choice(self.count, size=min(size, self.count), replace=False))
        return torch.from_numpy(np.asarray(self.rows[index], dtype=np.float32))

    def close(self) -> None:
        """Free the rows (and the temporary file, if any)."""
        self.rows = np.zeros((0, self.dim), dtype=np.float32)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
