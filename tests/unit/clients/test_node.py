"""A node's work: many logical clients per message, each update prepared on its own,
failures kept per logical client, and the messages that carry a share both ways."""

import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord
from flwr.supercore.differential_privacy import compute_clip_model_update

from fedsim.clients.messages import (
    read_requests,
    read_results,
    read_scores,
    request_content,
    results_content,
    scores_content,
)
from fedsim.clients.node import ClientReport, ShareRequest, ShareResult, split_cohort, train_share
from fedsim.clients.training import train_client
from fedsim.clients.work import runner_for
from fedsim.config import load_scenario
from fedsim.experiment import dataset_for, model_for, train_settings
from fedsim.loop import RoundLoop
from fedsim.params import flatten_state
from fedsim.seeding import client_seed
from fedsim.strategies.aggregation import ContributionRule

SMALL = ["rounds=2", "clients_per_round=5", "data.num_clients=20", "data.design_pool=4", "audit.enabled=false"]


def _scenario(project_root, *overrides):
    return load_scenario(project_root / "scenarios" / "quickstart.yaml", overrides=[*SMALL, *overrides])


def test_split_cohort_gives_contiguous_near_equal_shares():
    shares = split_cohort(np.arange(10), nodes=4)
    assert [len(s) for s in shares] == [3, 3, 2, 2]
    np.testing.assert_array_equal(np.concatenate(shares), np.arange(10))
    assert [list(s) for s in split_cohort(np.array([4, 9, 11]), nodes=5)] == [[4], [9], [11]]
    assert split_cohort(np.zeros(0, dtype=int), nodes=3) == []


def _fresh_training(scenario, state, client_id, round_number):
    """The reference: a fresh model and optimiser for one client, its trained tensors."""
    dataset = dataset_for(scenario)
    model = model_for(scenario, dataset)
    model.load_state_dict(state)
    result = train_client(
        model=model,
        data=dataset.client(client_id),
        settings=train_settings(scenario),
        seed=client_seed(seed=scenario.seed, round_number=round_number, client_id=client_id),
    )
    return [v.detach().numpy().copy() for v in model.state_dict().values()], result.num_examples


@pytest.mark.parametrize("mode", ["server_fixed", "client_fixed", "none"])
def test_a_share_sums_each_clients_update_prepared_on_its_own(project_root, mode, monkeypatch):
    """Against the clients trained one by one on fresh models: the same updates bit for
    bit, each clipped on its own (client-side: Flower's fixedclipping_mod helper on that
    client's weights), summed in order (weighted by examples without DP). (The share's
    clients train one by one here; in lockstep: tests/unit/clients/test_lockstep.py.)"""
    scenario = _scenario(project_root, f"dp.mode={mode}", "dp.clip_norm=0.05")
    monkeypatch.setattr(runner_for(scenario), "lockstep", False)
    loop = RoundLoop(scenario=scenario)
    state, rule = loop.state(), loop.aggregator.rule
    start_arrays = [v.numpy() for v in state.values()]
    start = flatten_state(state)
    ids = [0, 1, 2, 3]
    result = train_share(
        scenario=scenario,
        state=state,
        request=ShareRequest(round_number=1, client_ids=ids, rule=rule, keep_updates=True),
    )
    total = np.zeros_like(start)
    for row, client_id in enumerate(ids):
        arrays, examples = _fresh_training(scenario, state, client_id, 1)
        update = np.concatenate([a.ravel() for a in arrays], dtype=np.float64) - start
        norm = float(np.linalg.norm(update))
        assert result.reports[row] == ClientReport(client_id, examples, norm, result.reports[row].train_loss)
        if mode == "client_fixed":
            compute_clip_model_update(param1=arrays, param2=start_arrays, clipping_norm=0.05)
            helper = np.concatenate([a.ravel() for a in arrays], dtype=np.float64) - start
            expected = helper * min(1.0, 0.05 / np.linalg.norm(helper))  # float32 rounding clipped away
            assert np.linalg.norm(result.updates[row]) <= 0.05 * (1 + 1e-12) < norm  # clipped on its own
        elif mode == "server_fixed":
            expected = update * min(1.0, 0.05 / norm)
        else:
            expected = update
        np.testing.assert_array_equal(result.updates[row], expected)
        total += expected * (examples if mode == "none" else 1)
    np.testing.assert_array_equal(result.total, total)
    assert result.weight == (sum(r.num_examples for r in result.reports) if mode == "none" else len(ids))
    assert not result.failed


def test_a_failing_logical_client_does_not_fail_the_others_in_its_message(project_root):
    scenario = _scenario(project_root, "faults.fail_clients=[1]")
    rule = ContributionRule(clip_norm=1.0)
    state = RoundLoop(scenario=scenario).state()
    share = train_share(
        scenario=scenario, state=state, request=ShareRequest(round_number=1, client_ids=[0, 1, 2], rule=rule)
    )
    assert [r.client_id for r in share.reports] == [0, 2]
    assert list(share.failed) == [1] and share.failed[1].startswith("InjectedFault: client 1 fails")
    without = train_share(
        scenario=scenario, state=state, request=ShareRequest(round_number=1, client_ids=[0, 2], rule=rule)
    )
    np.testing.assert_array_equal(share.total, without.total)


def test_a_hung_client_fails_with_the_rest_of_its_share_at_the_deadline(project_root):
    """The node answers at the deadline with the clients trained before the hung one; the
    hung one and those after it count as failed; later clients get a fresh model (the hung
    thread may still hold the old one)."""
    scenario = _scenario(project_root, "faults.hang_clients=[1]", "faults.hang_s=30")
    state = RoundLoop(scenario=scenario).state()
    before = runner_for(scenario)
    started = time.monotonic()
    share = train_share(
        scenario=scenario,
        state=state,
        request=ShareRequest(round_number=1, client_ids=[0, 1, 2], rule=ContributionRule(), deadline=time.time() + 3),
    )
    assert time.monotonic() - started < 20  # not the 30 s the client hangs
    assert [r.client_id for r in share.reports] == [0]
    assert sorted(share.failed) == [1, 2] and "round_timeout_s" in share.failed[1]
    assert runner_for(scenario) is not before


def test_messages_carry_shares_both_ways():
    request = ShareRequest(
        round_number=3,
        client_ids=[4, 7],
        rule=ContributionRule(clip_norm=0.5, client_clips=True),
        keep_updates=True,
        deadline=1234.5,
    )
    plain = ShareRequest(round_number=3, client_ids=[1], rule=ContributionRule(by_examples=True))
    arrays = ArrayRecord(array_dict={"w": Array(np.ones(3, dtype=np.float32))})
    content = request_content(arrays=arrays, requests={2: request, 5: plain})
    assert read_requests(content) == {2: request, 5: plain}
    assert content["arrays"] is arrays
    result = ShareResult(
        total=np.arange(4.0),
        weight=2.0,
        reports=[ClientReport(4, 3, 1.5, 0.25), ClientReport(7, 1, 0.5, 0.75, noise_std=0.1)],
        failed={9: "InjectedFault: client 9 fails"},
        updates=np.ones((2, 4)),
    )
    empty = ShareResult(total=np.zeros(4), weight=0.0, reports=[], failed={})
    back, host = read_results(results_content({2: result, 5: empty}, host="node-a"))
    assert host == "node-a" and sorted(back) == [2, 5]
    np.testing.assert_array_equal(back[2].total, result.total)
    np.testing.assert_array_equal(back[2].updates, result.updates)
    assert (back[2].weight, back[2].reports, back[2].failed) == (result.weight, result.reports, result.failed)
    assert back[5].reports == [] and back[5].updates is None and back[5].weight == 0.0
    scores = [(1.5, 2, 3), (0.25, 0, 1)]
    assert read_scores(scores_content(scores)) == scores


def test_design_pool_users_train_alongside_the_cohort_but_outside_its_sum(project_root, monkeypatch):
    """The audit's design-pool users train in their own shares of the round (on the nodes),
    clipped as the server clips, never failing on purpose, and never in the round's sum."""
    from fedsim.clients.local import InProcessTransport
    from fedsim.strategies.aggregation import clip_update

    design = [20, 21]  # the first design-pool ids (20 training clients)
    scenario = _scenario(project_root, "dp.clip_norm=0.05", f"faults.fail_clients={design}")
    monkeypatch.setattr(runner_for(scenario), "lockstep", False)  # compared bit for bit with one-by-one training
    loop = RoundLoop(scenario=scenario)
    state, rule = loop.state(), loop.aggregator.rule
    transport = InProcessTransport(scenario=scenario)
    train = lambda ids: transport.train(  # noqa: E731
        round_number=1,
        state=state,
        cohort=np.array([0, 1, 2]),
        rule=rule,
        keep_updates=True,
        timeout_s=None,
        design_ids=ids,
    )
    with_design, without = train(design), train([])
    assert [r.client_id for r in with_design.reports] == [0, 1, 2] and not with_design.failed
    np.testing.assert_array_equal(with_design.total, without.total)
    np.testing.assert_array_equal(with_design.updates, without.updates)
    assert without.design is None and with_design.design.shape == (2, with_design.total.shape[0])
    for row, client_id in zip(with_design.design, design):
        trained = runner_for(scenario).train(start=state, client_id=client_id, round_number=1)
        np.testing.assert_array_equal(row, clip_update(trained.update, norm=trained.update_norm, clip_norm=0.05))


def test_client_side_clipping_never_leaves_an_update_above_the_clip_norm():
    """Flower's helper clips in float32 and adds the result back onto float32 weights; with
    weights far larger than C that rounding alone leaves the norm above C. The prepared
    update is clipped again in float64."""
    from fedsim.clients.node import _prepare
    from fedsim.clients.work import TrainedClient

    rng = np.random.default_rng(0)
    start_arrays = [rng.uniform(0.5, 1.5, 1_000_000).astype(np.float32)]
    trained = [start_arrays[0] + rng.normal(0, 1e-3, 1_000_000).astype(np.float32)]
    start_flat = start_arrays[0].astype(np.float64)
    update = trained[0].astype(np.float64) - start_flat
    client = TrainedClient(0, update, 1, 0.0, float(np.linalg.norm(update)), arrays=trained)
    clip = 0.01
    helper = [trained[0].copy()]
    compute_clip_model_update(param1=helper, param2=start_arrays, clipping_norm=clip)
    assert np.linalg.norm(helper[0].astype(np.float64) - start_flat) > clip  # the rounding this guards against
    prepared = _prepare(
        client,
        start_arrays=start_arrays,
        start_flat=start_flat,
        rule=ContributionRule(clip_norm=clip, client_clips=True),
    )
    assert np.linalg.norm(prepared) <= clip * (1 + 1e-12)
    np.testing.assert_allclose(prepared, update * clip / np.linalg.norm(update), atol=1e-6)
