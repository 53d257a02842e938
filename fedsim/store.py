"""The run store: one folder per run, written as the run goes.

``runs/<run-id>/scenario.yaml`` (the resolved scenario), ``manifest.json`` (status,
versions, times; replaced atomically), ``rounds.csv`` (one row per finished round,
appended and flushed to disk before the next round starts) and ``audits/`` (per audited
round: ``round_NNNN.npz`` with the raw float32 scores, ``round_NNNN.json`` with the
summary). Dashboards, comparisons and resume read only this folder.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import platform
import secrets
import threading
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fedsim.config import Scenario, scenario_to_yaml
from fedsim.errors import FedsimError
from fedsim.records import ROUND_COLUMNS, RoundRecord, from_cells, to_cell

Status = Literal["running", "completed", "failed", "interrupted"]

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
    def create(cls, *, parent: Path, scenario: Scenario, run_id: str | None = None) -> RunStore:
        """Make ``parent/<run-id>/`` with the resolved scenario and a running manifest.

        ``run_id`` names the folder (``fedsim sweep`` names runs after their overrides);
        by default it is ``<date>-<time>-<scenario name>-<random hex>``. An existing
        folder is never reused.
        """
        if run_id is None:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            run_id = f"{stamp}-{scenario.name}-{secrets.token_hex(3)}"
        elif not run_id or run_id in (".", "..") or "/" in run_id or os.sep in run_id:
            raise FedsimError(f"run id {run_id!r} is not a folder name; use letters, digits, '.', '_', '=', '-'")
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

    def append_round(self, record: RoundRecord) -> None:
        """Append one finished round to rounds.csv and make it durable."""
        values = record.as_dict()
        with self._lock:
            with open(self.rounds_path, "a", newline="") as handle:
                csv.writer(handle).writerow([to_cell(values[column]) for column in ROUND_COLUMNS])
                handle.flush()
                os.fsync(handle.fileno())
            manifest = self.manifest()
            manifest["rounds_completed"] = record.round
            write_json_atomic(self.manifest_path, manifest)

    def audit_path(self, round_number: int) -> Path:
        """The stem of one audited round's files (``audits/round_NNNN``)."""
        return self.path / "audits" / f"round_{round_number:04d}"

    def write_audit(self, *, round_number: int, arrays: dict[str, np.ndarray], summary: dict[str, Any]) -> None:
        """Keep one audited round's raw scores (``round_NNNN.npz``, float32) and its
        summary (``round_NNNN.json``), so any estimate can be recomputed later."""
        stem = self.audit_path(round_number)
        stem.parent.mkdir(exist_ok=True)
        tmp = stem.with_suffix(".npz.tmp")
        with open(tmp, "wb") as handle:
            np.savez(handle, **{name: np.asarray(value, dtype=np.float32) for name, value in arrays.items()})
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, stem.with_suffix(".npz"))
        write_json_atomic(stem.with_suffix(".json"), summary)

    def audited_rounds(self) -> list[int]:
        """Rounds with an audit on disk, in order."""
        return sorted(int(path.stem.removeprefix("round_")) for path in (self.path / "audits").glob("round_*.json"))

    def read_audit(self, round_number: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The raw score arrays and the summary of one audited round."""
        stem = self.audit_path(round_number)
        if not stem.with_suffix(".json").is_file():
            audited = ", ".join(map(str, self.audited_rounds())) or "none"
            raise FedsimError(f"run {self.run_id} has no audit of round {round_number}; audited rounds: {audited}")
        with np.load(stem.with_suffix(".npz"), allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        return arrays, json.loads(stem.with_suffix(".json").read_text())

    def finish(self, *, status: Status, error: str | None = None) -> None:
        """Record how the run ended."""
        with self._lock:
            manifest = self.manifest()
            manifest.update(status=status, ended_at=_now(), error=error)
            write_json_atomic(self.manifest_path, manifest)

    def rounds(self) -> list[RoundRecord]:
        """The rounds recorded so far, typed (None where a cell is empty).

        A last line without its line end is a row still being written by the running
        process: it is left out rather than read half-written.
        """
        with open(self.rounds_path, newline="") as handle:
            text = handle.read()
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines = lines[:-1]
        return [from_cells(row) for row in csv.DictReader(lines)]
