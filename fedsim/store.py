"""The run store: one folder per run, written as the run goes.

``runs/<run-id>/scenario.yaml`` (the resolved scenario), ``manifest.json`` (status,
versions, times; replaced atomically) and ``rounds.csv`` (one row per finished round,
appended and flushed to disk before the next round starts). Dashboards, comparisons and
resume read only this folder.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import platform
import secrets
import threading
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from fedsim.config import Scenario, scenario_to_yaml
from fedsim.errors import FedsimError

Status = Literal["running", "completed", "failed", "interrupted"]

ROUND_COLUMNS = [
    "round",
    "clients",
    "train_loss",
    "eval_loss",
    "eval_accuracy",
    "clip_fraction",
    "clip_norm",
    "noise_std",
    "epsilon_round_theory",
    "epsilon_cumulative_theory",
    "epsilon_cumulative_theory_rdp",
    "epsilon_round_empirical",
    "epsilon_round_empirical_lower",
    "epsilon_round_empirical_upper",
    "epsilon_cumulative_empirical",
    "canary_health",
    "seconds",
]

_PACKAGES = ["fedsim", "flwr", "ray", "torch", "opacus", "dp-accounting", "numpy", "pandas"]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to a temporary file, fsync it, and rename it over ``path``."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _cell(value: Any) -> Any:
    """CSV cell: empty for missing values, 'inf' for infinities."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return value


class RunStore:
    """One run's folder. Create with :meth:`create`, open an existing one with :meth:`open`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # the server thread appends while the driver may finish

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def rounds_path(self) -> Path:
        return self.path / "rounds.csv"

    @classmethod
    def create(cls, *, parent: Path, scenario: Scenario) -> RunStore:
        """Make ``parent/<run-id>/`` with the resolved scenario and a running manifest."""
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_id = f"{stamp}-{scenario.name}-{secrets.token_hex(3)}"
        try:
            path = Path(parent) / run_id
            path.mkdir(parents=True)
        except OSError as error:
            raise FedsimError(
                f"cannot create the run folder under {str(parent)!r} ({error.strerror}); choose another with --out"
            ) from None
        store = cls(path)
        (path / "scenario.yaml").write_text(scenario_to_yaml(scenario))
        with open(store.rounds_path, "w", newline="") as handle:
            csv.writer(handle).writerow(ROUND_COLUMNS)
        write_json_atomic(
            store.manifest_path,
            {
                "run_id": run_id,
                "scenario": scenario.name,
                "seed": scenario.seed,
                "status": "running",
                "started_at": _now(),
                "ended_at": None,
                "rounds_planned": scenario.rounds,
                "rounds_completed": 0,
                "versions": _versions(),
                "error": None,
            },
        )
        return store

    @classmethod
    def open(cls, path: Path) -> RunStore:
        """An existing run folder."""
        if not (Path(path) / "manifest.json").is_file():
            raise FedsimError(f"{str(path)!r} is not a fedsim run folder (no manifest.json); pass runs/<run-id>")
        return cls(Path(path))

    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text())

    def append_round(self, row: dict[str, Any]) -> None:
        """Append one finished round to rounds.csv and make it durable."""
        unknown = set(row) - set(ROUND_COLUMNS)
        if unknown:
            raise ValueError(f"unknown round columns: {sorted(unknown)}")
        with self._lock:
            with open(self.rounds_path, "a", newline="") as handle:
                csv.writer(handle).writerow([_cell(row.get(column)) for column in ROUND_COLUMNS])
                handle.flush()
                os.fsync(handle.fileno())
            manifest = self.manifest()
            manifest["rounds_completed"] = int(row["round"])
            write_json_atomic(self.manifest_path, manifest)

    def write_audit(self, *, round_number: int, scores_with, scores_without, summary: dict[str, Any]) -> None:
        """Keep one attacked round's raw scores (audits/round_NNNN.csv) and its summary
        (audits/round_NNNN.json), so any estimate can be recomputed later."""
        folder = self.path / "audits"
        folder.mkdir(exist_ok=True)
        stem = folder / f"round_{round_number:04d}"
        tmp = stem.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["score_with", "score_without"])
            writer.writerows(zip((repr(float(v)) for v in scores_with), (repr(float(v)) for v in scores_without)))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, stem.with_suffix(".csv"))
        write_json_atomic(stem.with_suffix(".json"), summary)

    def finish(self, *, status: Status, error: str | None = None) -> None:
        """Record how the run ended."""
        with self._lock:
            manifest = self.manifest()
            manifest.update(status=status, ended_at=_now(), error=error)
            write_json_atomic(self.manifest_path, manifest)

    def rounds(self) -> list[dict[str, str]]:
        """The rows of rounds.csv as written (strings; empty where missing)."""
        with open(self.rounds_path, newline="") as handle:
            return list(csv.DictReader(handle))
