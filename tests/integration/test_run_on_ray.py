"""End to end through the real Flower simulation engine on a real local Ray runtime."""

import dataclasses
import json
import math
import signal
import subprocess
import threading
import time

import pytest

from fedsim.errors import FedsimError
from fedsim.store import RunStore
from tests.conftest import BIN

pytestmark = pytest.mark.slow

SMALL = [
    "audit.tests=5000",
    "audit.design_pool=4",
    "rounds=4",
    "clients_per_round=5",
    "data.num_clients=20",
    "data.design_pool=4",
    "ray.num_nodes=5",
    "client.epochs=1",
]


def _fedsim(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "fedsim"), *args], capture_output=True, text=True, timeout=timeout)


def _run_folder(out_dir):
    (folder,) = list(out_dir.iterdir())
    return folder


def _rows(folder):
    return RunStore.open(folder).rounds()


def test_fedsim_run_server_fixed_writes_every_round(tmp_path, project_root):
    overrides = [*SMALL, "dp.noise_multiplier=0.5", "dp.clip_norm=1.0"]
    result = _fedsim(
        "run",
        str(project_root / "scenarios" / "quickstart.yaml"),
        *sum((["--set", s] for s in overrides), []),
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    folder = _run_folder(tmp_path)
    assert f"results: {folder}" in result.stdout
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["rounds_completed"] == 4
    rows = _rows(folder)
    assert [int(r.round) for r in rows] == [1, 2, 3, 4]
    eps = [float(r.epsilon_cumulative_theory) for r in rows]
    assert all(b > a for a, b in zip(eps, eps[1:])), eps
    # every round: the same per-round epsilon (one Gaussian with z = 0.5 at delta 1e-5)
    assert len({r.epsilon_round_theory for r in rows}) == 1
    for r in rows:
        assert float(r.noise_std) == pytest.approx(0.5 * 1.0 / 5)  # z C / expected cohort
        assert 0.0 <= float(r.clip_fraction) <= 1.0
        assert 0.0 <= float(r.eval_accuracy) <= 1.0
        # the canary audit ran through Flower too: its lower bound never beats the theory
        assert float(r.epsilon_round_empirical_lower_bound) <= float(r.epsilon_round_theory)
        assert float(r.canary_health) > 0.5
    assert len(list((folder / "audits").glob("round_*.npz"))) == 4
    # Flower and Ray stay quiet without --verbose
    assert "INFO" not in result.stderr


def test_client_side_clipping_through_flower_mod_and_no_dp_baseline(tmp_path, project_root):
    """client_fixed clips in Flower's fixedclipping_mod; updates arrive within C."""
    from fedsim.config import load_scenario
    from fedsim.runner import run_scenario

    scenario = load_scenario(
        project_root / "scenarios" / "quickstart.yaml",
        overrides=[*SMALL, "dp.mode=client_fixed", "dp.clip_norm=0.05", "dp.noise_multiplier=0.0"],
    )
    result = run_scenario(scenario=scenario, out_dir=tmp_path)
    rows = result.rows
    # Flower on Ray computes exactly what the same clients compute in-process
    reference = run_scenario(scenario=scenario, out_dir=tmp_path, engine="inprocess").rows
    for flower_row, local_row in zip(rows, reference, strict=True):
        for key in ("clients", "train_loss", "eval_loss", "eval_accuracy", "clip_fraction"):
            assert getattr(flower_row, key) == pytest.approx(getattr(local_row, key), rel=1e-5), key
    # with a tiny clip norm nearly every update is clipped (reported by clients before the mod clips)
    assert all(r.clip_fraction == 1.0 for r in rows if r.clients > 0)
    # noise 0 is no privacy: the accountant says so
    assert all(math.isinf(r.epsilon_cumulative_theory) for r in rows)


def test_one_step_clients_on_ray_compute_what_they_compute_in_process(tmp_path, project_root):
    """Sent140's LSTM on clients of 1-2 tweets: both engines train them together from
    batched per-user gradients, in the same shares, with the same rounds as a result."""
    from fedsim.config import load_scenario
    from fedsim.runner import run_scenario
    from tests.fixtures.fake_datasets import write_fake_sent140

    root = write_fake_sent140(tmp_path / "sent140", users=40)
    scenario = load_scenario(
        project_root / "scenarios" / "sent140.yaml",
        overrides=[
            f"data.root={root}",
            "data.num_clients=36",
            "data.design_pool=4",
            "audit.enabled=false",
            "data.options.max_words=200",
            "model.hidden=32",
            "clients_per_round=10",
            "rounds=3",
            "ray.num_nodes=3",
            "evaluation.clients=12",
            "dp.noise_multiplier=1.0",
        ],
    )
    flower = run_scenario(scenario=scenario, out_dir=tmp_path / "flower").rows
    local = run_scenario(scenario=scenario, out_dir=tmp_path / "local", engine="inprocess").rows
    assert _without_time(flower) == _without_time(local)
    assert all(row.clients > 0 and row.train_loss is not None for row in flower)


def _wait_for_rounds(out_dir, count: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        folders = list(out_dir.iterdir()) if out_dir.exists() else []
        try:
            if folders and len(_rows(folders[0])) >= count:
                return
        except (FedsimError, ValueError, OSError):
            pass  # the folder before its manifest, or a row being written
        time.sleep(0.2)
    raise AssertionError(f"no {count} rounds within {timeout} s")


def _without_time(rows):
    return [dataclasses.replace(row, seconds=None) for row in rows]


RESUMABLE = [
    "rounds=6",
    "clients_per_round=5",
    "data.num_clients=20",
    "data.design_pool=4",
    "ray.num_nodes=4",
    "client.epochs=1",
    "audit.design_pool=4",
    "audit.tests=2000",
    "audit.iterations=20",
]


@pytest.mark.parametrize(
    ("signal_name", "engine", "audit"),
    [
        ("SIGINT", "flower", "true"),
        ("SIGINT", "inprocess", "false"),
        ("SIGTERM", "inprocess", "true"),
        ("SIGTERM", "flower", "false"),
    ],
)
def test_a_signal_stops_the_run_and_resume_gives_the_uninterrupted_rounds(
    tmp_path, project_root, signal_name, engine, audit
):
    """Ctrl-C or SIGTERM (what schedulers and `timeout` send) after round 2 of a running
    `fedsim run`: exit 130, finished rounds kept, status interrupted; `fedsim resume`
    finishes it, and rounds.csv equals an uninterrupted run of the same seed."""
    from fedsim.config import load_scenario
    from fedsim.runner import run_scenario

    # client 16 (sampled in round 3) stops answering for 4 s: the signal after round 2 lands
    # in round 3 however fast the other rounds are; it then fails, in every run alike
    slow_round_3 = ["faults.hang_clients=[16]", "faults.rounds=[3]", "faults.hang_s=4", "min_replies=0.1"]
    overrides = [*RESUMABLE, f"audit.enabled={audit}", *slow_round_3]
    scenario_file = str(project_root / "scenarios" / "quickstart.yaml")
    sets = sum((["--set", s] for s in overrides), [])
    out = tmp_path / "runs"
    process = subprocess.Popen(
        [str(BIN / "fedsim"), "run", scenario_file, *sets, "--engine", engine, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        _wait_for_rounds(out, 2)
        process.send_signal(getattr(signal, signal_name))
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted; finished rounds are kept in" in stderr and "fedsim resume" in stderr
    assert "Traceback" not in stderr
    folder = _run_folder(out)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and signal_name in manifest["error"]
    rows = _rows(folder)
    assert len(rows) == 2 and [r.round for r in rows] == [1, 2]
    resumed = _fedsim("resume", str(folder), "--engine", engine)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "done: 6 rounds" in resumed.stdout
    whole = run_scenario(
        scenario=load_scenario(scenario_file, overrides=overrides), out_dir=tmp_path / "whole", engine="inprocess"
    )
    assert _without_time(_rows(folder)) == _without_time(whole.rows)
    assert [row.failures for row in whole.rows][2] == 1
    if audit == "true":
        assert RunStore.open(folder).audited_rounds() == [1, 2, 3, 4, 5, 6]
    if engine == "flower":  # the local Ray runtime the runs started goes away with them
        deadline = time.monotonic() + 30
        while _ray_processes() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _ray_processes()


def test_failing_and_hung_clients_on_ray(tmp_path, project_root):
    """A client that raises and one that hangs (past round_timeout_s) on real Ray actors:
    the rounds go on with the replies that came and count the failures."""
    from fedsim.config import load_scenario
    from fedsim.runner import run_scenario
    from fedsim.strategies import sample_cohort

    cohort = sample_cohort(population=20, clients_per_round=5, method="poisson", seed=0, round_number=1).tolist()
    failing, hung = cohort[0], cohort[1]
    scenario = load_scenario(
        project_root / "scenarios" / "quickstart.yaml",
        overrides=[
            *RESUMABLE,
            "rounds=3",
            "audit.enabled=false",
            f"faults.fail_clients=[{failing}]",
            f"faults.hang_clients=[{hung}]",
            "faults.rounds=[1]",
            "faults.hang_s=120",
            "round_timeout_s=15",
            "min_replies=0.2",
        ],
    )
    started = time.monotonic()
    result = run_scenario(scenario=scenario, out_dir=tmp_path)
    assert time.monotonic() - started < 110  # the round gave up on the hung client
    assert [row.failures for row in result.rows] == [2, 0, 0]
    assert result.store.manifest()["status"] == "completed"
    # Flower wound down on its own: no thread of it is left waiting on the hung client's
    # actor (such a thread kept the interpreter from exiting after the test session)
    assert not [thread.name for thread in threading.enumerate() if thread.name == "fedsim-flower"]


def _ray_processes() -> list[str]:
    listing = subprocess.run(["ps", "-eo", "comm"], capture_output=True, text=True).stdout.split()
    return [name for name in listing if name in ("raylet", "gcs_server")]
