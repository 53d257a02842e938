"""``fedsim sweep``: one ordinary run folder per combination of ``--grid`` values.

Each combination's folder is named after its overrides
(``<out>/<scenario name>__dp.noise_multiplier=0.5__dp.mode=client_fixed``), so running
the same sweep again finds its earlier runs: a folder whose manifest says ``completed``
(with the same resolved scenario) is skipped; an interrupted or failed one (or one killed
while running) is resumed from its last checkpoint, as ``fedsim resume`` does; a folder
without a readable manifest is renamed ``<name>.incomplete-<date>-<time>`` and the
combination runs again; a folder whose run is still going in another live process stops
the sweep. A folder of the same name with other settings stops it too. Nothing is
deleted. Combinations run one after the other, all with the scenario's seed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from fedsim.config import Scenario, load_scenario, parse_overrides, scenario_to_yaml
from fedsim.errors import FedsimError

__all__ = ["SweepRun", "parse_grid", "plan_sweep", "run_name", "run_sweep"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")
_MAX_NAME = 200
_GRID_HELP = "pass --grid key=v1,v2,... (e.g. --grid dp.noise_multiplier=0.5,1.0,2.0)"


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["key=v1,v2", ...]`` -> ``[(key, [v1, v2]), ...]`` (values as written)."""
    if not items:
        raise FedsimError(f"a sweep needs at least one --grid; {_GRID_HELP}")
    grid: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise FedsimError(f"--grid {item!r} is not key=v1,v2,...; {_GRID_HELP}")
        values = [value.strip() for value in raw.split(",")]
        if any(not value for value in values):
            raise FedsimError(f"--grid {item!r} has an empty value; separate values with single commas")
        repeated = sorted({value for value in values if values.count(value) > 1})
        if repeated:
            raise FedsimError(f"--grid {key} lists {', '.join(repeated)} more than once; list each value once")
        if any(key == earlier for earlier, _ in grid):
            raise FedsimError(f"--grid {key} is given twice; list all its values in one --grid")
        grid.append((key, values))
    return grid


def run_name(*, scenario: str, overrides: Sequence[tuple[str, str]]) -> str:
    """Deterministic, filesystem-safe folder name of one combination; where characters
    had to be replaced, or the name is long, a hash of the overrides keeps it unique."""
    raw = "__".join([scenario, *(f"{key}={value}" for key, value in overrides)])
    name = _UNSAFE.sub("_", raw)
    if name != raw or len(name) > _MAX_NAME:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        name = f"{name[: _MAX_NAME - 9]}-{digest}"
    return name


@dataclass(frozen=True)
class SweepRun:
    """One combination of the sweep: its folder name, its grid overrides and scenario."""

    name: str
    overrides: tuple[tuple[str, str], ...]
    scenario: Scenario


def plan_sweep(*, scenario_path: Path, grid: Sequence[str], overrides: Sequence[str] = ()) -> list[SweepRun]:
    """Every combination (cartesian product, in --grid order), each validated before
    anything runs."""
    axes = parse_grid(grid)
    set_keys = {key for key, _ in parse_overrides(list(overrides))}
    for key, _ in axes:
        if key in set_keys:
            raise FedsimError(f"{key} is given both with --set and with --grid; keep one")
    base = load_scenario(scenario_path, overrides=list(overrides))
    plan = []
    for values in itertools.product(*(values for _, values in axes)):
        combination = tuple(zip((key for key, _ in axes), values))
        scenario = load_scenario(
            scenario_path, overrides=[*overrides, *(f"{key}={value}" for key, value in combination)]
        )
        plan.append(
            SweepRun(name=run_name(scenario=base.name, overrides=combination), overrides=combination, scenario=scenario)
        )
    return plan


def _first_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(dict.fromkeys([*old, *new])):
            found = _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if old == new else f"{prefix.rstrip('.')}: {old!r} there, {new!r} now"


def _status(folder: Path) -> str:
    try:
        return str(json.loads((folder / "manifest.json").read_text()).get("status"))
    except (OSError, ValueError):
        return "incomplete"


def _move_aside(folder: Path, label: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = folder.with_name(f"{folder.name}.{label}-{stamp}")
    suffix = 1
    while target.exists():
        suffix += 1
        target = folder.with_name(f"{folder.name}.{label}-{stamp}-{suffix}")
    folder.rename(target)
    return target


Event = Callable[[str, SweepRun, Path, str], None]


def run_sweep(
    *,
    plan: Sequence[SweepRun],
    out: Path,
    engine: Literal["flower", "inprocess"] = "flower",
    ray_address: str | None = None,
    verbose: bool = False,
    on_event: Event | None = None,
    on_round=None,
    on_start=None,
) -> list[tuple[SweepRun, Path, str]]:
    """Run the combinations of ``plan`` one after the other under ``out``.

    Returns (combination, folder, outcome) with outcome ``skipped`` (completed earlier),
    ``completed`` or ``failed``. ``on_event(kind, run, folder, detail)`` is told of each
    ``skip``, ``moved`` (a folder without a readable manifest renamed; detail: the new
    path), ``start``, ``resume`` (an interrupted or failed run continued; detail: its
    status), ``done`` and ``failed`` (detail: the error). A KeyboardInterrupt stops the sweep
    (the interrupted run's folder says so); a failed run does not.
    """
    from fedsim.runner import resume_run, run_scenario  # imports torch: only when a sweep runs

    out = Path(out)
    results: list[tuple[SweepRun, Path, str]] = []

    def tell(kind: str, run: SweepRun, folder: Path, detail: str = "") -> None:
        if on_event is not None:
            on_event(kind, run, folder, detail)

    for run in plan:
        folder = out / run.name
        status = _status(folder) if folder.exists() else None
        if status not in (None, "incomplete"):
            stored = yaml.safe_load((folder / "scenario.yaml").read_text())
            difference = _first_difference(stored, yaml.safe_load(scenario_to_yaml(run.scenario)))
            if difference:
                raise FedsimError(
                    f"{folder} is a run of other settings ({difference}); pass another --out or move that folder away"
                )
        if status == "completed":
            tell("skip", run, folder)
            results.append((run, folder, "skipped"))
            continue
        if status == "incomplete":
            tell("moved", run, folder, str(_move_aside(folder, status)))
            status = None
        common = dict(ray_address=ray_address, verbose=verbose, on_round=on_round, on_start=on_start, engine=engine)
        try:
            if status is None:
                tell("start", run, folder)
                run_scenario(scenario=run.scenario, out_dir=out, run_id=run.name, **common)
            else:
                tell("resume", run, folder, status)
                resume_run(path=folder, **common)
        except FedsimError as error:
            if not folder.exists():
                raise  # failed before the run began (input, data, cluster): every run would
            tell("failed", run, folder, str(error))
            results.append((run, folder, "failed"))
            continue
        tell("done", run, folder)
        results.append((run, folder, "completed"))
    return results
