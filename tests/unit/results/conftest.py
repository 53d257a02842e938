"""Run folders written directly with RunStore (no training), for the results tests."""

from pathlib import Path

import numpy as np
import pytest

from fedsim.config import scenario_from_dict
from fedsim.records import RoundRecord
from fedsim.store import RunStore


def write_run(
    parent: Path,
    run_id: str,
    *,
    rounds: list[RoundRecord],
    overrides: list[str] = (),
    status: str | None = "completed",
    audits: dict[int, tuple[dict[str, np.ndarray], dict]] | None = None,
) -> RunStore:
    """A run folder holding exactly the given rounds and audits."""
    scenario = scenario_from_dict({"name": "fake", "rounds": 4}, overrides=list(overrides))
    store = RunStore.create(parent=parent, scenario=scenario, run_id=run_id)
    for record in rounds:
        store.append_round(record)
    for round_number, (arrays, summary) in (audits or {}).items():
        store.write_audit(round_number=round_number, arrays=arrays, summary=summary)
    if status is not None:
        store.finish(status=status)
    return store


@pytest.fixture
def make_run():
    return write_run
