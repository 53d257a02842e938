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
from fedsim.seeding import seeded


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


class TextClassifier(nn.Module):
    """Embedding -> stacked LSTM -> dense on the last time step (LEAF's text models).

    ``forward(x) == forward_embedded(self.embedding(x))``: the canary adversary crafts text
    inputs through the embedding matrix (Gumbel-softmax) and calls ``forward_embedded``.
    With ``dp_compatible`` the LSTM is Opacus' ``DPLSTM`` (same maths, per-sample
    gradients); its parameter names differ from ``nn.LSTM``'s, so a run uses one or the
    other throughout.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        embed_dim: int,
        hidden: int,
        layers: int,
        num_classes: int,
        dropout: float,
        dp_compatible: bool,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        if dp_compatible:
            from opacus.layers import DPLSTM  # imported lazily: only local-DP scenarios need it

            self.lstm: nn.Module = DPLSTM(
                embed_dim, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
            )
        else:
            self.lstm = nn.LSTM(
                embed_dim, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
            )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, num_classes)

    def forward_embedded(self, embedded: torch.Tensor) -> torch.Tensor:
        """Logits from embedded inputs of shape (batch, time, embed_dim)."""
        outputs, _ = self.lstm(embedded)
        return self.fc(self.dropout(outputs[:, -1, :]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_embedded(self.embedding(x))

    def dropout_masks(self, *, batch: int, seq_len: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The dropout masks a training-mode ``forward`` of ``batch`` sequences draws from
        torch's global RNG, drawn here in the same order and shapes (each already divided by
        1 - p, as dropout scales): ``nn.LSTM``'s between its first two layers, laid out
        (seq_len, batch, hidden) as the LSTM draws it (None without it), then the one
        before the dense layer, (batch, hidden) (None without dropout). Only for the
        ``nn.LSTM`` variant (two layers at most)."""
        lstm = self.lstm
        if not isinstance(lstm, nn.LSTM) or lstm.num_layers > 2:
            raise TypeError("dropout_masks reproduces nn.LSTM with at most two layers")
        between = None
        if lstm.num_layers == 2 and lstm.dropout > 0:
            keep = 1 - lstm.dropout
            between = torch.empty(seq_len, batch, lstm.hidden_size).bernoulli_(keep).div_(keep)
        before_dense = None
        if self.dropout.p > 0:
            keep = 1 - self.dropout.p
            before_dense = torch.empty(batch, lstm.hidden_size).bernoulli_(keep).div_(keep)
        return between, before_dense


def _text_shape(name: str, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 1:
        raise ScenarioError(
            f"model {name!r} needs token-id inputs of shape (seq_len,), got {input_shape}; "
            "use it with data.name sent140 or shakespeare"
        )


def _sent140_lstm(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: int,
    vocab_size: int | None = None,
    embed_dim: int = 100,
    dp_compatible: bool = False,
    **_: object,
) -> nn.Module:
    """LEAF/CANIFE Sent140: embedding, 2-layer LSTM (CANIFE: 100 hidden), dense -> 2 classes.

    LEAF and CANIFE embed with frozen GloVe 300d vectors; fedsim learns an ``embed_dim``
    embedding over its own vocabulary (default 10,000 words + <pad>/<unk>).
    """
    from fedsim.data.text import DEFAULT_MAX_WORDS, SPECIALS

    _text_shape("sent140_lstm", input_shape)
    return TextClassifier(
        vocab_size=vocab_size or DEFAULT_MAX_WORDS + len(SPECIALS),
        embed_dim=embed_dim,
        hidden=hidden,
        layers=2,
        num_classes=num_classes,
        dropout=0.1,
        dp_compatible=dp_compatible,
    )


def _shakespeare_lstm(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: int,
    vocab_size: int | None = None,
    embed_dim: int = 8,
    dp_compatible: bool = False,
    **_: object,
) -> nn.Module:
    """LEAF/CANIFE Shakespeare: embedding 8, 2-layer LSTM (256 hidden), next-character logits."""
    _text_shape("shakespeare_lstm", input_shape)
    return TextClassifier(
        vocab_size=vocab_size or num_classes,
        embed_dim=embed_dim,
        hidden=hidden,
        layers=2,
        num_classes=num_classes,
        dropout=0.0,
        dp_compatible=dp_compatible,
    )


def _image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ScenarioError(f"model {name!r} needs image inputs (channels, height, width), got shape {input_shape}")
    return input_shape  # type: ignore[return-value]


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def _celeba_cnn(*, input_shape: tuple[int, ...], num_classes: int, hidden: int, **_: object) -> nn.Module:
    """LEAF's CelebA CNN: 4 blocks of (3x3 conv, ``hidden`` filters (LEAF: 32), norm, 2x2
    max-pool, ReLU), then a dense layer; GroupNorm replaces LEAF's BatchNorm."""
    channels, height, width = _image_shape("celeba_cnn", input_shape)
    blocks: list[nn.Module] = []
    for _ in range(4):
        blocks += [
            nn.Conv2d(channels, hidden, kernel_size=3, padding=1),
            nn.GroupNorm(_groups(hidden), hidden),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.ReLU(),
        ]
        channels = hidden
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    return nn.Sequential(*blocks, nn.Flatten(), nn.Linear(hidden * height * width, num_classes))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.GroupNorm(_groups(cout), cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


def _resnet_gn(
    *, input_shape: tuple[int, ...], num_classes: int, hidden: int, blocks: int = 1, **_: object
) -> nn.Module:
    """A small CIFAR ResNet (He et al. 2016, section 4.2) with GroupNorm: a 3x3 stem of
    ``hidden`` channels (default scenario value 16), three stages of ``blocks`` basic blocks
    with 1x, 2x, 4x the channels (blocks=1: ResNet-8, 3: ResNet-20), average pool, dense."""
    channels, _, _ = _image_shape("resnet_gn", input_shape)
    layers: list[nn.Module] = [
        nn.Conv2d(channels, hidden, 3, padding=1, bias=False),
        nn.GroupNorm(_groups(hidden), hidden),
        nn.ReLU(),
    ]
    cin = hidden
    for stage, width in enumerate((hidden, 2 * hidden, 4 * hidden)):
        for block in range(blocks):
            layers.append(_BasicBlock(cin, width, stride=2 if stage > 0 and block == 0 else 1))
            cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "logreg": _logreg,
    "mlp": _mlp,
    "cnn": _cnn,
    "sent140_lstm": _sent140_lstm,
    "shakespeare_lstm": _shakespeare_lstm,
    "celeba_cnn": _celeba_cnn,
    "resnet_gn": _resnet_gn,
}
#: models whose inputs are token ids (data sets with input_kind "long")
TEXT_MODELS = ("sent140_lstm", "shakespeare_lstm")


def build_model(
    *,
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: int = 64,
    seed: int = 0,
    dp_compatible: bool = False,
    vocab_size: int | None = None,
    **options: object,
) -> nn.Module:
    """Build a model of the zoo with weights initialised from ``seed``.

    Args:
        name: A key of ``MODELS``.
        input_shape: One sample's shape (token ids: ``(seq_len,)``).
        num_classes: Output classes.
        hidden: Width (LSTM hidden size, CNN filters, ResNet stem channels).
        seed: Seed of the initial weights.
        dp_compatible: Build the Opacus-compatible variant (``DPLSTM`` instead of
            ``nn.LSTM``); needed for local DP-SGD. Image models use GroupNorm always.
        vocab_size: Embedding rows of text models (the data set's ``vocab_size``);
            default: Sent140's 10,002, Shakespeare's ``num_classes``.
        **options: Model-specific keywords (``embed_dim`` for text models, ``blocks``
            for ``resnet_gn``).
    """
    if name not in MODELS:
        raise ScenarioError(f"scenario key 'model.name': got {name!r}; allowed: {', '.join(MODELS)}")
    kwargs: dict[str, object] = dict(options)
    if name in TEXT_MODELS:
        kwargs.update(dp_compatible=dp_compatible, vocab_size=vocab_size)
    with seeded(seed, device=torch.device("cpu")):  # no other thread draws meanwhile (a client, an audit)
        return MODELS[name](input_shape=tuple(input_shape), num_classes=num_classes, hidden=hidden, **kwargs)
