"""The command line: one-line errors with exit code 2, and the DP calculator."""

import json
import subprocess

import pytest

from tests.conftest import BIN


def _fedsim(*args):
    return subprocess.run([str(BIN / "fedsim"), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--set", "dp.mode=loud"], "dp.mode"),
        (["--set", "data.name=imagenet"], "imagenet"),
        (["--set", "data.options.colour=1"], "colour"),
        (["--set", "model.name=transformer"], "transformer"),
    ],
)
def test_bad_scenario_input_exits_2_with_one_line_and_writes_nothing(tmp_path, project_root, args, fragment):
    result = _fedsim("run", str(project_root / "scenarios" / "quickstart.yaml"), *args, "--out", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fedsim: error:") and fragment in lines[0]
    assert not (tmp_path / "runs").exists()


def test_missing_scenario_file(tmp_path):
    result = _fedsim("run", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "not found" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--noise-multiplier", "1.0", "--sampling-rate", "0.01", "--rounds", "1000"], 1.83),
        (["--noise-multiplier", "1.0", "--sampling-rate", "0.01", "--rounds", "1000", "--accountant", "rdp"], 2.10),
        (["--noise-multiplier", "1.0", "--sampling-rate", "1", "--rounds", "1"], 4.38),
        (["--noise-multiplier", "1.0", "--sampling-rate", "1", "--rounds", "1", "--accountant", "rdp"], 4.73),
    ],
)
def test_privacy_epsilon_matches_published_figures(args, expected):
    result = _fedsim("privacy", "epsilon", *args, "--delta", "1e-5", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["epsilon"] == pytest.approx(expected, rel=0.01)


def test_privacy_inverse_and_fixed_cohorts():
    inverse = json.loads(
        _fedsim(
            "privacy", "epsilon", "--target-epsilon", "1.83", "--sampling-rate", "0.01", "--rounds", "1000", "--json"
        ).stdout
    )
    assert inverse["noise_multiplier"] == pytest.approx(1.0, rel=0.01)
    wor = json.loads(
        _fedsim(
            "privacy",
            "epsilon",
            "--noise-multiplier",
            "1",
            "--sampling-rate",
            "0.01",
            "--rounds",
            "1000",
            "--sampling",
            "fixed",
            "--population",
            "1000",
            "--json",
        ).stdout
    )
    # replace-one adjacency: sensitivity 2C, so 20.99 (not the naive 3.58)
    assert wor["epsilon"] == pytest.approx(20.99, rel=0.01) and wor["accountant"] == "rdp"
    bad = _fedsim(
        "privacy",
        "epsilon",
        "--noise-multiplier",
        "1",
        "--sampling-rate",
        "0.01",
        "--rounds",
        "10",
        "--sampling",
        "fixed",
        "--population",
        "1000",
        "--accountant",
        "pld",
    )
    assert bad.returncode == 2 and "rdp" in bad.stderr and "Traceback" not in bad.stderr
