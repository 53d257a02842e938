"""Checkpoints and resume (in-process engine): a resumed run's rounds.csv equals an
uninterrupted run's (seconds aside), audit columns included; rounds after the last
checkpoint are recomputed, not duplicated; tampered checkpoints are refused."""

import dataclasses
import datetime
import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedsim.cli import app
from fedsim.config import load_scenario
from fedsim.errors import FedsimError
from fedsim.runner import Interrupted, resume_run, run_scenario
from fedsim.store import RunStore

SMALL = ["rounds=5", "clients_per_round=5", "data.num_clients=20", "data.design_pool=4", "audit.enabled=false"]
AUDITED = ["audit.enabled=true", "audit.tests=2000", "audit.iterations=10", "audit.design_pool=4"]


def _scenario(project_root, *overrides):
    return load_scenario(project_root / "scenarios" / "quickstart.yaml", overrides=[*SMALL, *overrides])


def _without_time(rows):
    return [dataclasses.replace(row, seconds=None) for row in rows]


def _interrupted_run(project_root, out, *overrides, after: int) -> Path:
    def stop(row):
        if row.round == after:
            raise Interrupted("SIGTERM")

    with pytest.raises(KeyboardInterrupt):
        run_scenario(scenario=_scenario(project_root, *overrides), out_dir=out, engine="inprocess", on_round=stop)
    (folder,) = list(out.iterdir())
    return folder


@pytest.mark.parametrize(
    ("overrides", "after", "checkpointed"),
    [
        ([], 2, 2),  # a checkpoint every round
        (["checkpoint.every=2"], 3, 2),  # round 3 finished after the last checkpoint: recomputed
        ([*AUDITED, "dp.mode=server_adaptive", "server.optimizer=fedadam", "server.lr=0.1"], 2, 2),
    ],
)
def test_resume_gives_the_rounds_of_an_uninterrupted_run(tmp_path, project_root, overrides, after, checkpointed):
    whole = run_scenario(scenario=_scenario(project_root, *overrides), out_dir=tmp_path / "whole", engine="inprocess")
    folder = _interrupted_run(project_root, tmp_path / "cut", *overrides, after=after)
    store = RunStore.open(folder)
    manifest = store.manifest()
    assert manifest["status"] == "interrupted" and "SIGTERM" in manifest["error"]
    assert manifest["checkpoint"]["round"] == checkpointed and len(store.rounds()) == after
    resumed = resume_run(path=folder, engine="inprocess")
    assert _without_time(resumed.rows) == _without_time(whole.rows)
    assert _without_time(RunStore.open(folder).rounds()) == _without_time(whole.rows)  # no duplicates
    assert store.manifest()["status"] == "completed" and len(store.manifest()["resumed_at"]) == 1
    if "audit.enabled=true" in overrides:
        assert store.audited_rounds() == RunStore.open(whole.store.path).audited_rounds() == [1, 2, 3, 4, 5]
        for round_number in (2, 3):  # an audit written before and one after the interruption
            cut_arrays, _ = store.read_audit(round_number)
            whole_arrays, _ = RunStore.open(whole.store.path).read_audit(round_number)
            np.testing.assert_array_equal(cut_arrays["scores_with"], whole_arrays["scores_with"])


def test_resume_of_a_completed_run_and_of_a_folder_that_is_not_a_run(tmp_path, project_root):
    done = run_scenario(scenario=_scenario(project_root, "rounds=2"), out_dir=tmp_path, engine="inprocess")
    before = done.store.rounds_path.read_bytes()
    result = CliRunner().invoke(app, ["resume", str(done.store.path), "--engine", "inprocess"])
    assert result.exit_code == 0 and "already completed" in result.output
    assert done.store.rounds_path.read_bytes() == before
    result = CliRunner().invoke(app, ["resume", str(tmp_path), "--engine", "inprocess"])
    assert result.exit_code == 2 and "not a fedsim run folder" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_a_stop_while_the_checkpoint_is_written_still_resumes(tmp_path, project_root, monkeypatch):
    """SIGTERM lands after the manifest names round 3's checkpoint but before the file
    takes its place: resume finishes the move and continues from round 3."""
    import fedsim.store as store_module

    whole = run_scenario(scenario=_scenario(project_root), out_dir=tmp_path / "whole", engine="inprocess")
    real_replace, calls = os.replace, []

    def stop_on_third_checkpoint(src, dst):
        calls.append(dst)
        if str(dst).endswith("checkpoint.npz") and len([c for c in calls if str(c).endswith("checkpoint.npz")]) == 3:
            raise Interrupted("SIGTERM")
        real_replace(src, dst)

    monkeypatch.setattr(store_module.os, "replace", stop_on_third_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run_scenario(scenario=_scenario(project_root), out_dir=tmp_path / "cut", engine="inprocess")
    monkeypatch.setattr(store_module.os, "replace", real_replace)
    (folder,) = list((tmp_path / "cut").iterdir())
    assert RunStore.open(folder).manifest()["checkpoint"]["round"] == 3
    resumed = resume_run(path=folder, engine="inprocess")
    assert _without_time(resumed.rows) == _without_time(whole.rows)


def test_a_tampered_checkpoint_is_refused(tmp_path, project_root):
    folder = _interrupted_run(project_root, tmp_path, after=2)
    store = RunStore.open(folder)
    with np.load(store.checkpoint_path) as data:
        arrays = dict(data)
    arrays["params"] = arrays["params"] + 1.0  # a modified model
    np.savez(store.checkpoint_path, **arrays)
    with pytest.raises(FedsimError, match="does not match the sha256 recorded in manifest.json"):
        resume_run(path=folder, engine="inprocess")
    assert store.manifest()["status"] == "interrupted" and len(store.rounds()) == 2  # nothing changed


def test_a_checkpoint_with_a_code_running_payload_is_refused_even_with_a_matching_digest(tmp_path, project_root):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    folder = _interrupted_run(project_root, tmp_path / "run", after=2)
    store = RunStore.open(folder)
    with np.load(store.checkpoint_path) as data:
        arrays = dict(data)
    arrays["params"] = np.array([Payload()], dtype=object)  # saved as a pickle inside the .npz
    np.savez(store.checkpoint_path, **arrays)
    manifest = store.manifest()
    manifest["checkpoint"]["sha256"] = __import__("hashlib").sha256(store.checkpoint_path.read_bytes()).hexdigest()
    store.manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(FedsimError, match="cannot read") as info:
        resume_run(path=folder, engine="inprocess")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "pwned").exists()


def test_a_full_disk_stops_the_run_as_failed_and_keeps_earlier_rounds(tmp_path, project_root):
    """Writing the checkpoint of round 3 hits ENOSPC (its temporary file is /dev/full)."""

    def fill_disk(row):
        if row.round == 2:
            (row_store["store"].checkpoint_path.with_suffix(".npz.tmp")).symlink_to("/dev/full")

    row_store = {}
    with pytest.raises(FedsimError) as info:
        run_scenario(
            scenario=_scenario(project_root),
            out_dir=tmp_path,
            engine="inprocess",
            on_start=lambda store: row_store.update(store=store),
            on_round=fill_disk,
        )
    message = str(info.value)
    assert "No space left on device" in message and "fedsim resume" in message and "\n" not in message
    store = row_store["store"]
    assert store.manifest()["status"] == "failed" and store.manifest()["checkpoint"]["round"] == 2
    assert [row.round for row in store.rounds()] == [1, 2, 3]  # round 3's row was written first
    (store.checkpoint_path.with_suffix(".npz.tmp")).unlink()
    resumed = resume_run(path=store.path, engine="inprocess")  # round 3 is recomputed, not duplicated
    assert [row.round for row in resumed.rows] == [1, 2, 3, 4, 5]


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, project_root, monkeypatch):
    import fedsim.store as store_module

    suffixes = iter(["aaaaaa", "aaaaaa", "bbbbbb"])  # the second run draws a taken suffix first
    monkeypatch.setattr(store_module.secrets, "token_hex", lambda n: next(suffixes))
    second = datetime.datetime(2026, 11, 28, 9, 30, 0)

    class SameSecond(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return second if tz is None else second.replace(tzinfo=tz)

    monkeypatch.setattr(store_module.dt, "datetime", SameSecond)
    scenario = _scenario(project_root)
    first = RunStore.create(parent=tmp_path, scenario=scenario)
    second_run = RunStore.create(parent=tmp_path, scenario=scenario)
    assert first.path.name == "20261128-093000-quickstart-aaaaaa"
    assert second_run.path.name == "20261128-093000-quickstart-bbbbbb"
    assert first.manifest()["status"] == second_run.manifest()["status"] == "running"
