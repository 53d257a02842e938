"""The compare table: one row per run, built from ``fedsim.results.load_runs``.

Used by ``fedsim compare``, ``fedsim sweep``, the dashboard and the report. Each privacy
column says what it is: the theory is an upper bound from the accountant, the cumulative
empirical epsilon an extrapolation of per-round estimates, the audit's lower bound the
threshold method's confidence bound.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["COMPARE_COLUMNS", "compare_table", "format_cell"]

COMPARE_COLUMNS: dict[str, str] = {
    "run_id": "run",
    "data.name": "data",
    "dp.mode": "DP mode",
    "dp.noise_multiplier": "noise z",
    "dp.clip_norm": "clip C",
    "rounds_done": "rounds done",
    "rounds_planned": "rounds planned",
    "status": "status",
    "final_accuracy": "final accuracy",
    "epsilon_cumulative_theory": "ε cumulative, theory (bound)",
    "epsilon_cumulative_empirical_extrapolated": "ε cumulative, empirical (extrapolated)",
    "median_round_ratio": "median ε round empirical / theory",
    "lower_bound": "audit lower bound (max ε round)",
}
"""Column name (machine-readable, the --csv header) -> label for people."""


def _last(values: pd.Series) -> float:
    present = values.dropna()
    return float(present.iloc[-1]) if len(present) else math.nan


def _median_ratio(run: pd.DataFrame) -> float:
    empirical = run["epsilon_round_empirical"].to_numpy(dtype=float)
    theory = run["epsilon_round_theory"].to_numpy(dtype=float)
    usable = ~np.isnan(empirical) & np.isfinite(theory) & (theory > 0)
    return float(np.median(empirical[usable] / theory[usable])) if usable.any() else math.nan


def _summarise(run: pd.DataFrame) -> dict[str, object]:
    run = run.sort_values("round")
    first = run.iloc[0]
    finished = run["round"].dropna()
    lower = run["epsilon_round_empirical_lower_bound"].dropna()
    return {
        "run_id": first["run_id"],
        "data.name": first.get("data.name"),
        "dp.mode": first.get("dp.mode"),
        "dp.noise_multiplier": first.get("dp.noise_multiplier"),
        "dp.clip_norm": first.get("dp.clip_norm"),
        "rounds_done": int(finished.max()) if len(finished) else 0,
        "rounds_planned": first.get("rounds_planned"),
        "status": first.get("status"),
        "final_accuracy": _last(run["eval_accuracy"]),
        "epsilon_cumulative_theory": _last(run["epsilon_cumulative_theory"]),
        "epsilon_cumulative_empirical_extrapolated": _last(run["epsilon_cumulative_empirical_extrapolated"]),
        "median_round_ratio": _median_ratio(run),
        "lower_bound": float(lower.max()) if len(lower) else math.nan,
    }


def compare_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run of ``runs`` (as from ``load_runs``), in the order runs first appear;
    columns :data:`COMPARE_COLUMNS` (NaN where a run has no such value: no audit, no
    evaluation yet). ``final_accuracy`` and the cumulative epsilons are the last recorded
    values; ``median_round_ratio`` is over audited rounds with a finite theory."""
    if runs.empty:
        return pd.DataFrame({column: pd.Series(dtype=object) for column in COMPARE_COLUMNS})
    rows = [_summarise(group) for _, group in runs.groupby("run_id", sort=False)]
    table = pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
    for column in ("rounds_done", "rounds_planned"):
        table[column] = table[column].astype("Int64")
    for column in (
        "dp.noise_multiplier",
        "dp.clip_norm",
        "final_accuracy",
        "epsilon_cumulative_theory",
        "epsilon_cumulative_empirical_extrapolated",
        "median_round_ratio",
        "lower_bound",
    ):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("float64")
    return table


def format_cell(value: object, *, digits: int = 3) -> str:
    """A table cell for people: '-' for missing, 'inf' for infinite, floats rounded."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float | np.floating):
        value = float(value)
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value != 0 and not 0.001 <= abs(value) < 1000:
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)
