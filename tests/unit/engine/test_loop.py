"""The round loop and the runner, in-process (no Flower, no Ray): reproducibility,
durability when a client crashes or the user interrupts, and DP's cost in accuracy."""

import copy
import dataclasses
import math
import threading
import time

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld

from fedsim.clients.local import InProcessTransport
from fedsim.config import load_scenario
from fedsim.experiment import dataset_for
from fedsim.loop import RoundLoop, RunOutcome
from fedsim.privacy import DpMechanism, LocalDpsgdAccountant
from fedsim.runner import run_scenario
from fedsim.store import RunStore

SMALL = ["rounds=4", "clients_per_round=5", "data.num_clients=20", "data.design_pool=4", "audit.enabled=false"]


def _scenario(project_root, *overrides):
    return load_scenario(project_root / "scenarios" / "quickstart.yaml", overrides=[*SMALL, *overrides])


def _without_time(rows):
    return [dataclasses.replace(row, seconds=None) for row in rows]


def _same(a, b) -> bool:
    """Equal, arrays bit for bit, through nested dicts and lists."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    return a == b


def test_same_seed_same_rounds_other_seed_other_rounds(tmp_path, project_root):
    first = run_scenario(scenario=_scenario(project_root), out_dir=tmp_path, engine="inprocess")
    again = run_scenario(scenario=_scenario(project_root), out_dir=tmp_path, engine="inprocess")
    other = run_scenario(scenario=_scenario(project_root, "seed=1"), out_dir=tmp_path, engine="inprocess")
    assert _without_time(first.rows) == _without_time(again.rows)
    assert _without_time(first.rows) != _without_time(other.rows)
    # rounds.csv holds exactly what the run reported
    stored = RunStore.open(first.store.path).rounds()
    assert stored == first.rows


def test_interrupt_marks_the_run_interrupted_and_keeps_rounds(tmp_path, project_root):
    def stop_after_two(row):
        if row.round == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_scenario(scenario=_scenario(project_root), out_dir=tmp_path, engine="inprocess", on_round=stop_after_two)
    (folder,) = list(tmp_path.iterdir())
    store = RunStore.open(folder)
    assert store.manifest()["status"] == "interrupted"
    assert len(store.rounds()) == 2


def test_an_audit_runs_while_the_next_round_trains_and_rounds_are_persisted_in_order(tmp_path, project_root):
    """Round r's audit waits until round r + 1's clients train: the run only finishes if
    the loop goes on while an audit runs. Rows, audits and every checkpoint are those of
    a run that audits one round at a time (FedAdam and adaptive clipping: state that
    changes every round)."""
    audited = ["audit.enabled=true", "audit.tests=2000", "audit.iterations=10", "audit.design_pool=4", "rounds=3"]
    stateful = ["dp.mode=server_adaptive", "server.optimizer=fedadam", "server.lr=0.1"]
    scenario = _scenario(project_root, *audited, *stateful)
    one_at_a_time = RoundLoop(scenario=scenario)
    transport = InProcessTransport(scenario=scenario)
    expected, states = [], []
    for round_number in (1, 2, 3):
        expected.append(one_at_a_time.run_round(transport, round_number).record)
        states.append(copy.deepcopy(one_at_a_time.state_dict()))  # as it was after the round

    training = {r: threading.Event() for r in (1, 2, 3)}

    class Watched(InProcessTransport):
        def train(self, *, round_number, **kwargs):
            training[round_number].set()
            return super().train(round_number=round_number, **kwargs)

    loop = RoundLoop(scenario=scenario)
    audit = loop.auditor.audit
    overlapped = []

    def slow_audit(*, round_number, **kwargs):
        if round_number < 3:  # the next round's clients start training meanwhile
            overlapped.append(training[round_number + 1].wait(timeout=30))
        return audit(round_number=round_number, **kwargs)

    loop.auditor.audit = slow_audit
    loop.store = RunStore.create(parent=tmp_path, scenario=scenario)
    checkpoints = []
    write_checkpoint = loop.store.write_checkpoint
    loop.store.write_checkpoint = lambda state: (checkpoints.append(state), write_checkpoint(state))
    outcome = RunOutcome()
    persisted = []
    loop.on_round = lambda row: persisted.append((row.round, loop.store.audited_rounds()))
    loop.run(Watched(scenario=scenario), outcome)
    assert overlapped == [True, True]
    assert persisted == [(1, [1]), (2, [1, 2]), (3, [1, 2, 3])]
    assert _without_time(outcome.rows) == _without_time(expected)
    assert len(checkpoints) == 3
    for written, state in zip(checkpoints, states):
        assert written.keys() == state.keys() and written["round"] == state["round"]
        for key in ("params", "optimizer", "aggregator", "theory", "empirical"):
            assert _same(written[key], state[key]), key


def test_a_round_that_fails_after_its_audit_started_waits_for_its_helper_threads(tmp_path, project_root):
    """No thread of an unrecorded round goes on changing the loop or using the CPU."""
    scenario = _scenario(project_root, "audit.enabled=true", "audit.tests=2000", "audit.design_pool=4", "rounds=2")

    class FailingEvaluation(InProcessTransport):
        def evaluate(self, **kwargs):
            raise RuntimeError("evaluation broke")

    loop = RoundLoop(scenario=scenario)
    audit = loop.auditor.audit
    finished = []

    def slow_audit(**kwargs):
        time.sleep(0.5)  # still running when the round's evaluation fails
        result = audit(**kwargs)
        finished.append(kwargs["round_number"])
        return result

    loop.auditor.audit = slow_audit
    before = set(threading.enumerate())  # other tests' threads (a hung client's) may still run
    with pytest.raises(RuntimeError, match="evaluation broke"):
        loop.run(FailingEvaluation(scenario=scenario), RunOutcome())
    assert finished == [1]
    assert not [t.name for t in set(threading.enumerate()) - before if t.name.startswith("fedsim-")]


def test_fixed_cohort_is_accounted_with_rdp_and_exceeds_poisson(tmp_path, project_root):
    poisson = run_scenario(scenario=_scenario(project_root), out_dir=tmp_path, engine="inprocess").rows
    fixed = run_scenario(scenario=_scenario(project_root, "sampling=fixed"), out_dir=tmp_path, engine="inprocess").rows
    assert all(row.clients == 5 for row in fixed)
    assert len({row.clients for row in poisson}) > 1  # Poisson cohort sizes vary (seeded: 5, 4, 8, 3)
    # fixed cohorts: RDP under replace-one is the headline, and it is the larger epsilon
    assert fixed[-1].epsilon_cumulative_theory == fixed[-1].epsilon_cumulative_theory_rdp
    assert fixed[-1].epsilon_cumulative_theory > poisson[-1].epsilon_cumulative_theory


def test_fixed_cohorts_use_replace_one_in_every_epsilon_column(tmp_path, project_root):
    """One adjacency per run: with fixed cohorts the per-round column is the single release
    under replace-one (sensitivity 2C: a Gaussian at z / 2), like the cumulative columns,
    and the manifest says so. References: dp-accounting's PLD and RDP accountants here."""
    scenario = _scenario(project_root, "sampling=fixed", "dp.noise_multiplier=0.7", "rounds=2")
    result = run_scenario(scenario=scenario, out_dir=tmp_path, engine="inprocess")
    single = pld.PLDAccountant(value_discretization_interval=1e-4)
    single.compose(dp_accounting.GaussianDpEvent(0.35))
    assert result.rows[0].epsilon_round_theory == pytest.approx(single.get_epsilon(1e-5), rel=1e-3)
    cumulative = dp_accounting.rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    cumulative.compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.SampledWithoutReplacementDpEvent(20, 5, dp_accounting.GaussianDpEvent(0.35)), 2
        )
    )
    assert result.rows[1].epsilon_cumulative_theory == pytest.approx(cumulative.get_epsilon(1e-5), rel=1e-9)
    privacy = result.store.manifest()["privacy"]
    assert (privacy["adjacency"], privacy["accountant"], privacy["unit"]) == ("replace_one", "rdp", "user")


def test_adaptive_clipping_and_local_dpsgd_report_their_numbers(tmp_path, project_root):
    adaptive = run_scenario(
        scenario=_scenario(project_root, "dp.mode=server_adaptive", "dp.clip_norm=0.01", "dp.noise_multiplier=0.5"),
        out_dir=tmp_path,
        engine="inprocess",
    ).rows
    # starting far below the median norm, the clip norm grows round after round
    norms = [row.clip_norm for row in adaptive]
    assert norms[0] == pytest.approx(0.01) and all(b > a for a, b in zip(norms, norms[1:]))
    local = run_scenario(
        scenario=_scenario(project_root, "dp.mode=local_dpsgd", "dp.noise_multiplier=1.0", "dp.clip_norm=1.0"),
        out_dir=tmp_path,
        engine="inprocess",
    ).rows
    # the worst client size of the whole population (tests/unit/privacy/test_local_dpsgd.py
    # checks that accountant against dp-accounting), not the smallest client
    scenario = _scenario(project_root, "dp.mode=local_dpsgd", "dp.noise_multiplier=1.0", "dp.clip_norm=1.0")
    dataset = dataset_for(scenario)
    sizes = [dataset.num_train_samples(c) for c in range(dataset.num_clients)]
    accountant = LocalDpsgdAccountant(noise_multiplier=1.0, delta=1e-5, batch_size=10, epochs=2, client_sizes=sizes)
    assert len(set(sizes)) > 1 and accountant.groups > 1
    assert [row.epsilon_cumulative_theory for row in local] == pytest.approx(
        [accountant.epsilon(rounds=r) for r in range(1, 5)], rel=1e-9
    )
    assert all(row.epsilon_round_theory == local[0].epsilon_round_theory for row in local)
    assert all(row.noise_std > 0 for row in local if row.clients)  # measured: tests/unit/clients


@pytest.mark.slow
def test_quickstart_learns_under_dp_and_no_dp_is_at_least_as_accurate(tmp_path, project_root):
    scenario = load_scenario(project_root / "scenarios" / "quickstart.yaml", overrides=["audit.enabled=false"])
    dp = run_scenario(scenario=scenario, out_dir=tmp_path, engine="inprocess").rows
    plain = run_scenario(
        scenario=load_scenario(
            project_root / "scenarios" / "quickstart.yaml", overrides=["dp.mode=none", "audit.enabled=false"]
        ),
        out_dir=tmp_path,
        engine="inprocess",
    ).rows
    chance = 1 / 10
    assert dp[-1].eval_accuracy > 2 * chance
    assert dp[-1].eval_accuracy > dp[0].eval_accuracy + 0.1
    assert plain[-1].eval_accuracy >= dp[-1].eval_accuracy
    eps = [row.epsilon_cumulative_theory for row in dp]
    assert all(b > a for a, b in zip(eps, eps[1:]))


@pytest.mark.parametrize("mode", ["none", "server_fixed", "client_fixed", "server_adaptive", "local_dpsgd"])
def test_an_empty_poisson_cohort_is_a_recorded_round(tmp_path, project_root, mode):
    """Seed 0, 1 of 20 expected: round 1's Poisson cohort is empty (P = 0.95^20 = 0.36). The
    round is released (noise / m under central DP), recorded with 0 clients, and accounted."""
    audited = (
        ["audit.enabled=true", "audit.tests=2000", "audit.iterations=5", "audit.design_pool=4"]
        if mode == "server_fixed"
        else []
    )
    scenario = _scenario(
        project_root,
        "clients_per_round=1",
        "rounds=2",
        f"dp.mode={mode}",
        "dp.noise_multiplier=0.8",
        "dp.clip_norm=0.5",
        *audited,
    )
    loop = RoundLoop(scenario=scenario)
    start = loop.params.copy()
    result = loop.run_round(InProcessTransport(scenario=scenario), 1)
    record = result.record
    assert record.clients == 0 and record.train_loss is None
    moved = loop.params - start
    if DpMechanism.from_scenario(scenario).central:
        # the noisy sum of nobody, divided by the expected cohort (1): N(0, (z C)^2) per coordinate
        z_c = 0.8 * 0.5 if mode != "server_adaptive" else loop.aggregator.update_noise_multiplier * 0.5
        assert moved.std() == pytest.approx(z_c * scenario.server.lr, rel=0.1)
        assert record.epsilon_cumulative_theory > 0 and math.isfinite(record.epsilon_cumulative_theory)
    else:
        assert not moved.any()  # nobody trained, nothing released
    if mode == "server_fixed":
        assert record.epsilon_round_empirical is not None  # the audit ran on the empty cohort too
        assert result.audit.replay.scores_with.shape == (2000,)
    result = run_scenario(scenario=scenario, out_dir=tmp_path, engine="inprocess")
    assert [row.clients for row in result.rows][0] == 0
    assert RunStore.open(result.store.path).manifest()["status"] == "completed"
