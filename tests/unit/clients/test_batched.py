"""Clients that take one plain SGD step, trained together from batched per-user
gradients: the same updates as the client-by-client path (to 1e-6), and only where that
holds."""

import numpy as np
import pytest
from torch import nn

from fedsim.clients.batched import supports, takes_one_step
from fedsim.clients.node import ShareRequest, train_share
from fedsim.clients.training import TrainSettings
from fedsim.clients.work import ClientRunner
from fedsim.config import load_scenario
from fedsim.loop import RoundLoop
from fedsim.models import build_model
from fedsim.params import flatten_state
from fedsim.strategies.aggregation import ContributionRule
from tests.fixtures.fake_datasets import write_fake_sent140


@pytest.fixture(scope="module")
def sent140_scenario(project_root, tmp_path_factory):
    """Sent140's LSTM (dropout 0.1 between its layers and before its dense layer) on
    made-up tweets: every client holds 1-2 training tweets, so it takes one step."""
    root = write_fake_sent140(tmp_path_factory.mktemp("sent140") / "data", users=40)
    return load_scenario(
        project_root / "scenarios" / "sent140.yaml",
        overrides=[
            f"data.root={root}",
            "data.num_clients=36",
            "data.design_pool=4",
            "audit.enabled=false",
            "data.options.max_words=200",
            "model.hidden=32",
            "clients_per_round=10",
        ],
    )


def _both_ways(scenario, ids, round_number=1):
    runner = ClientRunner(scenario=scenario)
    state = RoundLoop(scenario=scenario).state()
    start = flatten_state(state)
    assert all(runner.takes_one_step(c) for c in ids)
    together = list(runner.train_one_steps(start=state, client_ids=ids, round_number=round_number, start_flat=start))
    alone = [runner.train(start=state, client_id=c, round_number=round_number, start_flat=start) for c in ids]
    return together, alone


def _assert_same_updates(together, alone):
    for a, b in zip(together, alone, strict=True):
        assert (a.client_id, a.num_examples) == (b.client_id, b.num_examples)
        assert np.linalg.norm(a.update - b.update) <= 1e-6 * np.linalg.norm(b.update)
        assert a.update_norm == pytest.approx(b.update_norm, rel=1e-6)
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-6)


def test_sent140_clients_trained_together_equal_client_by_client(sent140_scenario):
    """Each user's samples in its DataLoader's order, with the dropout masks its own seeded
    run draws (the LSTM's between layers and the one before the dense layer)."""
    model = ClientRunner(scenario=sent140_scenario).model
    assert model.lstm.dropout > 0 and model.dropout.p > 0  # the masks matter here
    together, alone = _both_ways(sent140_scenario, list(range(12)))
    _assert_same_updates(together, alone)
    assert {a.num_examples for a in alone} == {1, 2}
    # the comparison can fail: another round's seeds (other masks, other order) give other updates
    other, _ = _both_ways(sent140_scenario, list(range(12)), round_number=2)
    assert np.linalg.norm(other[0].update - alone[0].update) > 1e-3 * np.linalg.norm(alone[0].update)


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_models_without_dropout_trained_together_equal_client_by_client(project_root, model):
    """torch.func's per-user gradients (samples padded with weight 0) for other models."""
    scenario = load_scenario(
        project_root / "scenarios" / "quickstart.yaml",
        overrides=["client.epochs=1", "client.batch_size=1000", f"model.name={model}", "data.num_clients=20"],
    )
    together, alone = _both_ways(scenario, [0, 3, 5, 7])
    assert len({a.num_examples for a in alone}) > 1  # users of different sizes in one pass
    _assert_same_updates(together, alone)


def test_only_exact_settings_and_models_take_the_batched_path():
    one = TrainSettings(epochs=1, batch_size=32, lr=1.0)
    assert takes_one_step(one, 1) and takes_one_step(one, 32)
    assert not takes_one_step(one, 33)  # two steps
    assert not takes_one_step(one, 0)
    assert not takes_one_step(TrainSettings(epochs=2, batch_size=32), 5)
    assert not takes_one_step(TrainSettings(epochs=1, batch_size=32, momentum=0.9), 5)
    assert not takes_one_step(TrainSettings(epochs=1, batch_size=32, optimizer="adam"), 5)
    assert not takes_one_step(
        TrainSettings(epochs=1, batch_size=32, dpsgd_clip_norm=1.0, dpsgd_noise_multiplier=1.0), 5
    )
    text = dict(name="sent140_lstm", input_shape=(25,), num_classes=2, hidden=8, vocab_size=50)
    assert supports(build_model(**text))
    assert not supports(build_model(**text, dp_compatible=True))  # Opacus' DPLSTM: local DP-SGD only
    assert supports(build_model(name="cnn", input_shape=(1, 8, 8), num_classes=10))
    assert not supports(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2)))  # unknown masks
    assert not supports(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))  # batch statistics
    assert supports(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.0), nn.Linear(4, 2)))


def test_a_share_mixes_batched_and_failing_clients(sent140_scenario):
    """A failing client among one-step clients fails alone; the others' sum is unchanged."""
    scenario = sent140_scenario.model_copy(
        update={"faults": sent140_scenario.faults.model_copy(update={"fail_clients": [2]})}
    )
    state = RoundLoop(scenario=scenario).state()
    rule = ContributionRule(clip_norm=0.5)
    share = train_share(
        scenario=scenario, state=state, request=ShareRequest(round_number=1, client_ids=[1, 2, 3], rule=rule)
    )
    assert [r.client_id for r in share.reports] == [1, 3] and list(share.failed) == [2]
    clean = train_share(
        scenario=scenario, state=state, request=ShareRequest(round_number=1, client_ids=[1, 3], rule=rule)
    )
    np.testing.assert_array_equal(share.total, clean.total)


def test_design_pool_users_take_the_batched_path_without_faults(sent140_scenario):
    """The audit's design-pool users (sampled=False) never fail on purpose, batched or not."""
    scenario = sent140_scenario.model_copy(
        update={"faults": sent140_scenario.faults.model_copy(update={"fail_clients": [36, 37]})}
    )
    state = RoundLoop(scenario=scenario).state()
    request = ShareRequest(
        round_number=1, client_ids=[36, 37], rule=ContributionRule(clip_norm=0.5), keep_updates=True, sampled=False
    )
    assert ClientRunner(scenario=scenario).takes_one_step(36)
    share = train_share(scenario=scenario, state=state, request=request)
    assert [r.client_id for r in share.reports] == [36, 37] and not share.failed
    assert share.updates.shape[0] == 2 and np.all(np.linalg.norm(share.updates, axis=1) <= 0.5 * (1 + 1e-9))
