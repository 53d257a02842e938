"""The progress line of `fedsim run`, `fedsim dashboard`'s input checks and `fedsim report`,
and the rule that nothing reading results imports Flower or torch."""

import re
import socket
import subprocess
import sys

import pytest

from fedsim.compare import format_cell
from fedsim.store import RunStore
from tests.conftest import AUDITED_RUN_OVERRIDES, BIN


def _fedsim(*args, timeout=120):
    return subprocess.run([str(BIN / "fedsim"), *args], capture_output=True, text=True, timeout=timeout)


def test_run_shows_the_empirical_epsilon_beside_the_theory(tmp_path, project_root):
    overrides = [*AUDITED_RUN_OVERRIDES, "audit.every=2"]  # rounds 1 and 2 audited, 3 not
    result = _fedsim(
        "run",
        str(project_root / "scenarios" / "quickstart.yaml"),
        *sum((["--set", item] for item in overrides), []),
        "--out",
        str(tmp_path),
        "--engine",
        "inprocess",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (folder,) = list(tmp_path.iterdir())
    rows = RunStore.open(folder).rounds()
    assert rows[2].epsilon_round_empirical is None and rows[1].epsilon_round_empirical is not None
    last, audited = rows[-1], rows[1]
    assert f"epsilon {last.epsilon_cumulative_theory:.2f} at delta 1e-05 (theory, upper bound)" in result.stdout, (
        result.stdout
    )
    assert f"empirical epsilon {last.epsilon_cumulative_empirical_extrapolated:.2f} (extrapolated" in result.stdout
    assert (
        f"audited round 2: estimate {audited.epsilon_round_empirical:.2f}, "
        f"lower bound {audited.epsilon_round_empirical_lower_bound:.2f}, theory {audited.epsilon_round_theory:.2f}"
    ) in result.stdout
    progress = [line for line in result.stderr.splitlines() if line.startswith("round ")]
    assert len(progress) == 3
    for row, line in zip(rows, progress):
        assert f"ε theory {row.epsilon_cumulative_theory:.2f}" in line
        assert f"empirical {row.epsilon_cumulative_empirical_extrapolated:.2f} (extrapolated" in line
    assert f"round 2 estimate {audited.epsilon_round_empirical:.2f}" in progress[2]  # the latest audited round


def test_nothing_that_reads_results_imports_flower_or_torch():
    code = (
        "import sys\n"
        "import fedsim.cli, fedsim.compare, fedsim.dashboard, fedsim.figures, fedsim.report, fedsim.results, fedsim.sweep\n"
        "from fedsim.dashboard import create_app\n"
        "create_app(runs_dir='.')\n"
        "heavy = sorted(name for name in sys.modules if name.split('.')[0] in ('flwr', 'torch', 'ray', 'opacus'))\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _one_error_line(result, *fragments):
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("fedsim: error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_dashboard_refuses_a_missing_folder(tmp_path):
    _one_error_line(_fedsim("dashboard", str(tmp_path / "nope")), "nope", "--out")


def test_dashboard_on_a_busy_port_says_so_and_warns_about_a_non_local_address(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.2", 0))  # another loopback address: not 127.0.0.1, still local
        busy.listen()
        port = busy.getsockname()[1]
        result = _fedsim("dashboard", str(tmp_path), "--host", "127.0.0.2", "--port", str(port))
    _one_error_line(result, f"port {port} on 127.0.0.2 is in use", "--port")
    assert "warning: listening on 127.0.0.2, not 127.0.0.1" in result.stderr


def test_report_writes_one_self_contained_file(tmp_path, audited_runs):
    out = tmp_path / "out" / "report.html"
    result = _fedsim("report", *map(str, audited_runs), "-o", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text.count("\n* plotly.js v") == 1  # plotly.js inlined, once
    assert not re.search(r"<(script|link|img)[^>]*\s(src|href)=", text)  # nothing loaded from elsewhere
    for folder in audited_runs:
        run = RunStore.open(folder)
        assert text.count(f"<td>{run.run_id}</td>") == 1  # one compare-table row per run
        assert f"<td>{format_cell(run.rounds()[-1].epsilon_cumulative_theory)}</td>" in text
        assert f"Audit of {run.run_id}, round 3" in text
    _one_error_line(_fedsim("report", str(tmp_path / "none"), "-o", str(out)), "none")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10"])
def test_only_loopback_names_count_as_local(host):
    from fedsim.dashboard import LOCAL_HOSTS

    assert host not in LOCAL_HOSTS and "127.0.0.1" in LOCAL_HOSTS
