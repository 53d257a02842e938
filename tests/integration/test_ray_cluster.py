"""fedsim attaches to an existing Ray cluster (`ray start --head` on 127.0.0.1) and stops it."""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from fedsim.config import load_scenario
from fedsim.runner import run_scenario
from fedsim.store import RunStore
from tests.conftest import BIN


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_run_attached_to_a_ray_head_on_localhost(tmp_path, project_root):
    port = _free_port()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    temp_dir = Path(tempfile.mkdtemp(prefix="fsr", dir="/tmp"))  # Ray's socket paths must stay short
    start = subprocess.run(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    try:
        assert start.returncode == 0, start.stderr[-2000:]
        result = subprocess.run(
            [
                str(BIN / "fedsim"),
                "run",
                str(project_root / "scenarios" / "quickstart.yaml"),
                "--set",
                "rounds=2",
                "--set",
                "clients_per_round=4",
                "--set",
                "data.num_clients=12",
                "--set",
                "ray.num_nodes=4",
                "--set",
                "audit.enabled=false",
                "--ray-address",
                f"127.0.0.1:{port}",
                "--out",
                str(tmp_path / "runs"),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        (folder,) = list((tmp_path / "runs").iterdir())
        assert json.loads((folder / "manifest.json").read_text())["status"] == "completed"
        # reproducible across engines: the same scenario and seed in-process give the same rounds
        scenario = load_scenario(folder / "scenario.yaml")
        local = run_scenario(scenario=scenario, out_dir=tmp_path / "local", engine="inprocess").rows
        strip = lambda rows: [dataclasses.replace(row, seconds=None) for row in rows]  # noqa: E731
        assert strip(RunStore.open(folder).rounds()) == strip(local)
        # the run's driver joined the cluster we started: its log is in that cluster's session
        assert list(temp_dir.glob("session_*/logs/python-core-driver-*"))
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_dead_ray_address_fails_fast_with_one_line(tmp_path, project_root):
    port = _free_port()  # nothing listens there
    result = subprocess.run(
        [
            str(BIN / "fedsim"),
            "run",
            str(project_root / "scenarios" / "quickstart.yaml"),
            "--set",
            "ray.timeout_s=2",
            "--ray-address",
            f"127.0.0.1:{port}",
            "--out",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in result.stderr
    assert "ray start --head" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing half-written


@pytest.mark.slow
def test_a_two_node_cluster_on_one_machine_runs_clients_on_both_nodes(tmp_path, project_root, monkeypatch):
    """A head and a worker node (ray.cluster_utils.Cluster, one CPU each, on 127.0.0.1):
    one client actor per node, one message lane per actor, and the replies name the Ray
    node that trained them: both nodes trained clients, and the rounds equal in-process."""
    from ray.cluster_utils import Cluster

    import fedsim.server as server

    transports = []
    original = server.FlowerTransport.__init__

    def remember(self, **kwargs):
        original(self, **kwargs)
        transports.append(self)

    monkeypatch.setattr(server.FlowerTransport, "__init__", remember)
    temp_dir = Path(tempfile.mkdtemp(prefix="fsc", dir="/tmp"))  # Ray's socket paths must stay short
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            "temp_dir": str(temp_dir),
        },
    )
    try:
        worker = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        scenario = load_scenario(
            project_root / "scenarios" / "quickstart.yaml",
            overrides=[
                "rounds=3",
                "clients_per_round=8",
                "data.num_clients=24",
                "client.epochs=20",  # long enough that both actors are busy at once
                "ray.num_nodes=4",
                "audit.enabled=false",
            ],
        )
        flower = run_scenario(scenario=scenario, out_dir=tmp_path / "flower", ray_address=cluster.address).rows
        nodes = {cluster.head_node.node_id, worker.node_id}
        (transport,) = transports
        assert transport.lanes == 2
        hosts = {host for round_hosts in transport.hosts.values() for host in round_hosts}
        assert hosts == nodes, (hosts, nodes)
        local = run_scenario(scenario=scenario, out_dir=tmp_path / "local", engine="inprocess").rows
        strip = lambda rows: [dataclasses.replace(row, seconds=None) for row in rows]  # noqa: E731
        assert strip(flower) == strip(local)
    finally:
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
