"""`fedsim sweep`: one run folder per combination, restartable without redoing finished runs."""

import subprocess

import pytest
import yaml
from typer.testing import CliRunner

from fedsim.cli import app
from fedsim.store import RunStore
from fedsim.sweep import parse_grid, plan_sweep, run_name, run_sweep
from tests.conftest import BIN

TINY = [
    "rounds=2",
    "clients_per_round=5",
    "data.num_clients=20",
    "data.design_pool=4",
    "audit.enabled=false",
]
NAMES = [f"quickstart__dp.noise_multiplier={z}" for z in ("0.5", "1.0", "2.0")]


def _files(folder):
    """Every file of a folder with its modification time and bytes."""
    return {
        path.relative_to(folder): (path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_interrupted_sweep_restarts_without_redoing_finished_runs(tmp_path, project_root):
    scenario = project_root / "scenarios" / "quickstart.yaml"
    grid = ["dp.noise_multiplier=0.5,1.0,2.0"]
    plan = plan_sweep(scenario_path=scenario, grid=grid, overrides=TINY)
    assert [run.name for run in plan] == NAMES
    assert [run.scenario.dp.noise_multiplier for run in plan] == [0.5, 1.0, 2.0]

    started = []

    def interrupt_second(row):
        if len(started) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second combination's first round

    with pytest.raises(KeyboardInterrupt):
        run_sweep(
            plan=plan,
            out=tmp_path,
            engine="inprocess",
            on_event=lambda kind, run, folder, detail: started.append(run.name) if kind == "start" else None,
            on_round=interrupt_second,
        )
    first = tmp_path / NAMES[0]
    assert RunStore.open(first).manifest()["status"] == "completed"
    assert RunStore.open(tmp_path / NAMES[1]).manifest()["status"] == "interrupted"
    assert not (tmp_path / NAMES[2]).exists()
    before = _files(first)

    result = CliRunner().invoke(
        app,
        [
            "sweep",
            str(scenario),
            "--grid",
            grid[0],
            *sum((["--set", item] for item in TINY), []),
            "--out",
            str(tmp_path),
            "--engine",
            "inprocess",
        ],
    )
    assert result.exit_code == 0, result.output
    assert _files(first) == before  # the finished run was not touched
    for name in NAMES:
        manifest = RunStore.open(tmp_path / name).manifest()
        assert manifest["status"] == "completed" and manifest["rounds_completed"] == 2, name
    stored_noise = [
        yaml.safe_load((tmp_path / name / "scenario.yaml").read_text())["dp"]["noise_multiplier"] for name in NAMES
    ]
    assert stored_noise == [0.5, 1.0, 2.0]
    # the interrupted combination was resumed from its checkpoint, in its own folder
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(NAMES)
    assert len(RunStore.open(tmp_path / NAMES[1]).manifest()["resumed_at"]) == 1
    assert f"[1/3] {NAMES[0]}: completed earlier, skipped" in result.output
    assert f"[2/3] {NAMES[1]}: resuming the interrupted run from its last checkpoint" in result.output
    # the compare table closes the sweep: one row per combination, with its noise
    table_rows = [line.split("│")[1:-1] for line in result.output.splitlines() if line.startswith("│ quickstart__")]
    assert [[cell.strip() for cell in row][:7] for row in table_rows] == [
        [name, "synthetic", "server_fixed", z, "0.5", "2/2", "completed"] for name, z in zip(NAMES, ("0.5", "1", "2"))
    ]

    again = CliRunner().invoke(
        app,
        ["sweep", str(scenario), "--grid", grid[0], *sum((["--set", s] for s in TINY), []), "--out", str(tmp_path)],
    )
    assert again.exit_code == 0 and again.output.count("completed earlier, skipped") == 3
    # the same folder names with other settings are refused, not silently reused
    other = CliRunner().invoke(
        app,
        ["sweep", str(scenario), "--grid", grid[0], *sum((["--set", s] for s in [*TINY, "seed=7"]), [])]
        + ["--out", str(tmp_path)],
    )
    assert other.exit_code == 2 and "seed: 0 there, 7 now" in other.output


def test_names_are_deterministic_and_filesystem_safe():
    assert run_name(scenario="quickstart", overrides=[("dp.mode", "none"), ("dp.noise_multiplier", "0.5")]) == (
        "quickstart__dp.mode=none__dp.noise_multiplier=0.5"
    )
    odd = run_name(scenario="s", overrides=[("data.root", "/data/x y")])
    assert "/" not in odd and " " not in odd and odd == run_name(scenario="s", overrides=[("data.root", "/data/x y")])
    assert odd != run_name(scenario="s", overrides=[("data.root", "_data_x_y")])  # replaced characters never collide
    assert len(run_name(scenario="s", overrides=[("data.root", "x" * 500)])) <= 200
    assert parse_grid(["dp.mode=none,server_fixed", "seed = 1"]) == [
        ("dp.mode", ["none", "server_fixed"]),
        ("seed", ["1"]),
    ]


@pytest.mark.parametrize(
    ("grid", "fragment"),
    [
        ("dp.noise_multiplier", "is not key=v1,v2"),
        ("dp.noise_multiplier=", "is not key=v1,v2"),
        ("dp.noise_multiplier=0.5,,1", "empty value"),
        ("dp.noise_multiplier=0.5,0.5", "more than once"),
        ("dp.noise_multipler=0.5,1", "dp.noise_multipler"),
        ("dp.noise_multiplier=0.5,-1", "dp.noise_multiplier"),
    ],
)
def test_bad_grid_is_one_line_exit_2_and_runs_nothing(tmp_path, project_root, grid, fragment):
    result = subprocess.run(
        [str(BIN / "fedsim"), "sweep", str(project_root / "scenarios" / "quickstart.yaml"), "--grid", grid]
        + ["--out", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedsim: error:") and fragment in lines[0], lines
    assert not (tmp_path / "runs").exists()


def test_a_key_in_both_set_and_grid_is_refused(project_root):
    with pytest.raises(Exception, match="both with --set and with --grid"):
        plan_sweep(
            scenario_path=project_root / "scenarios" / "quickstart.yaml",
            grid=["seed=1,2"],
            overrides=["seed=3"],
        )
