"""The model zoo: small torch models built from a name and the data set's shapes.

Every model here is Opacus-compatible (no BatchNorm; GroupNorm where a norm is needed),
so the same model serves central DP and local DP-SGD.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from fedsim.errors import ScenarioError


def _logreg(*, input_shape: tuple[int, ...], num_classes: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def _mlp(*, input_shape: tuple[int, ...], num_classes: int, hidden: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def _cnn(*, input_shape: tuple[int, ...], num_classes: int, hidden: int) -> nn.Module:
    if len(input_shape) != 3:
        raise ScenarioError(
            f"model 'cnn' needs image inputs (channels, height, width), got shape {input_shape}; "
            "use model.name=mlp or logreg for feature vectors"
        )
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 16, kernel_size=3, padding=1),
        nn.GroupNorm(4, 16),
        nn.ReLU(),
        nn.Conv2d(16, 32, kernel_size=3, padding=1),
        nn.GroupNorm(4, 32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


MODELS: dict[str, Callable[..., nn.Module]] = {"logreg": _logreg, "mlp": _mlp, "cnn": _cnn}


def build_model(
    *, name: str, input_shape: tuple[int, ...], num_classes: int, hidden: int = 64, seed: int = 0
) -> nn.Module:
    """Build a model of the zoo with weights initialised from ``seed``."""
    if name not in MODELS:
        raise ScenarioError(f"scenario key 'model.name': got {name!r}; allowed: {', '.join(MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](input_shape=tuple(input_shape), num_classes=num_classes, hidden=hidden)
