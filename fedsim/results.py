"""Results of runs as typed pandas objects: the one read API for notebooks, ``fedsim
compare``, ``fedsim sweep``, the dashboard and the report.

>>> from fedsim.results import load_runs, load_audit
>>> runs = load_runs("runs/")                 # one row per run and round
>>> runs.groupby("run_id").epsilon_cumulative_theory.last()
>>> audit = load_audit("runs/<run-id>", round_number=1)
>>> audit.scores_with, audit.scores_without, audit.summary, audit.what_if()

Reads only the run store (``fedsim.store``); the round columns and their types come from
``fedsim.records``. Never imports Flower or torch.
"""

from __future__ import annotations

import functools
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from fedsim.errors import FedsimError
from fedsim.records import INTEGER_COLUMNS, ROUND_COLUMNS, WHAT_IF_COLUMNS
from fedsim.store import RunStore

__all__ = [
    "RUN_COLUMNS",
    "SCENARIO_FIELDS",
    "WHAT_IF_COLUMNS",
    "Audit",
    "audited_rounds",
    "find_runs",
    "load_audit",
    "load_runs",
    "load_what_if",
]

PathLike = str | os.PathLike[str]

RUN_COLUMNS: tuple[str, ...] = ("run_id", "path", "status", "rounds_planned", "rounds_completed")
"""Columns that describe the run (from its folder and manifest.json)."""

SCENARIO_FIELDS: tuple[str, ...] = (
    "name",
    "seed",
    "data.name",
    "data.num_clients",
    "clients_per_round",
    "sampling",
    "dp.mode",
    "dp.noise_multiplier",
    "dp.clip_norm",
    "dp.delta",
    "model.name",
    "client.optimizer",
    "client.lr",
    "server.optimizer",
    "audit.enabled",
    "audit.canary",
    "audit.every",
    "audit.tests",
)
"""The scenario's main fields, first among the scenario columns (every other scalar key of
scenario.yaml follows them, flattened with dots, e.g. ``data.options.alpha``)."""


def find_runs(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    """The run folders named by ``paths``: each a run folder, or a folder searched
    recursively for run folders (those holding a manifest.json), in path order."""
    items = _as_list(paths)
    if not items:
        raise FedsimError("no run folder given; pass runs/<run-id> or a folder of runs such as runs/")
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if not path.exists():
            raise FedsimError(f"{str(path)!r} does not exist; pass runs/<run-id> or a folder of runs such as runs/")
        if (path / "manifest.json").is_file():
            found.append(path)
            continue
        if not path.is_dir():
            raise FedsimError(f"{str(path)!r} is not a fedsim run folder; pass runs/<run-id> or a folder of runs")
        below = sorted(manifest.parent for manifest in path.rglob("manifest.json"))
        if not below:
            raise FedsimError(
                f"{str(path)!r} holds no fedsim run folder (none has a manifest.json); "
                "pass runs/<run-id> or the --out folder of `fedsim run`"
            )
        found.extend(below)
    unique = list(dict.fromkeys(path.resolve() for path in found))
    return [Path(path) for path in unique]


def _as_list(paths: PathLike | Iterable[PathLike]) -> list[PathLike]:
    return [paths] if isinstance(paths, str | os.PathLike) else list(paths)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar leaves of a nested mapping as dotted keys; lists become tuples."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, prefix=f"{name}."))
        elif isinstance(value, list):
            flat[name] = tuple(value)
        else:
            flat[name] = value
    return flat


def _scenario_columns(path: Path) -> dict[str, Any]:
    file = path / "scenario.yaml"
    try:
        tree = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise FedsimError(
            f"cannot read {str(file)!r} ({type(error).__name__}); is {str(path)!r} a run folder?"
        ) from None
    if not isinstance(tree, Mapping):
        raise FedsimError(f"{str(file)!r} is not a scenario mapping")
    flat = _flatten(tree)
    ordered = {name: flat.pop(name, None) for name in SCENARIO_FIELDS}
    ordered.update(flat)
    return ordered


def _rounds_frame(store: RunStore) -> pd.DataFrame:
    records = store.rounds()
    rows = [record.as_dict() for record in records]
    frame = pd.DataFrame(rows, columns=list(ROUND_COLUMNS))
    if frame.empty:  # a run with no finished round still gets one row, so it is listed
        frame = pd.DataFrame({column: [None] for column in ROUND_COLUMNS})
    for column in ROUND_COLUMNS:
        if column in INTEGER_COLUMNS:
            frame[column] = frame[column].astype("Int64")
        else:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


def _load_run(path: Path) -> pd.DataFrame:
    store = RunStore.open(path)
    try:
        manifest = store.manifest()
    except (OSError, ValueError) as error:
        raise FedsimError(f"cannot read {str(store.manifest_path)!r} ({type(error).__name__})") from None
    run = {
        "run_id": store.run_id,
        "path": str(path),
        "status": manifest.get("status"),
        "rounds_planned": manifest.get("rounds_planned"),
        "rounds_completed": manifest.get("rounds_completed"),
    }
    rounds = _rounds_frame(store)
    constant = {**run, **_scenario_columns(path)}
    head = pd.DataFrame({name: [value] * len(rounds) for name, value in constant.items()}, index=rounds.index)
    return pd.concat([head, rounds], axis=1)


def load_runs(paths: PathLike | Iterable[PathLike], *, skip_unreadable: bool = True) -> pd.DataFrame:
    """One row per run and finished round, typed.

    ``paths``: a run folder, a folder of run folders (searched recursively), or a list of
    either. Columns: :data:`RUN_COLUMNS`, the scenario (:data:`SCENARIO_FIELDS` first,
    then every other key of scenario.yaml, flattened with dots), then the rounds.csv
    columns of :class:`fedsim.records.RoundRecord` (integers as nullable ``Int64``, the
    rest ``float64`` with NaN where empty and ``inf`` where infinite). A run with no
    finished round has one row whose ``round`` is ``<NA>``.

    A run folder met while searching a folder that cannot be read (a broken manifest,
    say) is skipped with a warning when ``skip_unreadable``; one named directly raises.
    """
    items = _as_list(paths)
    explicit = {Path(item).resolve() for item in items}
    frames = []
    for path in find_runs(items):
        try:
            frames.append(_load_run(path))
        except (FedsimError, OSError, ValueError) as error:
            if not skip_unreadable or path in explicit:
                raise FedsimError(f"cannot read run folder {str(path)!r}: {error}") from None
            warnings.warn(f"skipped unreadable run folder {path}: {error}", stacklevel=2)
    if not frames:
        return pd.DataFrame(columns=[*RUN_COLUMNS, *SCENARIO_FIELDS, *ROUND_COLUMNS])
    frame = pd.concat(frames, ignore_index=True)
    for column in ROUND_COLUMNS:  # concat may widen Int64 where a frame lacks it
        frame[column] = frame[column].astype("Int64" if column in INTEGER_COLUMNS else "float64")
    return frame


@dataclass(frozen=True, kw_only=True)
class Audit:
    """One audited round of one run: the raw scores and the summary that the audit wrote.

    ``scores_with`` / ``scores_without``: float32 statistics of the aggregates with and
    without the canary client. ``what_if_scores_with`` / ``_without``: shape (k, tests),
    the same round replayed at each what-if noise multiplier (``what_if_noise_multipliers``,
    shape (k,)), where the audit kept them.
    ``delta`` and ``confidence`` are the run's (scenario.yaml).
    """

    run_id: str
    round: int
    scores_with: np.ndarray
    scores_without: np.ndarray
    summary: Mapping[str, Any]
    delta: float
    confidence: float = 0.95
    what_if_noise_multipliers: np.ndarray | None = None
    what_if_scores_with: np.ndarray | None = None
    what_if_scores_without: np.ndarray | None = None

    @functools.cached_property
    def threshold(self) -> float:
        """The threshold method's selected threshold (a score above it says "canary
        present"): the summary's ``threshold.threshold`` where the audit wrote it, else
        recomputed from the scores at the run's delta and confidence."""
        written = self.summary.get("threshold")
        if isinstance(written, Mapping) and written.get("threshold") is not None:
            return float(written["threshold"])
        from fedsim.canaries.estimators import empirical_epsilon  # numpy and scipy only

        estimate = empirical_epsilon(
            self.scores_with, self.scores_without, delta=self.delta, confidence=self.confidence, method="threshold"
        )
        return float(estimate.threshold)

    def what_if(self) -> pd.DataFrame:
        """The round's what-if points (one row per noise multiplier, sorted by it; columns
        :data:`WHAT_IF_COLUMNS`); empty when the audit had none."""
        return _what_if_frame(self.summary.get("what_if"))


def _what_if_frame(points: Any) -> pd.DataFrame:
    if not isinstance(points, list) or not points:
        return pd.DataFrame({column: pd.Series(dtype="float64") for column in WHAT_IF_COLUMNS})
    rows = [{column: _as_float(point.get(column)) for column in WHAT_IF_COLUMNS} for point in points]
    return pd.DataFrame(rows, columns=list(WHAT_IF_COLUMNS)).sort_values("noise_multiplier", ignore_index=True)


def _as_float(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _open(run: PathLike | RunStore) -> RunStore:
    if isinstance(run, RunStore):
        return run
    path = Path(run)
    if not path.exists():
        raise FedsimError(f"run folder {str(path)!r} does not exist; pass runs/<run-id>")
    return RunStore.open(path)


def _run_settings(store: RunStore) -> tuple[float, float]:
    scenario = _scenario_columns(store.path)
    delta = scenario.get("dp.delta")
    confidence = scenario.get("audit.confidence")
    return (float(delta) if delta is not None else 1e-5, float(confidence) if confidence is not None else 0.95)


def load_audit(run: PathLike | RunStore, *, round_number: int) -> Audit:
    """One audited round of ``run`` (a run folder or a RunStore)."""
    store = _open(run)
    arrays, summary = store.read_audit(round_number)
    delta, confidence = _run_settings(store)

    def array(name: str) -> np.ndarray | None:
        return np.asarray(arrays[name], dtype=np.float32) if name in arrays else None

    if "scores_with" not in arrays or "scores_without" not in arrays:
        raise FedsimError(f"audit of round {round_number} in {store.path} lacks scores_with/scores_without")
    return Audit(
        run_id=store.run_id,
        round=round_number,
        scores_with=array("scores_with"),
        scores_without=array("scores_without"),
        summary=summary,
        delta=delta,
        confidence=confidence,
        what_if_noise_multipliers=array("what_if_noise_multipliers"),
        what_if_scores_with=array("what_if_scores_with"),
        what_if_scores_without=array("what_if_scores_without"),
    )


def audited_rounds(run: PathLike | RunStore) -> list[int]:
    """The rounds of ``run`` with an audit on disk, in order."""
    return _open(run).audited_rounds()


def load_what_if(run: PathLike | RunStore) -> pd.DataFrame:
    """Every what-if point of ``run``: columns run_id, round, then :data:`WHAT_IF_COLUMNS`
    (reads only the audits' JSON summaries); empty when the run has none."""
    store = _open(run)
    frames = []
    for round_number in store.audited_rounds():
        try:
            summary = json.loads(store.audit_path(round_number).with_suffix(".json").read_text())
        except (OSError, ValueError):
            continue  # being written
        points = _what_if_frame(summary.get("what_if"))
        if len(points):
            points.insert(0, "round", round_number)
            points.insert(0, "run_id", store.run_id)
            frames.append(points)
    if not frames:
        return pd.DataFrame(
            {"run_id": pd.Series(dtype=object), "round": pd.Series(dtype="int64")}
            | {column: pd.Series(dtype="float64") for column in WHAT_IF_COLUMNS}
        )
    return pd.concat(frames, ignore_index=True)
