"""Clients trained in lockstep (one batched SGD step of all of them at a time) against
the same clients trained one by one on fresh models."""

import time

import numpy as np
import pytest
import torch

import fedsim.clients.lockstep as lockstep_module
from fedsim.clients.lockstep import train_lockstep, trains_in_lockstep
from fedsim.clients.node import ShareRequest, round_requests, train_share, train_shares
from fedsim.clients.training import train_client
from fedsim.clients.work import ClientRunner
from fedsim.config import load_scenario
from fedsim.experiment import dataset_for, model_for, train_settings
from fedsim.loop import RoundLoop
from fedsim.params import flatten_state
from fedsim.seeding import client_seed

SMALL = ["rounds=2", "clients_per_round=5", "data.num_clients=20", "data.design_pool=4", "audit.enabled=false"]


def _scenario(project_root, *overrides, name="quickstart"):
    return load_scenario(project_root / "scenarios" / f"{name}.yaml", overrides=[*SMALL, *overrides])


def _alone(scenario, state, client_id, seed):
    """The reference: a fresh model trained on one client, its weights and report."""
    dataset = dataset_for(scenario)
    model = model_for(scenario, dataset)
    model.load_state_dict(state)
    result = train_client(model=model, data=dataset.client(client_id), settings=train_settings(scenario), seed=seed)
    return {name: value.detach().clone() for name, value in model.state_dict().items()}, result


def _close(update, expected, rel=1e-5):
    return float(np.linalg.norm(np.asarray(update) - np.asarray(expected))) <= rel * float(np.linalg.norm(expected))


@pytest.mark.parametrize(("model", "momentum"), [("logreg", 0.0), ("mlp", 0.5)])
def test_lockstep_training_equals_each_client_trained_alone(project_root, monkeypatch, model, momentum):
    """Clients of 1 to many steps (2 epochs of batches of 10), in lockstep groups of 5: each
    client's weights and mean loss those of its own training, to float rounding."""
    monkeypatch.setattr(lockstep_module, "GROUP_USERS", 5)
    scenario = _scenario(project_root, f"model.name={model}", f"client.momentum={momentum}", "client.epochs=2")
    dataset, settings = dataset_for(scenario), train_settings(scenario)
    shared = model_for(scenario, dataset)
    start = {name: value.clone() for name, value in shared.state_dict().items()}
    ids = list(range(12))
    steps = {2 * -(-dataset.num_train_samples(c) // settings.batch_size) for c in ids}
    assert len(steps) >= 4  # groups and finished clients inside a group are exercised
    clients = [(dataset.client(c).x_train, dataset.client(c).y_train, 100 + c) for c in ids]
    trained = train_lockstep(shared, clients, settings=settings)
    assert all(torch.equal(start[name], value) for name, value in shared.state_dict().items())  # left unchanged
    for client_id, result in zip(ids, trained):
        weights, reference = _alone(scenario, start, client_id, 100 + client_id)
        for name, value in weights.items():
            assert _close(result.weights[name] - start[name], value - start[name])
        assert result.mean_loss == pytest.approx(reference.mean_loss, rel=1e-5)


def test_only_dense_models_trained_with_plain_sgd_train_in_lockstep(project_root):
    def lockstep(*overrides, name="quickstart", device="cpu"):
        scenario = _scenario(project_root, *overrides, name=name)
        model, settings = model_for(scenario, dataset_for(scenario)), train_settings(scenario)
        return trains_in_lockstep(model=model, settings=settings, device=device)

    assert lockstep() and lockstep("model.name=mlp", "client.momentum=0.9")
    assert not lockstep(device="cuda")
    assert not lockstep("client.optimizer=adam")
    assert not lockstep("dp.mode=local_dpsgd", "audit.enabled=false")
    assert not lockstep("data.design_pool=4", name="digits")  # a CNN


@pytest.fixture
def lockstep_calls(monkeypatch):
    """The client ids of each call to ClientRunner.train_lockstep, which still trains."""
    calls = []
    real = ClientRunner.train_lockstep

    def spy(self, *, client_ids, **kwargs):
        calls.append(list(client_ids))
        return real(self, client_ids=client_ids, **kwargs)

    monkeypatch.setattr(ClientRunner, "train_lockstep", spy)
    return calls


@pytest.mark.parametrize("mode", ["server_fixed", "client_fixed"])
def test_a_share_trained_in_lockstep_sums_each_clients_update_prepared_on_its_own(project_root, lockstep_calls, mode):
    """A share of five clients of a dense model trains in lockstep: each prepared update
    that of the client trained alone and clipped on its own (to float rounding), summed in
    client order. With a deadline the same share trains one by one (the node can give up
    on a late client), bit for bit as alone."""
    scenario = _scenario(project_root, f"dp.mode={mode}", "dp.clip_norm=0.05")
    loop = RoundLoop(scenario=scenario)
    state, rule = loop.state(), loop.aggregator.rule
    start = flatten_state(state)
    ids = [0, 1, 2, 3, 4]
    share = train_share(
        scenario=scenario,
        state=state,
        request=ShareRequest(round_number=1, client_ids=ids, rule=rule, keep_updates=True),
    )
    timed = train_share(
        scenario=scenario,
        state=state,
        request=ShareRequest(round_number=1, client_ids=ids, rule=rule, keep_updates=True, deadline=time.time() + 60),
    )
    assert lockstep_calls == [ids]  # the share without a deadline only
    assert [r.client_id for r in share.reports] == ids == [r.client_id for r in timed.reports]
    np.testing.assert_array_equal(share.total, share.updates.sum(axis=0))
    for row, client_id in enumerate(ids):
        weights, _ = _alone(
            scenario, state, client_id, client_seed(seed=scenario.seed, round_number=1, client_id=client_id)
        )
        update = flatten_state(weights) - start
        clipped = update * min(1.0, 0.05 / np.linalg.norm(update))
        assert np.linalg.norm(share.updates[row]) <= 0.05 * (1 + 1e-9)
        assert _close(share.updates[row], clipped)
        assert share.reports[row].update_norm == pytest.approx(np.linalg.norm(update), rel=1e-5)
        assert _close(timed.updates[row], clipped)
        if mode == "server_fixed":  # one by one: bit for bit
            np.testing.assert_array_equal(timed.updates[row], clipped)


@pytest.fixture
def one_thread():
    """torch on one thread, as fedsim trains (fedsim.threads), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_clients_lockstep_training_does_not_depend_on_its_group(project_root, one_thread):
    """What lets a message's shares train together and still sum what they sum alone (so
    that no number depends on the cluster's size): each client's weights and loss are the
    same bit for bit alone, in a small group and in a group of 30 (logreg; MLP with
    momentum), on one thread as fedsim trains (on two, torch splits a lone client's
    products differently: 2e-7 apart)."""
    for overrides in ([], ["model.name=mlp", "client.momentum=0.5"]):
        scenario = _scenario(project_root, *overrides, "data.num_clients=40")
        dataset, settings = dataset_for(scenario), train_settings(scenario)
        model = model_for(scenario, dataset)
        clients = [(dataset.client(c).x_train, dataset.client(c).y_train, 7 + c) for c in range(30)]
        group = train_lockstep(model, clients, settings=settings)
        small = train_lockstep(model, clients[5:12], settings=settings)
        for result, alone in zip(group, [train_lockstep(model, [c], settings=settings)[0] for c in clients]):
            assert all(torch.equal(result.weights[k], alone.weights[k]) for k in result.weights)
            assert result.mean_loss == alone.mean_loss
        for result, other in zip(group[5:12], small):
            assert all(torch.equal(result.weights[k], other.weights[k]) for k in result.weights)


def test_a_messages_shares_train_together_and_sum_what_they_sum_alone(project_root, lockstep_calls, one_thread):
    """The shares of one message (cohort shares and a design-pool share, one of them with a
    failing client) train in one lockstep call; each share's sum, reports, failures and
    kept updates equal those of the share trained on its own, bit for bit."""
    scenario = _scenario(project_root, "dp.clip_norm=0.05", "faults.fail_clients=[3]")
    loop = RoundLoop(scenario=scenario)
    state, rule = loop.state(), loop.aggregator.rule
    requests, _ = round_requests(
        round_number=1,
        cohort=np.arange(9),
        design_ids=[20, 21, 22],
        nodes=3,
        rule=rule,
        keep_updates=True,
        deadline=None,
    )
    together = train_shares(scenario=scenario, state=state, requests=dict(enumerate(requests)))
    assert lockstep_calls == [[0, 1, 2, 4, 5, 6, 7, 8, 20, 21, 22]]  # one call; client 3 failed before
    for index, request in enumerate(requests):
        alone = train_share(scenario=scenario, state=state, request=request)
        np.testing.assert_array_equal(together[index].total, alone.total)
        np.testing.assert_array_equal(together[index].updates, alone.updates)
        assert (together[index].reports, together[index].failed) == (alone.reports, alone.failed)
    assert list(together[1].failed) == [3]


def test_the_batched_forward_is_each_clients_own_forward(project_root):
    """Every layer kind a lockstep model may hold (a Linear without bias, a Flatten over
    inner dims, activations), against torch running the model with each client's weights."""
    from torch import nn
    from torch.func import functional_call

    from fedsim.clients.lockstep import _forward

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(start_dim=1, end_dim=2), nn.Linear(12, 8, bias=False), nn.GELU(), nn.Linear(8, 5), nn.Tanh()
    )
    clients, batch = 3, 4
    stacked = {name: torch.randn(clients, *p.shape) for name, p in model.named_parameters()}
    x = torch.randn(clients, batch, 3, 4)
    out = _forward(model, stacked, x)
    for row in range(clients):
        own = functional_call(model, {name: value[row] for name, value in stacked.items()}, (x[row],))
        torch.testing.assert_close(out[row], own, rtol=1e-6, atol=1e-6)
    settings = train_settings(_scenario(project_root))
    assert trains_in_lockstep(model=model, settings=settings, device="cpu")

    class Custom(nn.Module):  # dense layers, but its own forward: not run layer by layer
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) * 2

    assert not trains_in_lockstep(model=Custom(), settings=settings, device="cpu")
