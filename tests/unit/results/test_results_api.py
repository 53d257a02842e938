"""fedsim.results: typed run frames, audits and what-if points, read from the run store."""

import math

import numpy as np
import pandas as pd
import pytest

from fedsim.errors import FedsimError
from fedsim.records import INTEGER_COLUMNS, ROUND_COLUMNS, RoundRecord
from fedsim.results import RUN_COLUMNS, SCENARIO_FIELDS, find_runs, load_audit, load_runs, load_what_if
from fedsim.store import RunStore

ROUNDS = [
    RoundRecord(
        round=1,
        clients=9,
        eval_accuracy=0.5,
        epsilon_round_theory=2.0,
        epsilon_cumulative_theory=2.0,
        epsilon_round_empirical=1.5,
        epsilon_round_empirical_lower_bound=0.25,
        epsilon_cumulative_empirical_extrapolated=1.5,
    ),
    RoundRecord(round=2, clients=11, eval_accuracy=None, epsilon_round_theory=math.inf, train_loss=0.1 + 0.2),
]


def test_load_runs_one_typed_row_per_run_and_round(tmp_path, make_run):
    make_run(tmp_path / "runs", "a", rounds=ROUNDS, overrides=["dp.noise_multiplier=0.3", "data.num_clients=50"])
    make_run(tmp_path / "runs", "b", rounds=ROUNDS[:1], overrides=["dp.mode=none"], status="failed")
    frame = load_runs(tmp_path / "runs")

    assert list(frame.columns[: len(RUN_COLUMNS)]) == list(RUN_COLUMNS)
    assert list(frame.columns[-len(ROUND_COLUMNS) :]) == list(ROUND_COLUMNS)
    assert set(SCENARIO_FIELDS) <= set(frame.columns) and "data.options" not in frame.columns
    assert list(zip(frame.run_id, frame["round"])) == [("a", 1), ("a", 2), ("b", 1)]
    for column in ROUND_COLUMNS:
        assert str(frame[column].dtype) == ("Int64" if column in INTEGER_COLUMNS else "float64"), column
    a = frame[frame.run_id == "a"]
    assert a.epsilon_round_theory.tolist() == [2.0, math.inf]  # inf stays inf
    assert np.isnan(a.eval_accuracy.iloc[1]) and a.train_loss.iloc[1] == 0.1 + 0.2  # exact floats
    assert a["dp.noise_multiplier"].tolist() == [0.3, 0.3] and a["data.num_clients"].tolist() == [50, 50]
    assert a["dp.delta"].iloc[0] == 1e-5 and a["audit.estimators"].iloc[0] == ("gaussian", "threshold")
    assert a.status.tolist() == ["completed"] * 2 and a.rounds_planned.tolist() == [4, 4]
    b = frame[frame.run_id == "b"]
    assert b.status.tolist() == ["failed"] and b["dp.mode"].tolist() == ["none"]
    assert b.path.iloc[0] == str((tmp_path / "runs" / "b").resolve())


def test_a_run_without_rounds_is_listed_with_an_empty_round(tmp_path, make_run):
    make_run(tmp_path, "fresh", rounds=[], status=None)
    frame = load_runs(tmp_path / "fresh")
    assert len(frame) == 1 and frame["round"].isna().all() and frame.status.tolist() == ["running"]
    assert frame.epsilon_cumulative_theory.isna().all()


def test_a_row_still_being_written_is_not_read(tmp_path, make_run):
    store = make_run(tmp_path, "live", rounds=ROUNDS[:1], status=None)
    with open(store.rounds_path, "a") as handle:
        handle.write("2,10,0,0.12")  # the writer is mid-row: no line end yet
    assert load_runs(store.path)["round"].tolist() == [1]
    with open(store.rounds_path, "a") as handle:
        handle.write("34" + "," * (len(ROUND_COLUMNS) - 4) + "\r\n")
    frame = load_runs(store.path)
    assert frame["round"].tolist() == [1, 2] and frame.train_loss.iloc[1] == 0.1234


def test_folders_are_searched_recursively_and_bad_paths_are_named(tmp_path, make_run):
    make_run(tmp_path / "sweep" / "inner", "deep", rounds=ROUNDS)
    make_run(tmp_path / "sweep", "top", rounds=ROUNDS)
    assert [path.name for path in find_runs(tmp_path / "sweep")] == ["deep", "top"]
    # a run named twice (directly and through its folder) is read once
    assert load_runs([tmp_path / "sweep", tmp_path / "sweep" / "top"]).run_id.nunique() == 2
    with pytest.raises(FedsimError, match="'.*missing' does not exist"):
        load_runs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FedsimError, match="holds no fedsim run folder"):
        load_runs(tmp_path / "empty")


def test_an_unreadable_run_is_skipped_in_a_folder_but_fails_when_named(tmp_path, make_run):
    make_run(tmp_path, "good", rounds=ROUNDS)
    bad = make_run(tmp_path, "bad", rounds=ROUNDS)
    bad.manifest_path.write_text("{ not json")
    with pytest.warns(UserWarning, match="bad"):
        frame = load_runs(tmp_path)
    assert frame.run_id.unique().tolist() == ["good"]
    with pytest.raises(FedsimError, match="bad"):
        load_runs(bad.path)


def test_load_audit_returns_the_scores_and_summary_written(tmp_path, make_run):
    rng = np.random.default_rng(0)
    scores_without = rng.uniform(0.0, 1.0, size=500)
    scores_with = rng.uniform(2.0, 3.0, size=400)  # perfectly separated: threshold in [1, 2]
    summary = {"round": 1, "canary_health": 0.9, "gaussian": {"epsilon": 3.0, "lower": 2.0, "upper": 4.0}}
    store = make_run(
        tmp_path,
        "audited",
        rounds=ROUNDS,
        overrides=["dp.delta=1e-6"],
        audits={1: ({"scores_with": scores_with, "scores_without": scores_without}, summary)},
    )
    audit = load_audit(store.path, round_number=1)
    assert audit.run_id == "audited" and audit.round == 1 and audit.delta == 1e-6
    assert audit.scores_with.dtype == np.float32 and audit.scores_without.dtype == np.float32
    assert np.array_equal(audit.scores_with, scores_with.astype(np.float32))
    assert np.array_equal(audit.scores_without, scores_without.astype(np.float32))
    assert audit.summary == summary and audit.what_if_scores_with is None and audit.what_if().empty
    # no threshold in the summary: recomputed, and it separates the two score sets
    assert audit.scores_without.max() <= audit.threshold < audit.scores_with.min()
    with pytest.raises(FedsimError, match="no audit of round 2; audited rounds: 1"):
        load_audit(store, round_number=2)


def test_a_threshold_written_by_the_audit_is_used_as_is(tmp_path, make_run):
    summary = {"threshold": {"epsilon": 1.0, "lower": 0.5, "upper": 2.0, "threshold": 0.123}}
    store = make_run(
        tmp_path, "t", rounds=ROUNDS, audits={1: ({"scores_with": [5.0], "scores_without": [-5.0]}, summary)}
    )
    assert load_audit(store.path, round_number=1).threshold == 0.123


def test_what_if_points_and_arrays(tmp_path, make_run):
    points = [
        {"noise_multiplier": 2.0, "epsilon_theory": 2.5, "epsilon_empirical": 2.0, "ci_low": 1.8, "ci_high": 2.2},
        {
            "noise_multiplier": 0.5,
            "epsilon_theory": 11.0,
            "epsilon_empirical": math.inf,
            "ci_low": 9.0,
            "ci_high": None,
            "lower_bound": 4.0,
        },
    ]
    what_if_with = np.arange(6, dtype=float).reshape(2, 3)
    arrays = {
        "scores_with": [1.0, 2.0, 3.0],
        "scores_without": [0.0, 1.0, 2.0],
        "what_if_scores_with": what_if_with,
        "what_if_scores_without": -what_if_with,
    }
    store = make_run(
        tmp_path,
        "w",
        rounds=ROUNDS,
        audits={1: (arrays, {"round": 1, "what_if": points}), 2: (arrays, {"round": 2})},
    )
    audit = load_audit(store.path, round_number=1)
    assert audit.what_if_scores_with.shape == (2, 3) and audit.what_if_scores_with.dtype == np.float32
    assert np.array_equal(audit.what_if_scores_without, -what_if_with.astype(np.float32))
    table = audit.what_if()
    assert table.noise_multiplier.tolist() == [0.5, 2.0]  # sorted by noise
    assert table.epsilon_empirical.iloc[0] == math.inf and np.isnan(table.ci_high.iloc[0])
    assert np.isnan(table.lower_bound.iloc[1]) and table.epsilon_theory.tolist() == [11.0, 2.5]
    every = load_what_if(store.path)
    assert every.run_id.unique().tolist() == ["w"] and every["round"].tolist() == [1, 1]  # round 2 had none
    assert load_what_if(make_run(tmp_path, "none", rounds=ROUNDS).path).empty


def test_a_real_in_process_run_reads_back_as_it_was_recorded(audited_runs):
    folder = audited_runs[0]
    store = RunStore.open(folder)
    recorded = store.rounds()
    frame = load_runs(folder)
    assert frame["round"].tolist() == [1, 2, 3] and frame.status.unique().tolist() == ["completed"]
    for column in ("epsilon_round_theory", "epsilon_cumulative_theory", "epsilon_round_empirical", "eval_accuracy"):
        assert frame[column].tolist() == [getattr(r, column) for r in recorded], column
    assert frame["dp.noise_multiplier"].unique().tolist() == [0.7] and frame["audit.tests"].iloc[0] == 2000
    arrays, summary = store.read_audit(2)
    audit = load_audit(folder, round_number=2)
    assert np.array_equal(audit.scores_with, arrays["scores_with"]) and audit.scores_with.shape == (2000,)
    assert audit.summary["gaussian"]["epsilon"] == pytest.approx(recorded[1].epsilon_round_empirical)
    assert isinstance(frame, pd.DataFrame)
