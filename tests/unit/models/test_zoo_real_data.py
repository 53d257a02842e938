"""Models of the real data sets: shapes, the text models' embedding hook, Opacus variants."""

import pytest
import torch
from torch import nn

from fedsim.models import build_model


@pytest.mark.parametrize(
    "name, shape, classes, hidden",
    [
        ("sent140_lstm", (25,), 2, 100),
        ("shakespeare_lstm", (80,), 81, 256),
    ],
)
def test_text_models_expose_embedding_and_forward_embedded(name, shape, classes, hidden):
    model = build_model(name=name, input_shape=shape, num_classes=classes, hidden=hidden, seed=0).eval()
    assert isinstance(model.embedding, nn.Embedding)
    assert model.embedding.num_embeddings == (10002 if name == "sent140_lstm" else 81)
    x = torch.randint(0, classes, (3, shape[0]))
    logits = model(x)
    assert logits.shape == (3, classes)
    assert torch.allclose(logits, model.forward_embedded(model.embedding(x)))
    lstm = model.lstm
    assert isinstance(lstm, nn.LSTM) and lstm.num_layers == 2 and lstm.hidden_size == hidden
    assert model.embedding.embedding_dim == (100 if name == "sent140_lstm" else 8)
    again = build_model(name=name, input_shape=shape, num_classes=classes, hidden=hidden, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_dp_compatible_text_model_trains_under_opacus():
    from opacus import PrivacyEngine
    from opacus.layers import DPLSTM
    from opacus.validators import ModuleValidator

    model = build_model(
        name="shakespeare_lstm", input_shape=(80,), num_classes=81, hidden=16, seed=0, dp_compatible=True
    )
    assert isinstance(model.lstm, DPLSTM) and ModuleValidator.validate(model, strict=False) == []
    assert ModuleValidator.validate(
        build_model(name="shakespeare_lstm", input_shape=(80,), num_classes=81, hidden=16), strict=False
    )
    x = torch.randint(0, 81, (8, 80))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x[:, 0]), batch_size=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    private, optimizer, loader = PrivacyEngine().make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0
    )
    before = model.embedding.weight.detach().clone()
    for xb, yb in loader:
        if len(yb):
            optimizer.zero_grad()
            nn.functional.cross_entropy(private(xb), yb).backward()
            optimizer.step()
    assert not torch.equal(before, model.embedding.weight)
    assert torch.allclose(model(x[:2]), model.forward_embedded(model.embedding(x[:2])))


@pytest.mark.parametrize(
    "name, shape, classes, hidden",
    [
        ("celeba_cnn", (3, 84, 84), 2, 32),
        ("resnet_gn", (3, 32, 32), 10, 16),
    ],
)
def test_image_models_use_groupnorm_and_pass_opacus_validation(name, shape, classes, hidden):
    from opacus.validators import ModuleValidator

    model = build_model(name=name, input_shape=shape, num_classes=classes, hidden=hidden)
    assert model(torch.rand(2, *shape)).shape == (2, classes)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert ModuleValidator.validate(model, strict=False) == []
    if name == "celeba_cnn":
        assert sum(isinstance(m, nn.Conv2d) and m.out_channels == 32 for m in model.modules()) == 4
