"""The run store: resolved scenario, atomic manifest, rounds appended durably."""

import csv
import json

import numpy as np
import pytest
import yaml

from fedsim.config import scenario_from_dict
from fedsim.errors import FedsimError
from fedsim.records import ROUND_COLUMNS, RoundRecord
from fedsim.store import RunStore


def test_create_writes_resolved_scenario_manifest_and_header(tmp_path):
    scenario = scenario_from_dict({"name": "s1", "seed": 42}, overrides=["dp.noise_multiplier=0.3"])
    store = RunStore.create(parent=tmp_path, scenario=scenario)
    resolved = yaml.safe_load((store.path / "scenario.yaml").read_text())
    assert resolved["seed"] == 42 and resolved["dp"]["noise_multiplier"] == 0.3
    assert resolved["dp"]["delta"] == 1e-5  # defaults are written out, not implied
    manifest = json.loads(store.manifest_path.read_text())
    assert manifest["status"] == "running" and manifest["seed"] == 42
    assert "flwr" in manifest["versions"] and "torch" in manifest["versions"]
    assert store.rounds_path.read_text().strip() == ",".join(ROUND_COLUMNS)


def test_rounds_are_readable_after_each_append_and_status_is_recorded(tmp_path):
    store = RunStore.create(parent=tmp_path, scenario=scenario_from_dict({}))
    store.append_round(RoundRecord(round=1, clients=9, eval_accuracy=0.5, epsilon_round_empirical=None))
    # another reader sees the row at once (flushed), with empty cells for missing values
    with open(store.rounds_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [
        {**{c: "" for c in ROUND_COLUMNS}, "round": "1", "clients": "9", "failures": "0", "eval_accuracy": "0.5"}
    ]
    assert store.manifest()["rounds_completed"] == 1
    store.append_round(RoundRecord(round=2, clients=11, epsilon_round_theory=float("inf"), noise_std=0.1 + 0.2))
    second = store.rounds()[1]
    # typed on the way back, floats exact (repr round-trips), missing values None
    assert second.epsilon_round_theory == float("inf") and second.noise_std == 0.1 + 0.2
    assert second.train_loss is None and isinstance(second.round, int)
    store.finish(status="interrupted", error="stopped")
    manifest = RunStore.open(store.path).manifest()
    assert manifest["status"] == "interrupted" and manifest["ended_at"] and len(store.rounds()) == 2
    assert not list(store.path.glob("*.tmp"))


def test_audits_are_float32_arrays_with_a_summary(tmp_path):
    store = RunStore.create(parent=tmp_path, scenario=scenario_from_dict({}))
    scores = np.random.default_rng(0).normal(size=1000)
    store.write_audit(
        round_number=3, arrays={"scores_with": scores + 1, "scores_without": scores}, summary={"round": 3}
    )
    arrays, summary = store.read_audit(3)
    assert arrays["scores_with"].dtype == np.float32
    assert np.array_equal(arrays["scores_without"], scores.astype(np.float32)) and summary == {"round": 3}
    assert store.audited_rounds() == [3]
    with pytest.raises(FedsimError, match="no audit of round 4; audited rounds: 3"):
        store.read_audit(4)


def test_unknown_columns_are_refused_and_bad_folders_are_reported(tmp_path):
    store = RunStore.create(parent=tmp_path, scenario=scenario_from_dict({}))
    with pytest.raises(TypeError, match="accuracy"):
        store.append_round(RoundRecord(round=1, clients=1, accuracy=1.0))
    with pytest.raises(FedsimError, match="not a fedsim run folder"):
        RunStore.open(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(FedsimError, match="--out"):
        RunStore.create(parent=blocker, scenario=scenario_from_dict({}))
