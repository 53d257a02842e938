"""Scenario validation: typed, frozen, with one-line errors naming key, value and what is allowed."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from fedsim.config import Scenario, load_scenario, scenario_from_dict
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
        (["dp.noise_multplier=1"], ["'dp.noise_multplier'", "did you mean 'dp.noise_multiplier'?", "allowed keys"]),
        (["round=3"], ["'round'", "did you mean 'rounds'?"]),
        (["rounds=true"], ["'rounds'", "True", "not true/false"]),
        (["dp.clip_norm=no"], ["'dp.clip_norm'", "not true/false"]),
        (["rounds=ten"], ["'rounds'", "'ten'", "integer"]),
        (["dp=5"], ["'dp'", "got 5"]),
        (["data.name=cifar"], ["'data.name'", "'cifar'", "did you mean 'cifar10'?", "synthetic", "digits"]),
        (
            ["data.options.alhpa=1"],
            ["'data.options.alhpa'", "did you mean 'data.options.alpha'?", "allowed options of data set synthetic"],
        ),
        (["data.options.alpha=high"], ["'data.options.alpha'", "'high'", "valid number"]),
        (["data.options.alpha=-1"], ["'data.options.alpha'", "-1", "greater than or equal to 0"]),
        (["data.options.iid=maybe"], ["'data.options.iid'", "'maybe'"]),
        (["data.options.dim=true"], ["'data.options.dim'", "not true/false"]),
        (["data.options.min_samples=50", "data.options.max_samples=20"], ["data.options.max_samples", "(20)", "50"]),
        (["data.options.seed=3"], ["'data.options.seed'", "scenario key 'seed'"]),
        (["data.options.root=/x"], ["'data.options.root'", "'data.root'"]),
        (["data.name=digits", "data.options.partition=shards"], ["'data.options.partition'", "'shards'", "'iid'"]),
        (["data.name=digits", "data.options.dim=3"], ["'data.options.dim'", "data set digits", "partition"]),
        (["data.options=5"], ["'data.options'", "dictionary"]),
        (["data.name=cifar10"], ["data.root", "fedsim data prepare cifar10"]),
        (["data.name=celeba"], ["data.root", "img_align_celeba", "by hand"]),
        (["data.name=sent140", "data.root=/nonexistent/s140"], ["'data.root'", "/nonexistent/s140", "does not exist"]),
        (["model.name=transformer"], ["'model.name'", "'transformer'", "logreg", "resnet_gn"]),
        (["model.name=mpl"], ["'model.name'", "did you mean 'mlp'?"]),
        (["model.name=sent140_lstm"], ["'model.name'", "sent140_lstm", "token ids", "synthetic"]),
        (["dp..mode=none"], ["--set dp..mode", "empty part"]),
        (["rounds.max=3"], ["'rounds'"]),
    ],
)
def test_bad_values_give_one_line_errors_naming_the_problem(overrides, must_contain):
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict({}, overrides=overrides)
    message = str(info.value)
    assert "\n" not in message
    for fragment in must_contain:
        assert fragment in message


def test_model_and_data_that_cannot_work_together_are_refused(tmp_path):
    (tmp_path / "s140").mkdir()
    with pytest.raises(ScenarioError, match="'model.name': logreg cannot read the token ids of data set sent140"):
        scenario_from_dict({"data": {"name": "sent140", "root": str(tmp_path / "s140")}, "model": {"name": "logreg"}})
    ok = scenario_from_dict(
        {"data": {"name": "sent140", "root": str(tmp_path / "s140")}, "model": {"name": "sent140_lstm"}}
    )
    assert ok.data.root == str(tmp_path / "s140")


def test_value_checks_alone_do_not_touch_the_file_system():
    # readers of a stored run (on another machine) validate its values without its data folder
    tree = {"data": {"name": "cifar10", "root": "/nonexistent/cifar"}, "model": {"name": "resnet_gn"}}
    assert Scenario.model_validate(tree).data.root == "/nonexistent/cifar"
    with pytest.raises(ScenarioError, match="'data.root'"):
        scenario_from_dict(tree)


def test_data_options_are_kept_as_given_with_their_types():
    scenario = scenario_from_dict({"data": {"name": "digits", "options": {"alpha": "1e-1"}}})
    assert scenario.data.options == {"alpha": 0.1}  # YAML reads 1e-1 as a string; the option is a number


@pytest.mark.parametrize(
    ("text", "must_contain"),
    [
        ("", ["is empty"]),
        ("# only a comment\n\n", ["is empty"]),
        ("{}\n", ["is empty"]),
        ("- 1\n- 2\n", ["mapping"]),
        ("rounds: [1,\n", ["not valid YAML", "line 2"]),
        ("rounds: 3\nseed: 1\nrounds: 4\n", ["not valid YAML", "line 3", "'rounds' appears twice"]),
        ("dp:\n  mode: none\n  mode: server_fixed\n", ["line 3", "'mode' appears twice"]),
        ("rounds: 3\n\tseed: 1\n", ["not valid YAML", "line 2"]),
    ],
)
def test_scenario_files_that_say_nothing_or_say_it_twice_are_refused(tmp_path, text, must_contain):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for fragment in must_contain:
        assert fragment in message


def test_yaml_merge_keys_are_not_mistaken_for_duplicates(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("dp:\n  <<: {mode: none, clip_norm: 2.0}\n  clip_norm: 3.0\n")
    scenario = load_scenario(path)
    assert (scenario.dp.mode, scenario.dp.clip_norm) == ("none", 3.0)


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
