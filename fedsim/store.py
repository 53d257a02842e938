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
import hashlib
import json
import os
import platform
import secrets
import socket
import threading
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Protocol

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


class AuditFiles(Protocol):
    """What an audited round leaves on disk (fedsim.canaries.audit.AuditResult)."""

    def arrays(self) -> dict[str, np.ndarray]: ...

    def summary(self) -> dict[str, Any]: ...


_STATE_KEY = "__state__"
_ARRAY_REF = "__array__"


def _split_arrays(tree: Any, prefix: str = "") -> tuple[Any, dict[str, np.ndarray]]:
    """A nested structure with numpy arrays -> (JSON-able tree with references, arrays)."""
    if isinstance(tree, np.ndarray):
        return {_ARRAY_REF: prefix}, {prefix: tree}
    if isinstance(tree, dict):
        out, arrays = {}, {}
        for key, value in tree.items():
            out[key], found = _split_arrays(value, f"{prefix}.{key}" if prefix else str(key))
            arrays.update(found)
        return out, arrays
    if isinstance(tree, np.generic):
        return tree.item(), {}
    return tree, {}


def _join_arrays(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Inverse of :func:`_split_arrays`."""
    if isinstance(tree, dict):
        if set(tree) == {_ARRAY_REF}:
            return arrays[tree[_ARRAY_REF]]
        return {key: _join_arrays(value, arrays) for key, value in tree.items()}
    return tree


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    def create(
        cls, *, parent: Path, scenario: Scenario, privacy: dict[str, Any] | None = None, run_id: str | None = None
    ) -> RunStore:
        """Make ``parent/<run-id>/`` with the resolved scenario and a running manifest
        (``privacy``: what the run's epsilons cover, from its DP mechanism).

        ``run_id`` names the folder (``fedsim sweep`` names runs after their overrides);
        by default it is ``<date>-<time>-<scenario name>-<random hex>``. An existing
        folder is never reused.
        """
        if run_id is not None and (not run_id or run_id in (".", "..") or "/" in run_id or os.sep in run_id):
            raise FedsimError(f"run id {run_id!r} is not a folder name; use letters, digits, '.', '_', '=', '-'")
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        while True:  # runs started in the same second differ by their random suffix
            name = run_id or f"{stamp}-{scenario.name}-{secrets.token_hex(3)}"
            path = Path(parent) / name
            try:
                path.mkdir(parents=True)
                break
            except FileExistsError:
                if run_id is not None:
                    raise FedsimError(
                        f"run folder {str(path)!r} already exists; move it away or choose another --out"
                    ) from None
                continue
            except OSError as error:
                raise FedsimError(
                    f"cannot create the run folder under {str(parent)!r} ({error.strerror}); choose another with --out"
                ) from None
        run_id = name
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
                "privacy": privacy,
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

    def persist(
        self, *, record: RoundRecord, audit: AuditFiles | None = None, checkpoint: dict[str, Any] | None = None
    ) -> None:
        """One finished round: its audit files, its row, then its checkpoint when one is due,
        each durable before the next. A failed write stops the run with one line; what was
        written before stays (``fedsim resume`` recomputes the rounds after the checkpoint)."""
        try:
            if audit is not None:
                self.write_audit(round_number=record.round, arrays=audit.arrays(), summary=audit.summary())
            self.append_round(record)
            if checkpoint is not None:
                self.write_checkpoint(checkpoint)
        except OSError as error:
            raise FedsimError(
                f"cannot write to the run folder {self.path} ({error.strerror or error}); earlier rounds are kept: "
                f"free space or fix the folder, then `fedsim resume {self.path}`"
            ) from None

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.npz"

    def write_checkpoint(self, state: dict[str, Any]) -> None:
        """Replace the run's checkpoint with ``state`` (nested dicts of JSON values and numpy
        arrays) and record its sha256 in the manifest. The file is a numpy .npz without
        pickles: arrays and one JSON document, nothing that can run code."""
        tree, arrays = _split_arrays(state)
        arrays[_STATE_KEY] = np.array(json.dumps(tree))
        tmp = self._checkpoint_tmp
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        # the manifest names the new file before it replaces the old one: a run stopped in
        # between (Ctrl-C, SIGTERM) leaves the named file at the temporary path, and
        # read_checkpoint finishes the move
        with self._lock:
            manifest = self.manifest()
            manifest["checkpoint"] = {"round": state["round"], "sha256": _sha256(tmp)}
            write_json_atomic(self.manifest_path, manifest)
        os.replace(tmp, self.checkpoint_path)

    @property
    def _checkpoint_tmp(self) -> Path:
        return self.checkpoint_path.with_suffix(".npz.tmp")

    def read_checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint, verified against the digest in the manifest (None if the run
        has none). A modified or unreadable checkpoint is refused with one line."""
        recorded = self.manifest().get("checkpoint")
        if recorded is None:
            return None
        tmp = self._checkpoint_tmp
        if tmp.is_file() and not tmp.is_symlink() and _sha256(tmp) == recorded.get("sha256"):
            os.replace(tmp, self.checkpoint_path)  # a write stopped after the manifest named it
        if not self.checkpoint_path.is_file() or _sha256(self.checkpoint_path) != recorded.get("sha256"):
            raise FedsimError(
                f"{self.checkpoint_path} does not match the sha256 recorded in manifest.json (modified, replaced or "
                "missing); it is not loaded. Restore it, or start the scenario again with `fedsim run`"
            )
        try:
            with np.load(self.checkpoint_path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            tree = json.loads(str(arrays.pop(_STATE_KEY)))
        except (ValueError, KeyError, OSError) as error:
            raise FedsimError(f"cannot read {self.checkpoint_path} ({error}); it is not loaded") from None
        return _join_arrays(tree, arrays)

    def claim(self) -> None:
        """Record which process runs the rounds now (so a second resume can refuse)."""
        with self._lock:
            manifest = self.manifest()
            manifest.update(pid=os.getpid(), host=socket.gethostname())
            write_json_atomic(self.manifest_path, manifest)

    def check_not_running(self) -> None:
        """Refuse a run folder whose rounds another live process on this host is writing."""
        manifest = self.manifest()
        pid, host = manifest.get("pid"), manifest.get("host")
        if manifest.get("status") == "running" and host == socket.gethostname() and _alive(pid):
            raise FedsimError(
                f"run {self.run_id} is still running (process {pid}); stop it first, or wait for it to end"
            )

    def rewind(self, *, to_round: int) -> None:
        """Forget the rounds after ``to_round`` (a resume recomputes them): rows of
        rounds.csv, possibly torn by a kill, and their audit files; the manifest says
        running again."""
        with open(self.rounds_path, newline="") as handle:
            rows = list(csv.reader(handle))[1:]
        kept = [row for row in rows if row and row[0].isdigit() and int(row[0]) <= to_round]
        tmp = self.rounds_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(ROUND_COLUMNS)
            writer.writerows(kept)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.rounds_path)
        for round_number in self.audited_rounds():
            if round_number > to_round:
                for suffix in (".npz", ".json"):
                    self.audit_path(round_number).with_suffix(suffix).unlink(missing_ok=True)
        with self._lock:
            manifest = self.manifest()
            manifest.update(status="running", ended_at=None, error=None, rounds_completed=to_round)
            manifest.setdefault("resumed_at", []).append(_now())
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

    def audited_rounds(self) -> list[int]:
        """Rounds with an audit on disk, in order."""
        folder = self.path / "audits"
        return sorted(int(path.stem.removeprefix("round_")) for path in folder.glob("round_*.json"))

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
