"""Model weights as one flat float vector, and back.

Updates are clipped, summed and noised as flat vectors; models travel in Flower
messages as state dicts. These two functions convert between the two views.
"""

from __future__ import annotations

import numpy as np
import torch


def flatten_state(state: dict[str, torch.Tensor | np.ndarray]) -> np.ndarray:
    """Concatenate a state dict's floating-point tensors, in key order, as float64."""
    parts = [value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value for value in state.values()]
    return np.concatenate([np.ravel(part) for part in parts], dtype=np.float64) if parts else np.zeros(0)


def unflatten_state(vector: np.ndarray, *, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Split a flat vector into a state dict shaped (and typed) like ``template``."""
    state, offset = {}, 0
    for key, value in template.items():
        size = value.numel()
        chunk = vector[offset : offset + size].reshape(tuple(value.shape))
        state[key] = torch.as_tensor(chunk, dtype=value.dtype)
        offset += size
    if offset != vector.shape[0]:
        raise ValueError(f"vector has {vector.shape[0]} values, the model {offset}")
    return state
