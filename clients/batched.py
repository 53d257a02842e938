"""One local SGD step of many clients at once: per-user gradients from one batched pass.

A client that holds at most one batch and trains one epoch of plain SGD (no momentum, no
local DP) takes exactly one step: its update is -lr times the gradient of its mean loss
at the global model. A cohort of such clients is one DP-SGD step with per-user clipping,
so their gradients can come from one forward and one backward pass over all their
samples (per-sample gradients, summed per user) instead of one training run per client.

Each user's samples are taken in the order its own training would shuffle them, and
see the dropout masks its own seeded run would draw, so each user's gradient equals the
client-by-client path's up to float rounding (tests check the updates to 1e-6):

- ``TextClassifier`` with ``nn.LSTM`` (the Sent140 and Shakespeare models): the LSTM is
  unrolled over time with the given masks, and the per-sample gradients of its linear
  maps, the embedding and the dense layer are summed per user (what Opacus' grad
  samplers compute for ``DPLSTM``, grouped by user);
- models without dropout, recurrent or batch-statistics layers: ``torch.func`` (vmap of
  the gradient of each user's loss over users, samples padded with weight 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from fedsim.clients.training import TrainSettings, shuffled_batches
from fedsim.models import TextClassifier
from fedsim.seeding import seeded

#: users per batched pass (bounds the per-sample and per-user tensors held at once)
CHUNK_USERS = 32


@dataclass(frozen=True)
class UserSamples:
    """One user's training samples and the seed of its local training."""

    x: torch.Tensor
    y: torch.Tensor
    seed: int


def takes_one_step(settings: TrainSettings, num_train: int) -> bool:
    """Whether a client's local training is exactly one plain SGD step on all its samples."""
    return (
        settings.epochs == 1
        and settings.optimizer == "sgd"
        and settings.momentum == 0
        and settings.dpsgd_noise_multiplier is None
        and 1 <= num_train <= settings.batch_size
    )


def supports(model: nn.Module) -> bool:
    """Whether :func:`user_gradients` reproduces this model's training step."""
    if list(model.buffers()) or next(model.parameters()).device.type != "cpu":
        return False
    if isinstance(model, TextClassifier):
        lstm = model.lstm
        return isinstance(lstm, nn.LSTM) and lstm.num_layers <= 2 and lstm.bias and lstm.proj_size == 0
    stateful = (nn.RNNBase, nn.modules.batchnorm._BatchNorm)
    return not any(
        isinstance(m, stateful) or (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0) for m in model.modules()
    )


def batch_order(*, num_samples: int, batch_size: int, seed: int) -> torch.Tensor:
    """The order of a client's samples in its first batch, as its own training shuffles."""
    return shuffled_batches(
        num_samples=num_samples, batch_size=batch_size, generator=torch.Generator().manual_seed(seed)
    )[0]


def user_gradients(
    model: nn.Module, users: list[UserSamples], *, batch_size: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Each user's gradient of its mean loss at ``model``'s weights, stacked: parameter
    name -> (users, *shape); and each user's mean loss, (users,)."""
    orders = [batch_order(num_samples=len(u.y), batch_size=batch_size, seed=u.seed) for u in users]
    xs = [u.x[order] for u, order in zip(users, orders)]
    ys = [u.y[order] for u, order in zip(users, orders)]
    if isinstance(model, TextClassifier):
        return _text_classifier(model, users, xs, ys)
    return _generic(model, xs, ys)


def _text_classifier(model: TextClassifier, users: list[UserSamples], xs, ys):
    lstm, device = model.lstm, next(model.parameters()).device
    params = {name: value.detach() for name, value in model.named_parameters()}
    seq_len, hidden = xs[0].shape[1], lstm.hidden_size
    between, before_dense = [], []
    for user, x in zip(users, xs):
        with seeded(user.seed, device=device):  # the masks this user's own run draws, in its order
            m1, m2 = model.dropout_masks(batch=len(x), seq_len=seq_len)
        between.append(None if m1 is None else m1.transpose(0, 1))  # (batch, seq, hidden)
        before_dense.append(m2)
    x, y = torch.cat(xs), torch.cat(ys)
    counts = torch.tensor([len(v) for v in ys])
    owner = torch.repeat_interleave(torch.arange(len(users)), counts)
    weight = (1.0 / counts.to(torch.float32))[owner]

    embedded = F.embedding(x, params["embedding.weight"]).requires_grad_()
    layer_in, inputs, pre_gates, previous = embedded, [], [], []
    for layer in range(lstm.num_layers):
        w_ih, w_hh, b_ih, b_hh = (
            params[f"lstm.{kind}_l{layer}"] for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )
        pre = F.linear(layer_in, w_ih, b_ih)  # the input projection of every step, as nn.LSTM on CPU
        pre.retain_grad()
        h = c = layer_in.new_zeros(len(x), hidden)
        outputs, before = [], []
        for t in range(seq_len):
            before.append(h)
            gates = F.linear(h, w_hh, b_hh) + pre[:, t]
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        inputs.append(layer_in.detach())
        pre_gates.append(pre)
        previous.append(torch.stack([state.detach() for state in before], dim=1))
        layer_in = torch.stack(outputs, dim=1)
        if layer < lstm.num_layers - 1 and between[0] is not None:
            layer_in = layer_in * torch.cat(between)
    last = layer_in[:, -1]
    if before_dense[0] is not None:
        last = last * torch.cat(before_dense)
    logits = F.linear(last, params["fc.weight"], params["fc.bias"])
    logits.retain_grad()
    losses = F.cross_entropy(logits, y, reduction="none")
    (losses * weight).sum().backward()

    def per_user(per_sample: torch.Tensor) -> torch.Tensor:
        return per_sample.new_zeros(len(users), *per_sample.shape[1:]).index_add_(0, owner, per_sample)

    grads: dict[str, torch.Tensor] = {}
    vocab = params["embedding.weight"].shape[0]
    rows = (owner[:, None] * vocab + x).reshape(-1)
    table = embedded.new_zeros(len(users) * vocab, embedded.shape[-1]).index_add_(
        0, rows, embedded.grad.reshape(-1, embedded.shape[-1])
    )
    grads["embedding.weight"] = table.reshape(len(users), vocab, -1)
    for layer in range(lstm.num_layers):
        d_gates = pre_gates[layer].grad  # d loss / d gates, step by step: the same for both biases
        grads[f"lstm.weight_ih_l{layer}"] = per_user(torch.einsum("bto,bti->boi", d_gates, inputs[layer]))
        grads[f"lstm.weight_hh_l{layer}"] = per_user(torch.einsum("bto,bti->boi", d_gates, previous[layer]))
        grads[f"lstm.bias_ih_l{layer}"] = grads[f"lstm.bias_hh_l{layer}"] = per_user(d_gates.sum(dim=1))
    grads["fc.weight"] = per_user(torch.einsum("bo,bi->boi", logits.grad, last.detach()))
    grads["fc.bias"] = per_user(logits.grad)
    ordered = {name: grads[name] for name in params}
    return ordered, per_user((losses * weight).detach())


def _generic(model: nn.Module, xs, ys):
    params = {name: value.detach() for name, value in model.named_parameters()}
    longest = max(len(y) for y in ys)

    def pad(tensors):
        out = tensors[0].new_zeros(len(tensors), longest, *tensors[0].shape[1:])
        for row, tensor in enumerate(tensors):
            out[row, : len(tensor)] = tensor
        return out

    weight = pad([torch.full((len(y),), 1.0 / len(y)) for y in ys])

    def user_loss(p, x, y, w):
        loss = (F.cross_entropy(functional_call(model, p, (x,)), y, reduction="none") * w).sum()
        return loss, loss.detach()

    grads, losses = vmap(grad(user_loss, has_aux=True), in_dims=(None, 0, 0, 0))(params, pad(xs), pad(ys), weight)
    return grads, losses
