"""The adversary's design pool: mock clients trained from the frozen global model.

The design-pool users never take part in training. Each trains locally from the audited
round's global model with the clients' own optimiser and settings (on the nodes, in
their own shares of the round: fedsim.clients.node.round_requests), and its update is
clipped to the round's clip norm. Updates are kept as float32 rows, in memory when small
and in a memory-mapped temporary file when large, and read back in minibatches, so the
crafting never needs an m x d matrix in RAM.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

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
    def from_rows(cls, rows: np.ndarray) -> DesignPool:
        """A pool of the given clipped updates (n, d), kept as float32."""
        pool = cls(count=rows.shape[0], dim=rows.shape[1])
        for row, update in enumerate(rows):
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
