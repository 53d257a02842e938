"""The compare table (fedsim.compare) and `fedsim compare`."""

import csv
import io
import math
import subprocess

import numpy as np
import pytest

from fedsim.compare import COMPARE_COLUMNS, compare_table, format_cell
from fedsim.records import RoundRecord
from fedsim.results import load_runs
from tests.conftest import BIN


def _audited(round_number, *, theory, empirical, lower, cumulative, accuracy=None):
    return RoundRecord(
        round=round_number,
        clients=10,
        eval_accuracy=accuracy,
        epsilon_round_theory=theory,
        epsilon_cumulative_theory=theory * round_number,
        epsilon_round_empirical=empirical,
        epsilon_round_empirical_lower_bound=lower,
        epsilon_cumulative_empirical_extrapolated=cumulative,
    )


@pytest.fixture
def runs(tmp_path, make_run):
    make_run(
        tmp_path,
        "a-audited",
        overrides=["dp.noise_multiplier=0.7", "dp.clip_norm=0.5", "data.name=digits"],
        rounds=[
            _audited(1, theory=2.0, empirical=1.0, lower=0.4, cumulative=1.0, accuracy=0.6),
            _audited(2, theory=2.0, empirical=4.0, lower=1.7, cumulative=3.0, accuracy=0.7),
            _audited(3, theory=2.0, empirical=2.0, lower=0.9, cumulative=3.5),  # no evaluation this round
            RoundRecord(round=4, clients=10, epsilon_round_theory=2.0, epsilon_cumulative_theory=8.0),
        ],
    )
    make_run(
        tmp_path,
        "b-no-dp",
        overrides=["dp.mode=none"],
        status="interrupted",
        rounds=[
            RoundRecord(round=1, clients=10, eval_accuracy=0.9, epsilon_round_theory=math.inf),
            RoundRecord(round=2, clients=10, eval_accuracy=0.95, epsilon_cumulative_theory=math.inf),
        ],
    )
    make_run(tmp_path, "c-fresh", rounds=[], status=None)
    return tmp_path


def test_one_row_per_run_with_last_values_median_ratio_and_largest_lower_bound(runs):
    table = compare_table(load_runs(runs))
    assert list(table.columns) == list(COMPARE_COLUMNS)
    assert table.run_id.tolist() == ["a-audited", "b-no-dp", "c-fresh"]
    a, b, c = (table.iloc[i] for i in range(3))
    assert (a["data.name"], a["dp.mode"], a["dp.noise_multiplier"], a["dp.clip_norm"]) == (
        "digits",
        "server_fixed",
        0.7,
        0.5,
    )
    assert (a.rounds_done, a.rounds_planned, a.status) == (4, 4, "completed")
    assert a.final_accuracy == 0.7  # the last round that was evaluated
    assert a.epsilon_cumulative_theory == 8.0 and a.epsilon_cumulative_empirical_extrapolated == 3.5
    assert a.median_round_ratio == 1.0  # ratios 0.5, 2.0, 1.0
    assert a.lower_bound == 1.7
    assert (b.status, b.rounds_done, b.final_accuracy) == ("interrupted", 2, 0.95)
    assert b.epsilon_cumulative_theory == math.inf and np.isnan(b.median_round_ratio) and np.isnan(b.lower_bound)
    assert (c.status, c.rounds_done) == ("running", 0) and np.isnan(c.final_accuracy)


def test_cells_for_people():
    assert [format_cell(v) for v in (None, math.nan, math.inf, 0.5, 8.58530658, 1e-5, 12345.6, 3)] == [
        "-",
        "-",
        "inf",
        "0.5",
        "8.585",
        "1e-05",
        "1.23e+04",
        "3",
    ]


def _fedsim(*args):
    return subprocess.run([str(BIN / "fedsim"), *args], capture_output=True, text=True, timeout=120)


def test_fedsim_compare_prints_the_table_and_a_csv_copy(runs):
    result = _fedsim("compare", str(runs), "--csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["run_id"] for row in rows] == ["a-audited", "b-no-dp", "c-fresh"]
    assert list(rows[0]) == list(COMPARE_COLUMNS)
    assert float(rows[0]["epsilon_cumulative_empirical_extrapolated"]) == 3.5
    assert float(rows[0]["lower_bound"]) == 1.7 and rows[1]["epsilon_cumulative_theory"] == "inf"
    table = _fedsim("compare", str(runs / "a-audited"), str(runs / "b-no-dp"))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert any("a-audited" in line and "8" in line and "3.5" in line and "1.7" in line for line in lines)
    assert "extrapolated" in table.stdout and "c-fresh" not in table.stdout


@pytest.mark.parametrize("target", ["missing", "empty"])
def test_fedsim_compare_bad_folder_is_one_line_exit_2(tmp_path, target):
    (tmp_path / "empty").mkdir()
    result = _fedsim("compare", str(tmp_path / target))
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedsim: error:") and target in lines[0]
