"""Shared test settings: no telemetry, Ray kept on 127.0.0.1, quiet logs; fake data trees."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The offline sample data folder (../shared/data, or FEDSIM_SAMPLE_DATA)."""
    path = Path(os.environ.get("FEDSIM_SAMPLE_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"sample data folder {path} is absent; set FEDSIM_SAMPLE_DATA")
    return path


@pytest.fixture()
def fake_cifar10(monkeypatch):
    """Write a tiny CIFAR-10 (``cifar-10-batches-py/`` or the tarball) and trust it.

    Its files cannot have the official sha256, so the test trusts their digests instead
    (as a user names a mirror's with FEDSIM_CIFAR10_SHA256); returns them by file name.
    """
    from fedsim.data import cifar10
    from tests.fixtures.fake_datasets import write_fake_cifar10

    def write(root: Path, **kwargs) -> dict[str, str]:
        digests = write_fake_cifar10(root, **kwargs)
        if kwargs.get("tarball"):
            monkeypatch.setenv(cifar10.SHA256_ENV, digests[cifar10.TARBALL])
        else:
            monkeypatch.setattr(cifar10, "BATCH_SHA256", digests)
        return digests

    return write


AUDITED_RUN_OVERRIDES = [
    "rounds=3",
    "clients_per_round=5",
    "data.num_clients=20",
    "data.design_pool=4",
    "audit.enabled=true",
    "audit.design_pool=4",
    "audit.iterations=20",
    "audit.tests=2000",
]


@pytest.fixture(scope="session")
def audited_runs(tmp_path_factory) -> list[Path]:
    """Two small real in-process runs of quickstart with the audit on (noise 0.7 and 1.5),
    shared by the tests that read run folders; treat them as read-only."""
    from fedsim.config import load_scenario
    from fedsim.runner import run_scenario

    out = tmp_path_factory.mktemp("audited-runs")
    folders = []
    for noise in (0.7, 1.5):
        scenario = load_scenario(
            ROOT / "scenarios" / "quickstart.yaml",
            overrides=[*AUDITED_RUN_OVERRIDES, f"dp.noise_multiplier={noise}"],
        )
        result = run_scenario(scenario=scenario, out_dir=out, engine="inprocess", run_id=f"quickstart-z{noise}")
        folders.append(result.store.path)
    return folders
