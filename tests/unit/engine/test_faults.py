"""Failing and hung clients (in-process engine): the round goes on with the replies that
came, failures are counted, the accounting stays as sampled; below min_replies the run
stops as failed with every earlier round kept."""

import json
import time

import pytest

from fedsim.config import load_scenario
from fedsim.errors import FedsimError
from fedsim.runner import run_scenario
from fedsim.store import RunStore
from fedsim.strategies import sample_cohort

SMALL = ["rounds=4", "clients_per_round=6", "data.num_clients=20", "data.design_pool=4", "audit.enabled=false"]
FAILING = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]  # every even client raises when it trains


def _scenario(project_root, *overrides):
    return load_scenario(project_root / "scenarios" / "quickstart.yaml", overrides=[*SMALL, *overrides])


def _cohorts(scenario):
    return [
        sample_cohort(population=20, clients_per_round=6, method="poisson", seed=scenario.seed, round_number=r).tolist()
        for r in range(1, scenario.rounds + 1)
    ]


def test_failing_clients_are_counted_and_the_run_completes(tmp_path, project_root):
    scenario = _scenario(project_root, f"faults.fail_clients={FAILING}", "min_replies=0.1")
    clean = run_scenario(scenario=_scenario(project_root), out_dir=tmp_path, engine="inprocess").rows
    result = run_scenario(scenario=scenario, out_dir=tmp_path, engine="inprocess")
    cohorts = _cohorts(scenario)
    assert [row.failures for row in result.rows] == [sum(c in FAILING for c in cohort) for cohort in cohorts]
    assert sum(row.failures for row in result.rows) > 0
    assert [row.clients for row in result.rows] == [len(cohort) for cohort in cohorts]  # as sampled
    # the accounting is the sampled one, failures or not
    assert [row.epsilon_cumulative_theory for row in result.rows] == [row.epsilon_cumulative_theory for row in clean]
    assert result.store.manifest()["status"] == "completed"
    assert result.rows[-1].train_loss != clean[-1].train_loss  # the failed clients did not train


@pytest.mark.parametrize(
    "audited", [[], ["audit.enabled=true", "audit.tests=2000", "audit.iterations=10", "audit.design_pool=4"]]
)
def test_below_min_replies_the_run_fails_and_keeps_earlier_rounds(tmp_path, project_root, audited):
    """Audited: round 2's audit is still running when round 3 fails, and is kept too."""
    everyone = list(range(20))
    scenario = _scenario(
        project_root, f"faults.fail_clients={everyone}", "faults.rounds=[3]", "min_replies=0.5", *audited
    )
    with pytest.raises(FedsimError) as info:
        run_scenario(scenario=scenario, out_dir=tmp_path, engine="inprocess")
    message = str(info.value)
    assert "\n" not in message and "round 3" in message and "min_replies" in message and "InjectedFault" in message
    (folder,) = list(tmp_path.iterdir())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "min_replies" in manifest["error"]
    assert [r.round for r in RunStore.open(folder).rounds()] == [1, 2]
    assert RunStore.open(folder).audited_rounds() == ([1, 2] if audited else [])


def test_a_hung_client_times_the_round_out_and_the_run_goes_on(tmp_path, project_root):
    scenario = _scenario(project_root)
    first_cohort = _cohorts(scenario)[0]
    hung = first_cohort[-1]  # trained last in round 1: the others answer before it hangs
    hanging = _scenario(
        project_root, f"faults.hang_clients=[{hung}]", "faults.rounds=[1]", "faults.hang_s=60", "round_timeout_s=5"
    )
    started = time.monotonic()
    result = run_scenario(scenario=hanging, out_dir=tmp_path, engine="inprocess")
    assert time.monotonic() - started < 45  # not the 60 s the client hangs
    assert [row.failures for row in result.rows] == [1, 0, 0, 0]
    assert result.store.manifest()["status"] == "completed"


def test_a_round_whose_design_pool_users_all_fail_goes_on_unaudited(tmp_path, project_root, monkeypatch):
    """The canary needs the design pool's updates; when none came back (the users crashed)
    the round is kept, with its theory columns and without an audit, and the run goes on."""
    from fedsim.clients.work import ClientRunner

    audited = ["audit.enabled=true", "audit.design_pool=4", "audit.iterations=5", "audit.tests=2000", "rounds=2"]
    scenario = _scenario(project_root, *audited)
    real_train = ClientRunner.train

    def crashing_design_pool(self, *, client_id, round_number, **kwargs):
        if client_id >= scenario.data.num_clients and round_number == 1:  # design-pool ids follow the population
            raise MemoryError("design-pool user out of memory")
        return real_train(self, client_id=client_id, round_number=round_number, **kwargs)

    real_lockstep = ClientRunner.train_lockstep

    def crashing_lockstep(self, *, client_ids, round_number, **kwargs):  # the design pool's share trains in lockstep
        if max(client_ids) >= scenario.data.num_clients and round_number == 1:
            raise MemoryError("design-pool users out of memory")
        return real_lockstep(self, client_ids=client_ids, round_number=round_number, **kwargs)

    monkeypatch.setattr(ClientRunner, "train", crashing_design_pool)
    monkeypatch.setattr(ClientRunner, "train_lockstep", crashing_lockstep)
    rows = run_scenario(scenario=scenario, out_dir=tmp_path, engine="inprocess").rows
    assert [row.round for row in rows] == [1, 2]
    assert rows[0].epsilon_round_empirical is None and rows[0].epsilon_cumulative_theory > 0
    assert rows[1].epsilon_round_empirical is not None  # audit.every=1 default: round 2 is audited again
