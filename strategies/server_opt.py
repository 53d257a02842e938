"""Server optimisers: how the averaged (noisy) update moves the global model.

The averaged update is post-processing of the DP release, so any server optimiser keeps
the guarantee (Reddi et al. 2021, "Adaptive Federated Optimization").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class ServerOptimizer(ABC):
    """Applies one averaged update to the flat global parameters."""

    @abstractmethod
    def step(self, *, params: np.ndarray, mean_update: np.ndarray) -> np.ndarray:
        """Return the new global parameters."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - stateless by default
        """Restore what :meth:`state_dict` returned."""


class FedAvgOptimizer(ServerOptimizer):
    """x <- x + lr * mean_update (lr 1 is plain FedAvg)."""

    def __init__(self, *, lr: float = 1.0) -> None:
        self.lr = lr

    def step(self, *, params: np.ndarray, mean_update: np.ndarray) -> np.ndarray:
        return params + self.lr * mean_update


class FedAdamOptimizer(ServerOptimizer):
    """FedAdam: Adam on the pseudo-gradient -mean_update (Reddi et al. 2021)."""

    def __init__(self, *, lr: float, beta1: float, beta2: float, tau: float) -> None:
        self.lr, self.beta1, self.beta2, self.tau = lr, beta1, beta2, tau
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None

    def step(self, *, params: np.ndarray, mean_update: np.ndarray) -> np.ndarray:
        if self.m is None or self.v is None:
            self.m = np.zeros_like(mean_update)
            self.v = np.zeros_like(mean_update)
        self.m = self.beta1 * self.m + (1 - self.beta1) * mean_update
        self.v = self.beta2 * self.v + (1 - self.beta2) * mean_update**2
        return params + self.lr * self.m / (np.sqrt(self.v) + self.tau)

    def state_dict(self) -> dict[str, Any]:
        return {"m": self.m, "v": self.v}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m, self.v = state["m"], state["v"]
