"""Scenario validation: typed, frozen, with one-line errors naming key, value and what is allowed."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from fedsim.config import load_scenario, scenario_from_dict
from fedsim.errors import ScenarioError

ROOT = Path(__file__).resolve().parents[3]


def test_quickstart_loads_with_its_declared_values():
    scenario = load_scenario(ROOT / "scenarios" / "quickstart.yaml")
    assert scenario.data.num_clients == 100
    assert scenario.clients_per_round == 10
    assert scenario.rounds == 30
    assert scenario.dp.mode == "server_fixed"
    assert scenario.sampling_rate == pytest.approx(0.1)


def test_overrides_reach_nested_keys_and_are_typed():
    scenario = scenario_from_dict(
        {"rounds": 3}, overrides=["dp.noise_multiplier=0.25", "dp.mode=none", "data.options.alpha=0", "dp.delta=1e-6"]
    )
    assert scenario.dp.noise_multiplier == 0.25
    assert scenario.dp.mode == "none"
    assert scenario.dp.delta == 1e-6
    assert scenario.data.options == {"alpha": 0}


def test_scenario_is_frozen():
    scenario = scenario_from_dict({})
    with pytest.raises(ValidationError):
        scenario.rounds = 5


@pytest.mark.parametrize(
    ("overrides", "must_contain"),
    [
        (["dp.mode=strong"], ["dp.mode", "'strong'", "server_fixed", "client_fixed", "local_dpsgd"]),
        (["dp.nosie_multiplier=1"], ["dp.nosie_multiplier", "noise_multiplier", "clip_norm"]),
        (["rounds=0"], ["rounds", "0", "greater than or equal to 1"]),
        (["dp.delta=2"], ["dp.delta", "2", "less than 1"]),
        (["sampling=random"], ["sampling", "poisson", "fixed"]),
        (["clients_per_round=500"], ["clients_per_round", "500", "num_clients"]),
        (["colour=red"], ["colour", "allowed keys", "rounds"]),
        (["rounds"], ["key=value"]),
        (["client.lr=.inf"], ["client.lr", "finite"]),
        (["seed=100000000000000000000"], ["seed", "less than"]),
        (["name=../x"], ["name", "pattern"]),
        (["audit.estimators=[]"], ["audit.estimators", "at least 1"]),
        (["audit.enabled=true", "data.design_pool=0"], ["data.design_pool"]),
        (["audit.enabled=true", "audit.design_pool=50"], ["audit.design_pool", "data.design_pool"]),
    ],
)
def test_bad_values_give_one_line_errors_naming_the_problem(overrides, must_contain):
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict({}, overrides=overrides)
    message = str(info.value)
    assert "\n" not in message
    for fragment in must_contain:
        assert fragment in message


def test_missing_file_and_bad_yaml_are_scenario_errors(tmp_path):
    with pytest.raises(ScenarioError, match="not found"):
        load_scenario(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: [1,\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(bad)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ScenarioError, match="UTF-8"):
        load_scenario(latin)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ScenarioError, match="mapping"):
        load_scenario(listing)
