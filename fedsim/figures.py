"""Plotly figures of runs, shared by the dashboard and the report.

Pure functions: a DataFrame from ``fedsim.results`` / ``fedsim.compare`` (or an audit's
score arrays) in, a ``plotly.graph_objects.Figure`` out; no file or network access. Every
line is named by what it is: the theory is an upper bound (the accountant), the
empirical epsilon an estimate (the Gaussian fit, with its confidence band), the threshold
method's value a lower bound, the cumulative empirical epsilon an extrapolation. Runs get
one colour each, the same in every figure given the same runs; infinite values (no DP, or
perfectly separated scores) cannot be drawn and are listed under the chart instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

__all__ = [
    "PALETTE",
    "clipping",
    "epsilon_cumulative",
    "epsilon_per_round",
    "privacy_utility",
    "run_colors",
    "score_histograms",
    "training",
    "what_if_curve",
]

PALETTE: tuple[str, ...] = tuple(qualitative.Plotly) + tuple(qualitative.D3)
_HEIGHT = 430


def run_colors(run_ids: Sequence[str]) -> dict[str, str]:
    """One colour per run, by order of first appearance."""
    ordered = list(dict.fromkeys(run_ids))
    return {run_id: PALETTE[i % len(PALETTE)] for i, run_id in enumerate(ordered)}


def _rgba(color: str, alpha: float) -> str:
    color = color.lstrip("#")
    red, green, blue = (int(color[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({red},{green},{blue},{alpha})"


def _finite(values: pd.Series) -> np.ndarray:
    """Float values with +-inf as NaN (plotly cannot draw them)."""
    array = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return np.where(np.isfinite(array), array, np.nan)


def _infinite(values: pd.Series) -> bool:
    array = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return bool(np.isinf(array).any())


def _delta_text(runs: pd.DataFrame) -> str:
    if "dp.delta" not in runs:
        return ""
    deltas = runs["dp.delta"].dropna().unique()
    return f" at δ = {deltas[0]:g}" if len(deltas) == 1 else " at each run's δ"


def _layout(figure: go.Figure, *, title: str, x_title: str, y_title: str, notes: Sequence[str] = ()) -> go.Figure:
    """Shared look: white template, legend on the right grouped by run, notes under the plot."""
    figure.update_layout(
        template="plotly_white",
        title={"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 16}},
        height=_HEIGHT + 18 * len(notes),
        margin={"l": 70, "r": 20, "t": 60, "b": 70 + 18 * len(notes)},
        legend={"groupclick": "toggleitem", "font": {"size": 11}, "tracegroupgap": 8, "traceorder": "grouped"},
        hovermode="closest",
    )
    figure.update_xaxes(title_text=x_title)
    figure.update_yaxes(title_text=y_title)
    for i, note in enumerate(notes):
        figure.add_annotation(
            text=note,
            xref="paper",
            yref="paper",
            x=0,
            y=-0.16 - 0.06 * i,
            xanchor="left",
            yanchor="top",
            showarrow=False,
            font={"size": 11, "color": "#555"},
        )
    return figure


def _round_axis(figure: go.Figure, rounds: pd.DataFrame) -> go.Figure:
    """Whole-number round ticks (no 'round 1.5')."""
    last = pd.to_numeric(rounds["round"], errors="coerce").max() if "round" in rounds and len(rounds) else None
    if last is not None and pd.notna(last) and last <= 12:
        figure.update_xaxes(tick0=1, dtick=1)
    else:
        figure.update_xaxes(tickformat="d")
    return figure


def _runs(rounds: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    frame = rounds.dropna(subset=["round"]) if "round" in rounds else rounds
    return [(str(run_id), group.sort_values("round")) for run_id, group in frame.groupby("run_id", sort=False)]


def _line(x, values: pd.Series, *, run_id: str, name: str, hover: str, line: dict, **style: Any) -> go.Scatter:
    """One run's line of a per-round chart (infinite values left out), grouped by run."""
    return go.Scatter(
        x=x,
        y=_finite(values),
        mode=style.pop("mode", "lines"),
        line=line,
        name=name,
        hovertemplate=f"round %{{x}}<br>{hover} %{{y:.3f}}<extra>{run_id}</extra>",
        legendgroup=run_id,
        legendgrouptitle_text=run_id,
        **style,
    )


def epsilon_per_round(rounds: pd.DataFrame) -> go.Figure:
    """Per-round epsilon of each run: the theoretical bound, the audit's estimate with its
    confidence band, and the threshold method's lower bound, against the round."""
    figure = go.Figure()
    colors = run_colors(rounds["run_id"].astype(str).tolist()) if len(rounds) else {}
    notes = []
    for run_id, run in _runs(rounds):
        color = colors[run_id]
        x = run["round"].to_numpy(dtype=float)
        group = {"legendgroup": run_id, "legendgrouptitle_text": run_id}
        figure.add_trace(
            _line(
                x,
                run["epsilon_round_theory"],
                run_id=run_id,
                name="theory (upper bound)",
                hover="theory ε",
                line={"color": color, "width": 2},
            )
        )
        if _infinite(run["epsilon_round_theory"]):
            notes.append(f"{run_id}: theory is ∞ (no DP noise), not drawn")
        audited = run[run["epsilon_round_empirical"].notna() | run["epsilon_round_empirical_lower_bound"].notna()]
        if audited.empty:
            continue
        ax = audited["round"].to_numpy(dtype=float)
        high, low = (
            _finite(audited["epsilon_round_empirical_ci_high"]),
            _finite(audited["epsilon_round_empirical_ci_low"]),
        )
        if not np.isnan(high).all():
            figure.add_trace(
                go.Scatter(x=ax, y=high, mode="lines", line={"width": 0}, hoverinfo="skip", showlegend=False, **group)
            )
            figure.add_trace(
                go.Scatter(
                    x=ax,
                    y=low,
                    mode="lines",
                    line={"width": 0},
                    fill="tonexty",
                    fillcolor=_rgba(color, 0.18),
                    name="95% confidence band of the estimate",
                    hoverinfo="skip",
                    **group,
                )
            )
        figure.add_trace(
            _line(
                ax,
                audited["epsilon_round_empirical"],
                run_id=run_id,
                name="empirical estimate (canary audit)",
                hover="empirical ε",
                line={"color": color, "dash": "dot", "width": 1.5},
                mode="lines+markers",
                marker={"size": 7, "symbol": "circle"},
            )
        )
        if _infinite(audited["epsilon_round_empirical"]):
            notes.append(f"{run_id}: some estimates are ∞ (scores separated perfectly), not drawn")
        figure.add_trace(
            _line(
                ax,
                audited["epsilon_round_empirical_lower_bound"],
                run_id=run_id,
                name="audit lower bound (threshold method)",
                hover="lower bound ε",
                line={"color": color, "dash": "dash", "width": 1},
                mode="lines+markers",
                marker={"size": 8, "symbol": "triangle-up-open"},
            )
        )
    _layout(
        figure,
        title="Per-round ε: theoretical bound vs. canary-audit measurement",
        x_title="round",
        y_title=f"ε of one round{_delta_text(rounds)}",
        notes=notes,
    )
    return _round_axis(figure, rounds)


def epsilon_cumulative(rounds: pd.DataFrame) -> go.Figure:
    """Cumulative epsilon of each run: the accountant's bound and the extrapolation of the
    per-round estimates (composed as Gaussian mechanisms with the run's sampling)."""
    figure = go.Figure()
    colors = run_colors(rounds["run_id"].astype(str).tolist()) if len(rounds) else {}
    notes = []
    for run_id, run in _runs(rounds):
        color = colors[run_id]
        x = run["round"].to_numpy(dtype=float)
        figure.add_trace(
            _line(
                x,
                run["epsilon_cumulative_theory"],
                run_id=run_id,
                name="theory (upper bound)",
                hover="cumulative theory ε",
                line={"color": color, "width": 2},
            )
        )
        if _infinite(run["epsilon_cumulative_theory"]):
            notes.append(f"{run_id}: theory is ∞ (no DP noise), not drawn")
        empirical = run["epsilon_cumulative_empirical_extrapolated"]
        if empirical.notna().any():
            figure.add_trace(
                _line(
                    x,
                    empirical,
                    run_id=run_id,
                    name="empirical, extrapolated (estimates composed)",
                    hover="cumulative empirical ε (extrapolated)",
                    line={"color": color, "dash": "dot", "width": 2},
                )
            )
            if _infinite(empirical):
                notes.append(f"{run_id}: extrapolation is ∞ in some rounds (an estimate was ∞), not drawn")
    _layout(
        figure,
        title="Cumulative ε over the run: theoretical bound vs. extrapolated measurement",
        x_title="round",
        y_title=f"cumulative ε{_delta_text(rounds)}",
        notes=notes,
    )
    return _round_axis(figure, rounds)


def _multi_panel(
    rounds: pd.DataFrame,
    *,
    panels: Sequence[tuple[str, Sequence[tuple[str, str, str]]]],
    title: str,
    y_titles: Sequence[str],
) -> go.Figure:
    """Side-by-side panels; each panel draws (column, line name, dash) per run. The legend
    names each run once; the panel titles say which line is which."""
    figure = make_subplots(
        rows=1, cols=len(panels), subplot_titles=[name for name, _ in panels], horizontal_spacing=0.08
    )
    colors = run_colors(rounds["run_id"].astype(str).tolist()) if len(rounds) else {}
    for run_id, run in _runs(rounds):
        x = run["round"].to_numpy(dtype=float)
        in_legend = False
        for col, (_, lines) in enumerate(panels, start=1):
            for column, name, dash in lines:
                y = _finite(run[column])
                if np.isnan(y).all():
                    continue
                figure.add_trace(
                    go.Scatter(
                        x=x,
                        y=y,
                        mode="lines+markers",
                        marker={"size": 4},
                        line={"color": colors[run_id], "dash": dash, "width": 1.8},
                        name=run_id,
                        legendgroup=run_id,
                        showlegend=not in_legend,
                        connectgaps=True,
                        hovertemplate="round %{x}<br>" + name + " %{y:.4g}<extra>" + run_id + "</extra>",
                    ),
                    row=1,
                    col=col,
                )
                in_legend = True
    _layout(figure, title=title, x_title="round", y_title="")
    for col, y_title in enumerate(y_titles, start=1):
        figure.update_yaxes(title_text=y_title, row=1, col=col)
    return _round_axis(figure, rounds)


def training(rounds: pd.DataFrame) -> go.Figure:
    """Accuracy and loss of each run against the round."""
    return _multi_panel(
        rounds,
        panels=[
            ("Accuracy on held-out samples", [("eval_accuracy", "accuracy (held-out)", "solid")]),
            (
                "Loss: held-out (solid), training (dashed)",
                [("eval_loss", "held-out loss", "solid"), ("train_loss", "training loss", "dash")],
            ),
        ],
        title="Utility: accuracy and loss",
        y_titles=["accuracy (fraction correct)", "loss (cross-entropy)"],
    )


def clipping(rounds: pd.DataFrame) -> go.Figure:
    """Clip fraction, clip norm and canary health of each run against the round."""
    figure = _multi_panel(
        rounds,
        panels=[
            ("Share of updates clipped", [("clip_fraction", "clip fraction", "solid")]),
            ("Clip norm C", [("clip_norm", "clip norm", "solid")]),
            ("Canary health", [("canary_health", "canary health", "solid")]),
        ],
        title="Clipping and canary health",
        y_titles=["fraction of the cohort", "L2 norm", "(L_init − L_final) / L_init"],
    )
    return figure.update_yaxes(rangemode="tozero")


def score_histograms(
    *,
    scores_with: np.ndarray,
    scores_without: np.ndarray,
    threshold: float | None,
    title: str = "Canary scores",
    bins: int = 80,
) -> go.Figure:
    """Histograms (densities) of the audit's scores with and without the canary client,
    and the threshold method's chosen threshold. Binned here, so the figure stays small
    however many scores there are."""
    with_, without = np.asarray(scores_with, dtype=float), np.asarray(scores_without, dtype=float)
    both = np.concatenate([with_[np.isfinite(with_)], without[np.isfinite(without)]])
    figure = go.Figure()
    if both.size:
        edges = np.histogram_bin_edges(both, bins=bins)
        centres, width = (edges[:-1] + edges[1:]) / 2, float(edges[1] - edges[0]) if len(edges) > 1 else 1.0
        for scores, name, color in (
            (without, f"without the canary ({without.size:,} aggregates)", "#1f77b4"),
            (with_, f"with the canary ({with_.size:,} aggregates)", "#d62728"),
        ):
            density, _ = np.histogram(scores, bins=edges, density=True)
            figure.add_trace(
                go.Bar(
                    x=centres,
                    y=density,
                    width=width,
                    name=name,
                    marker={"color": color, "line": {"width": 0}},
                    opacity=0.55,
                    hovertemplate="score %{x:.3f}<br>density %{y:.3f}<extra>" + name + "</extra>",
                )
            )
    if threshold is not None and math.isfinite(threshold):
        figure.add_vline(
            x=threshold,
            line={"color": "black", "dash": "dash", "width": 1.5},
            annotation_text=f"threshold t = {threshold:.3g} chosen by the threshold method (attack: canary present iff s > t)",
            annotation_position="top left",
            annotation_font_size=11,
        )
    figure.update_layout(barmode="overlay", bargap=0)
    return _layout(
        figure,
        title=title,
        x_title="score s = ⟨canary direction, aggregate⟩ / canary contribution norm",
        y_title="density",
    )


def what_if_curve(
    what_if: pd.DataFrame,
    *,
    title: str = "What if: per-round ε at other noise levels",
    run_noise_multiplier: float | None = None,
) -> go.Figure:
    """Per-round epsilon against the noise multiplier (an audited round replayed at each
    what-if noise level): theory (bound), the empirical estimate with its confidence
    interval, and the lower bound. One colour per (run, round) in ``what_if``; a dotted
    vertical line marks ``run_noise_multiplier``, the noise the run really used."""
    figure = go.Figure()
    frame = what_if.copy()
    if "run_id" not in frame:
        frame["run_id"] = ""
    if "round" not in frame:
        frame["round"] = 0
    keys = [f"{run_id} round {int(round_number)}" for run_id, round_number in zip(frame["run_id"], frame["round"])]
    frame["key"] = keys
    colors = run_colors(keys)
    for key, points in frame.groupby("key", sort=False):
        points = points.sort_values("noise_multiplier")
        color = colors[str(key)]
        group = {"legendgroup": str(key), "legendgrouptitle_text": str(key)}
        z = points["noise_multiplier"].to_numpy(dtype=float)
        estimate = _finite(points["epsilon_empirical"])
        figure.add_trace(
            go.Scatter(
                x=z,
                y=_finite(points["epsilon_theory"]),
                mode="lines+markers",
                line={"color": color, "width": 2},
                name="theory (upper bound)",
                hovertemplate="z %{x}<br>theory ε %{y:.3f}<extra></extra>",
                **group,
            )
        )
        figure.add_trace(
            go.Scatter(
                x=z,
                y=estimate,
                mode="markers",
                marker={"color": color, "size": 10, "symbol": "diamond"},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": np.nan_to_num(_finite(points["ci_high"]) - estimate, nan=0.0),
                    "arrayminus": np.nan_to_num(estimate - _finite(points["ci_low"]), nan=0.0),
                    "color": color,
                },
                name="empirical estimate, 95% CI",
                hovertemplate="z %{x}<br>empirical ε %{y:.3f}<extra></extra>",
                **group,
            )
        )
        figure.add_trace(
            go.Scatter(
                x=z,
                y=_finite(points["lower_bound"]),
                mode="lines+markers",
                line={"color": color, "dash": "dash", "width": 1},
                marker={"symbol": "triangle-up-open", "size": 8},
                name="audit lower bound (threshold method)",
                hovertemplate="z %{x}<br>lower bound ε %{y:.3f}<extra></extra>",
                **group,
            )
        )
    if run_noise_multiplier is not None and math.isfinite(run_noise_multiplier):
        figure.add_vline(
            x=run_noise_multiplier,
            line={"color": "#57606a", "dash": "dot", "width": 1.5},
            annotation_text=f"the run's own z = {run_noise_multiplier:g}",
            annotation_position="top right",
            annotation_font_size=11,
        )
    return _layout(figure, title=title, x_title="noise multiplier z (replayed)", y_title="ε of one round")


def privacy_utility(table: pd.DataFrame) -> go.Figure:
    """Final accuracy against cumulative epsilon, one run per colour: a filled circle at the
    theoretical bound, an open diamond at the extrapolated empirical value, joined by a line.
    ``table`` is a compare table (``fedsim.compare.compare_table``)."""
    figure = go.Figure()
    colors = run_colors(table["run_id"].astype(str).tolist()) if len(table) else {}
    notes = []
    for _, row in table.iterrows():
        run_id = str(row["run_id"])
        accuracy = row["final_accuracy"]
        theory, empirical = row["epsilon_cumulative_theory"], row["epsilon_cumulative_empirical_extrapolated"]
        if pd.isna(accuracy):
            notes.append(f"{run_id}: no accuracy yet, not drawn")
            continue
        points = [
            (value, label, symbol)
            for value, label, symbol in (
                (theory, "theory (upper bound)", "circle"),
                (empirical, "empirical (extrapolated)", "diamond-open"),
            )
            if pd.notna(value) and math.isfinite(value) and value > 0
        ]
        if pd.notna(theory) and math.isinf(theory):
            notes.append(f"{run_id}: theory ε = ∞ (no DP noise), not drawn")
        if not points:
            continue
        figure.add_trace(
            go.Scatter(
                x=[value for value, _, _ in points],
                y=[accuracy] * len(points),
                mode="lines+markers",
                line={"color": colors[run_id], "width": 1, "dash": "dot"},
                marker={"color": colors[run_id], "size": 12, "symbol": [symbol for _, _, symbol in points]},
                text=[label for _, label, _ in points],
                name=run_id,
                hovertemplate="%{text}<br>ε %{x:.3f}<br>accuracy %{y:.3f}<extra>" + run_id + "</extra>",
            )
        )
    figure.update_xaxes(type="log")
    return _layout(
        figure,
        title="Privacy vs. utility: ● theory (bound)  ◇ empirical (extrapolated)",
        x_title=f"cumulative ε at the last round{_delta_text(table)} (log scale)",
        y_title="final accuracy (fraction correct)",
        notes=notes,
    )
