"""Bad scenarios and command lines: exit code 2, one line naming the key, no traceback, no run folder.

Every case runs the real command line: in this process through Typer's runner, or (where
the check sits in the run itself, after the scenario is loaded) as the installed
``fedsim`` in a subprocess.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedsim.cli import app
from tests.conftest import BIN

#: a small valid scenario; each case breaks it, or the command line around it
BASE = """\
name: tiny
seed: 0
rounds: 2
clients_per_round: 2
data:
  name: synthetic
  num_clients: 10
  design_pool: 2
  options:
    alpha: 0.5
model:
  name: logreg
dp:
  mode: server_fixed
"""


@dataclass(frozen=True)
class Case:
    """One bad input: the command line (``{scenario}``, ``{tmp}`` filled in) and what the one line names."""

    id: str
    fragments: tuple[str, ...]
    sets: tuple[str, ...] = ()
    text: str = BASE
    argv: tuple[str, ...] = ("run", "{scenario}")
    subprocess: bool = False
    folders: tuple[str, ...] = field(default=())  # folders under tmp that must exist (data roots)


CASES = [
    # --- the scenario file itself ---
    Case("empty file", ("is empty", "scenario.yaml"), text=""),
    Case("comment-only file", ("is empty",), text="# a scenario, some day\n\n"),
    Case("not a mapping", ("must hold a mapping",), text="- rounds\n- seed\n"),
    Case("yaml syntax error", ("not valid YAML at line 3", "expected ','"), text="seed: 0\nrounds: [1, 2\n"),
    Case("key given twice", ("line 15", "'rounds' appears twice"), text=BASE + "rounds: 4\n"),
    Case("unknown key", ("'round'", "did you mean 'rounds'?"), text=BASE.replace("rounds:", "round:")),
    Case("number as words", ("'rounds'", "'ten'", "integer"), text=BASE.replace("rounds: 2", "rounds: ten")),
    Case("yes for a number", ("'clients_per_round'", "not true/false"), text=BASE.replace(": 2\ndata", ": yes\ndata")),
    # --- values, through --set like the file ---
    Case(
        "unknown nested key", ("'dp.noise_multplier'", "did you mean 'dp.noise_multiplier'?"), ("dp.noise_multplier=1",)
    ),
    Case("out of range", ("'dp.delta'", "less than 1"), ("dp.delta=2",)),
    Case("not finite", ("'client.lr'", "finite"), ("client.lr=.inf",)),
    Case("unknown choice", ("'dp.mode'", "'strong'", "server_fixed"), ("dp.mode=strong",)),
    Case("section given a value", ("'dp'", "got 5"), ("dp=5",)),
    Case("bad run name", ("'name'", "pattern"), ("name=../x",)),
    Case("negative seed", ("'seed'", "greater than or equal to 0"), ("seed=-1",)),
    Case("unknown estimator", ("audit.estimators", "'bayes'"), ("audit.estimators=[bayes]",)),
    Case("unknown data set", ("'data.name'", "'imagenet'", "cifar10"), ("data.name=imagenet",)),
    Case("misspelt data set", ("'data.name'", "did you mean 'sent140'?"), ("data.name=sent14",)),
    Case(
        "unknown data option",
        ("'data.options.alhpa'", "did you mean 'data.options.alpha'?", "allowed options of data set synthetic"),
        ("data.options.alhpa=1",),
    ),
    Case("data option of another data set", ("'data.options.partition'", "synthetic"), ("data.options.partition=iid",)),
    Case("data option of the wrong type", ("'data.options.dim'", "'wide'"), ("data.options.dim=wide",)),
    Case(
        "data option out of range",
        ("'data.options.num_classes'", "greater than or equal to 2"),
        ("data.options.num_classes=1",),
    ),
    Case(
        "data options that contradict",
        ("data.options.max_samples (20)", "data.options.min_samples (50)"),
        ("data.options.min_samples=50", "data.options.max_samples=20"),
    ),
    Case("scenario key among data options", ("'data.options.seed'", "scenario key 'seed'"), ("data.options.seed=1",)),
    Case(
        "data set without its folder",
        ("data.root", "fedsim data prepare cifar10"),
        ("data.name=cifar10", "data.options={}", "model.name=cnn"),
    ),
    Case(
        "data folder that does not exist",
        ("'data.root'", "nowhere", "does not exist"),
        ("data.name=sent140", "data.options={}", "data.root={tmp}/nowhere", "model.name=sent140_lstm"),
    ),
    Case("unknown model", ("'model.name'", "'transformer'", "resnet_gn"), ("model.name=transformer",)),
    Case("text model on features", ("'model.name'", "shakespeare_lstm", "token ids"), ("model.name=shakespeare_lstm",)),
    Case(
        "feature model on text",
        ("'model.name'", "mlp", "token ids", "shakespeare_lstm"),
        ("data.name=shakespeare", "data.options={}", "data.root={tmp}/shk", "model.name=mlp"),
        folders=("shk",),
    ),
    Case("image model on features", ("model.name", "'cnn'", "image inputs"), ("model.name=cnn",), subprocess=True),
    Case("cohort above population", ("clients_per_round (500)", "data.num_clients"), ("clients_per_round=500",)),
    Case("audit without design pool", ("data.design_pool",), ("audit.enabled=true", "data.design_pool=0")),
    Case(
        "audit pool above data pool",
        ("audit.design_pool", "data.design_pool"),
        ("audit.enabled=true", "audit.design_pool=50"),
    ),
    Case(
        "cuda without a GPU share per client",
        ("device cuda", "ray.num_gpus_per_client"),
        ("device=cuda",),
    ),
    Case(
        "GPU share for CPU clients", ("ray.num_gpus_per_client 0.5", "device: cuda"), ("ray.num_gpus_per_client=0.5",)
    ),
    Case(
        "local DP-SGD without noise",
        ("dp.noise_multiplier", "local_dpsgd"),
        ("dp.mode=local_dpsgd", "dp.noise_multiplier=0"),
    ),
    Case(
        "adaptive clipping with too little count noise",
        ("dp.adaptive.count_noise_multiplier",),
        ("dp.mode=server_adaptive", "dp.noise_multiplier=3", "dp.adaptive.count_noise_multiplier=1"),
        subprocess=True,
    ),
    # --- the command line ---
    Case("missing scenario file", ("missing.yaml", "not found"), argv=("run", "{tmp}/missing.yaml")),
    Case("scenario path is a folder", ("is a folder",), argv=("run", "{tmp}")),
    Case("--set without '='", ("--set", "key=value", "'rounds'"), ("rounds",)),
    Case("--set with an empty key part", ("dp..mode", "empty part"), ("dp..mode=none",)),
    Case("--set into a value", ("'rounds' is a value",), ("rounds.max=3",)),
    Case("--set of the wrong type", ("'rounds'", "'many'"), ("rounds=many",)),
    Case("unknown engine", ("'--engine'", "'warp'", "inprocess"), argv=("run", "{scenario}", "--engine", "warp")),
    Case("unknown option", ("'--colour'",), argv=("run", "{scenario}", "--colour", "red")),
    Case("missing scenario argument", ("SCENARIO",), argv=("run",)),
    Case(
        "ray address not HOST:PORT",
        ("--ray-address", "HOST:PORT"),
        argv=("run", "{scenario}", "--ray-address", "nowhere"),
        subprocess=True,
    ),
    Case(
        "privacy: sampling rate above 1",
        ("'--sampling-rate'", "1.5"),
        argv=("privacy", "epsilon", "--sampling-rate", "1.5", "--rounds", "10", "--noise-multiplier", "1"),
    ),
    Case(
        "privacy: zero rounds",
        ("'--rounds'",),
        argv=("privacy", "epsilon", "--sampling-rate", "0.1", "--rounds", "0", "--noise-multiplier", "1"),
    ),
    Case(
        "privacy: both noise and target",
        ("--noise-multiplier", "--target-epsilon"),
        argv=(
            "privacy",
            "epsilon",
            "--sampling-rate",
            "0.1",
            "--rounds",
            "10",
            "--noise-multiplier",
            "1",
            "--target-epsilon",
            "2",
        ),
    ),
    Case(
        "privacy: fixed cohorts without population",
        ("--population",),
        argv=(
            "privacy",
            "epsilon",
            "--sampling-rate",
            "0.1",
            "--rounds",
            "10",
            "--noise-multiplier",
            "1",
            "--sampling",
            "fixed",
        ),
    ),
    Case("data prepare of an unknown set", ("'imagenet'", "cifar10"), argv=("data", "prepare", "imagenet")),
]


def _argv(case: Case, tmp_path: Path) -> list[str]:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(case.text)
    for folder in case.folders:
        (tmp_path / folder).mkdir()

    def fill(part: str) -> str:
        return part.replace("{scenario}", str(scenario)).replace("{tmp}", str(tmp_path))

    argv = [fill(part) for part in case.argv]
    for item in case.sets:
        argv += ["--set", fill(item)]
    if argv[0] == "run" and len(argv) > 1:
        argv += ["--out", str(tmp_path / "runs")]
    return argv


def test_the_table_is_large_and_its_cases_distinct():
    assert len(CASES) >= 25
    assert len({case.id for case in CASES}) == len(CASES)
    assert len({(case.text, case.argv, case.sets) for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_exits_2_with_one_line_naming_it_and_writes_nothing(case, tmp_path):
    argv = _argv(case, tmp_path)
    if case.subprocess:
        result = subprocess.run([str(BIN / "fedsim"), *argv], capture_output=True, text=True, timeout=120)
        code, stdout, stderr = result.returncode, result.stdout, result.stderr
    else:
        result = CliRunner().invoke(app, argv)
        code, stdout, stderr = result.exit_code, result.stdout, result.stderr
    assert code == 2, (stdout, stderr)
    assert "Traceback" not in stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("fedsim: error: ")
    for fragment in case.fragments:
        assert fragment in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_where_no_gpu_exists_fails_at_once(tmp_path):
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(BASE)
    argv = [
        "run",
        str(scenario),
        "--set",
        "device=cuda",
        "--set",
        "ray.num_gpus_per_client=0.5",
        "--out",
        str(tmp_path / "runs"),
    ]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "scenario key 'device'" in lines[0] and "no CUDA GPU" in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()
