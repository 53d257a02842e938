"""``fedsim report``: the dashboard's figures and the compare table in one self-contained
HTML file (plotly.js inlined once; no network needed to open it)."""

from __future__ import annotations

import datetime as dt
import html
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from fedsim import figures
from fedsim.compare import COMPARE_COLUMNS, compare_table, format_cell
from fedsim.errors import FedsimError
from fedsim.results import load_audit, load_runs, load_what_if

__all__ = ["build_report", "write_report"]

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; max-width: 1300px; margin: 0 auto; padding: 0 16px; color: #24292f; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
p.note { color: #57606a; font-size: 14px; max-width: 1100px; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { border-bottom: 1px solid #eaeef2; padding: 4px 8px; text-align: right; }
th { vertical-align: bottom; } td:first-child, th:first-child { text-align: left; }
"""

_EXPLAINER = (
    "Theory: the accountant's upper bound on ε. Empirical estimate: what the canary audit measured in a round "
    "(Gaussian fit, with its 95% confidence band). Audit lower bound: what the threshold attack proves at its "
    "confidence level. Cumulative empirical: the per-round estimates composed over rounds, an extrapolation "
    "rather than a measurement."
)


def _table_html(table: pd.DataFrame) -> str:
    shown = [column for column in COMPARE_COLUMNS if column != "rounds_planned"]
    head = "".join(
        f"<th>{html.escape('rounds done / planned' if c == 'rounds_done' else COMPARE_COLUMNS[c])}</th>" for c in shown
    )
    rows = []
    for _, row in table.iterrows():
        cells = []
        for column in shown:
            if column == "rounds_done":
                text = f"{format_cell(row[column])} / {format_cell(row['rounds_planned'])}"
            else:
                text = format_cell(row[column])
            cells.append(f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="compare"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def build_report(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, title: str | None = None) -> str:
    """The report of the runs under ``paths`` as one HTML document."""
    runs = load_runs(paths)
    if runs.empty:
        raise FedsimError("no readable run under the paths given; pass runs/<run-id> or a folder of runs")
    table = compare_table(runs)
    sections: list[tuple[str, go.Figure]] = [
        ("Per-round privacy", figures.epsilon_per_round(runs)),
        ("Cumulative privacy", figures.epsilon_cumulative(runs)),
        ("Utility", figures.training(runs)),
        ("Privacy against utility", figures.privacy_utility(table)),
        ("Clipping and canary", figures.clipping(runs)),
    ]
    for run_id, run in runs.groupby("run_id", sort=False):
        path = Path(run["path"].iloc[0])
        audited = run.loc[run["epsilon_round_empirical"].notna(), "round"].dropna()
        if audited.empty:
            continue
        round_number = int(audited.max())
        try:
            audit = load_audit(path, round_number=round_number)
        except FedsimError:
            continue  # the scores of that round are not on disk (removed, or being written)
        sections.append(
            (
                f"Audit of {run_id}, round {round_number} (its last audited round)",
                figures.score_histograms(
                    scores_with=audit.scores_with,
                    scores_without=audit.scores_without,
                    threshold=audit.threshold,
                    title=f"Canary scores of {run_id}, round {round_number}: with vs. without the canary client",
                ),
            )
        )
        what_if = load_what_if(path)
        points = what_if[what_if["round"] == round_number]
        if not points.empty:
            sections.append(
                (
                    f"What if {run_id}, round {round_number}, had used another noise multiplier",
                    figures.what_if_curve(
                        points,
                        title=f"What if round {round_number} of {run_id} had used another noise multiplier",
                        run_noise_multiplier=run["dp.noise_multiplier"].iloc[0],
                    ),
                )
            )
    parts = []
    for i, (heading, figure) in enumerate(sections):
        chart = figure.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False})
        parts.append(f"<h2>{html.escape(heading)}</h2>\n{chart}")
    made = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    name = title or f"fedsim report: {table.shape[0]} run{'s' if table.shape[0] != 1 else ''}"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(name)}</h1><p class='note'>Written {made} by fedsim report. {html.escape(_EXPLAINER)}</p>"
        f"<h2>Runs</h2>{_table_html(table)}\n" + "\n".join(parts) + "</body></html>\n"
    )


def write_report(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, out: Path, title: str | None = None
) -> Path:
    """Write the report of the runs under ``paths`` to ``out``; returns ``out``."""
    document = build_report(paths, title=title)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(document, encoding="utf-8")
    except OSError as error:
        raise FedsimError(f"cannot write {str(out)!r} ({error.strerror}); pass another -o path") from None
    return out
