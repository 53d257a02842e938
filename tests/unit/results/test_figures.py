"""The Plotly figure builders: what each chart draws, and what it says it cannot draw."""

import math

import numpy as np
import pandas as pd
import pytest

from fedsim import figures
from fedsim.compare import compare_table
from fedsim.records import RoundRecord
from fedsim.results import load_runs


def _rounds(theory, empirical=(), lower=(), ci=()):
    rows = []
    for i, value in enumerate(theory, start=1):
        audited = i <= len(empirical)
        rows.append(
            RoundRecord(
                round=i,
                clients=5,
                eval_accuracy=0.5 + i / 10,
                eval_loss=1.0 / i,
                train_loss=2.0 / i,
                clip_fraction=0.5,
                clip_norm=1.0,
                epsilon_round_theory=value,
                epsilon_cumulative_theory=value * i,
                epsilon_round_empirical=empirical[i - 1] if audited else None,
                epsilon_round_empirical_lower_bound=lower[i - 1] if audited else None,
                epsilon_round_empirical_ci_low=ci[i - 1][0] if audited and ci else None,
                epsilon_round_empirical_ci_high=ci[i - 1][1] if audited and ci else None,
                epsilon_cumulative_empirical_extrapolated=float(i) if audited else None,
                canary_health=0.9 if audited else None,
            )
        )
    return rows


@pytest.fixture
def two_runs(tmp_path, make_run):
    make_run(
        tmp_path,
        "dp",
        rounds=_rounds([2.0, 2.0, 2.0], empirical=[1.0, math.inf], lower=[0.5, 0.7], ci=[(0.8, 1.2), (1.5, 9.0)]),
    )
    make_run(tmp_path, "nodp", overrides=["dp.mode=none"], rounds=_rounds([math.inf, math.inf]))
    return load_runs(tmp_path)


def _by_name(figure, run_id):
    return {trace.name: trace for trace in figure.data if trace.legendgroup == run_id and trace.name}


def _notes(figure):
    return " ".join(annotation.text for annotation in figure.layout.annotations)


def test_per_round_epsilon_draws_bound_estimate_band_and_lower_bound_per_run(two_runs):
    figure = figures.epsilon_per_round(two_runs)
    dp = _by_name(figure, "dp")
    assert set(dp) == {
        "theory (upper bound)",
        "95% confidence band of the estimate",
        "empirical estimate (canary audit)",
        "audit lower bound (threshold method)",
    }
    assert list(dp["theory (upper bound)"].y) == [2.0, 2.0, 2.0]
    # only audited rounds; an infinite estimate is not drawn, and the chart says so
    assert list(dp["empirical estimate (canary audit)"].x) == [1.0, 2.0]
    assert dp["empirical estimate (canary audit)"].y[0] == 1.0 and np.isnan(
        dp["empirical estimate (canary audit)"].y[1]
    )
    assert list(dp["audit lower bound (threshold method)"].y) == [0.5, 0.7]
    assert list(dp["95% confidence band of the estimate"].y) == [0.8, 1.5]
    assert dp["95% confidence band of the estimate"].fill == "tonexty"
    nodp = _by_name(figure, "nodp")
    assert set(nodp) == {"theory (upper bound)"} and np.isnan(nodp["theory (upper bound)"].y).all()
    assert "nodp: theory is ∞" in _notes(figure) and "dp: some estimates are ∞" in _notes(figure)
    assert "δ = 1e-05" in figure.layout.yaxis.title.text
    # runs keep their colour across figures
    cumulative = figures.epsilon_cumulative(two_runs)
    assert _by_name(cumulative, "dp")["theory (upper bound)"].line.color == dp["theory (upper bound)"].line.color


def test_cumulative_epsilon_labels_the_empirical_line_an_extrapolation(two_runs):
    dp = _by_name(figures.epsilon_cumulative(two_runs), "dp")
    assert list(dp["theory (upper bound)"].y) == [2.0, 4.0, 6.0]
    (empirical,) = [trace for name, trace in dp.items() if "extrapolated" in name]
    assert list(empirical.y[:2]) == [1.0, 2.0] and np.isnan(empirical.y[2])


def test_training_and_clipping_panels_name_each_run_once(two_runs):
    training = figures.training(two_runs)
    assert [trace.name for trace in training.data if trace.showlegend] == ["dp", "nodp"]
    accuracy = [trace for trace in training.data if trace.legendgroup == "dp" and trace.xaxis == "x"]
    assert [list(trace.y) for trace in accuracy] == [[0.6, 0.7, 0.8]]
    clipping = figures.clipping(two_runs)
    titles = [annotation.text for annotation in clipping.layout.annotations]
    assert titles[:3] == ["Share of updates clipped", "Clip norm C", "Canary health"]


def test_privacy_utility_has_two_markers_per_run_and_notes_infinite_epsilon(two_runs):
    figure = figures.privacy_utility(compare_table(two_runs))
    (dp,) = [trace for trace in figure.data if trace.name == "dp"]
    assert list(dp.x) == [6.0, 2.0] and list(dp.y) == [0.8, 0.8]  # theory, then last extrapolation
    assert list(dp.marker.symbol) == ["circle", "diamond-open"]
    assert [trace.name for trace in figure.data] == ["dp"]
    assert "nodp: theory ε = ∞" in _notes(figure)


def test_score_histograms_are_densities_with_the_threshold_marked():
    rng = np.random.default_rng(1)
    figure = figures.score_histograms(
        scores_with=rng.normal(1.0, 1.0, 5000), scores_without=rng.normal(0.0, 1.0, 7000), threshold=1.25, bins=40
    )
    without, with_ = figure.data
    assert "without" in without.name and "7,000" in without.name and "5,000" in with_.name
    for trace in (without, with_):
        assert float(np.sum(trace.y) * trace.width) == pytest.approx(1.0)
    (line,) = figure.layout.shapes
    assert line.x0 == line.x1 == 1.25
    assert "t = 1.25" in figure.layout.annotations[0].text


def test_what_if_curve_draws_theory_estimate_and_bound_against_noise():
    points = pd.DataFrame(
        {
            "run_id": ["r"] * 3,
            "round": [2] * 3,
            "noise_multiplier": [2.0, 0.5, 1.0],
            "epsilon_theory": [2.5, 11.0, 4.8],
            "epsilon_empirical": [2.0, 9.0, 4.0],
            "ci_low": [1.5, 8.0, 3.0],
            "ci_high": [2.5, 10.0, 5.0],
            "lower_bound": [1.0, 6.0, 2.0],
        }
    )
    figure = figures.what_if_curve(points, run_noise_multiplier=0.7)
    theory, estimate, lower = figure.data
    (own,) = figure.layout.shapes
    assert own.x0 == own.x1 == 0.7 and "z = 0.7" in figure.layout.annotations[0].text
    assert list(theory.x) == [0.5, 1.0, 2.0] and list(theory.y) == [11.0, 4.8, 2.5]
    assert list(estimate.y) == [9.0, 4.0, 2.0] and list(estimate.error_y.array) == [1.0, 1.0, 0.5]
    assert list(lower.y) == [6.0, 2.0, 1.0] and theory.legendgroup == "r round 2"
