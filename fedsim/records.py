"""What one round produces: the record behind each row of rounds.csv.

The columns of rounds.csv are the fields of :class:`RoundRecord`, in order; this is the
only place that lists them. Every reader (the run store, ``fedsim.results``, the
dashboard) takes the names and types from here.

What each privacy column is (see the README, "What the numbers are"):

- ``epsilon_round_theory``, ``epsilon_cumulative_theory``, ``epsilon_cumulative_theory_rdp``:
  upper bounds from the accountant, under the run's adjacency (manifest ``privacy``);
- ``epsilon_round_empirical``: the canary audit's point estimate (Gaussian fit);
  ``epsilon_round_empirical_ci_low`` / ``_ci_high``: its bootstrap confidence interval;
- ``epsilon_round_empirical_lower_bound``: the threshold method's lower confidence bound
  (holds at ``audit.confidence``);
- ``epsilon_cumulative_empirical_extrapolated``: per-round estimates composed as if each
  were a Gaussian mechanism: an extrapolation, neither a bound nor a measurement;
- ``clients``, ``failures``, ``train_loss``, ``clip_fraction``, ``eval_*``: the trusted
  server's diagnostics, outside the DP release.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, get_type_hints


@dataclass(frozen=True, kw_only=True)
class RoundRecord:
    """One finished round (None where a value does not apply to the round)."""

    round: int
    clients: int
    failures: int = 0
    train_loss: float | None = None
    eval_loss: float | None = None
    eval_accuracy: float | None = None
    clip_fraction: float | None = None
    clip_norm: float | None = None
    noise_std: float | None = None
    epsilon_round_theory: float | None = None
    epsilon_cumulative_theory: float | None = None
    epsilon_cumulative_theory_rdp: float | None = None
    epsilon_round_empirical: float | None = None
    epsilon_round_empirical_ci_low: float | None = None
    epsilon_round_empirical_ci_high: float | None = None
    epsilon_round_empirical_lower_bound: float | None = None
    epsilon_cumulative_empirical_extrapolated: float | None = None
    canary_health: float | None = None
    seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The record as a column -> value mapping."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class WhatIfPoint:
    """An audited round replayed at another noise multiplier (``audit.noise_multipliers``):
    one entry of ``what_if`` in ``audits/round_NNNN.json``."""

    noise_multiplier: float
    epsilon_theory: float  # that release alone, a bound
    epsilon_empirical: float | None  # the Gaussian-fit estimate
    ci_low: float | None
    ci_high: float | None
    lower_bound: float | None  # the threshold method's lower confidence bound

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ROUND_COLUMNS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(RoundRecord))
WHAT_IF_COLUMNS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(WhatIfPoint))
INTEGER_COLUMNS: frozenset[str] = frozenset(
    name for name, hint in get_type_hints(RoundRecord).items() if hint is int or hint == int | None
)


def to_cell(value: Any) -> str:
    """A CSV cell: empty for a missing value, 'inf' / '-inf' for infinities."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def from_cells(cells: dict[str, str]) -> RoundRecord:
    """A record from one rounds.csv row (strings), typed by the record's fields."""
    values: dict[str, Any] = {}
    for name in ROUND_COLUMNS:
        text = cells.get(name, "")
        if text != "":
            values[name] = int(text) if name in INTEGER_COLUMNS else float(text)
    return RoundRecord(**values)
