"""Run a scenario on Flower's simulation engine over Ray, writing the run store.

By default a local Ray runtime bound to 127.0.0.1 is started (and stopped by Flower at
the end); with ``ray_address`` the run attaches to an existing cluster instead, after
checking within a timeout that the cluster answers (a driver given a dead address would
otherwise retry forever).
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fedsim.config import Scenario
from fedsim.errors import FedsimError
from fedsim.records import RoundRecord
from fedsim.store import RunStore

QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keeps Ray on 127.0.0.1 instead of every interface
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "RAY_DEDUP_LOGS": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
}


def quiet_flower(*, verbose: bool) -> None:
    """Flower sets its logger to DEBUG on import: lower it afterwards unless verbose."""
    from flwr.supercore.logger import update_console_handler

    level = logging.INFO if verbose else logging.ERROR
    logging.getLogger("flwr").setLevel(level)
    update_console_handler(level=level)


@dataclass(frozen=True)
class RunResult:
    """A finished run: its folder and its round rows."""

    store: RunStore
    rows: list[RoundRecord]


def prepare_environment(*, verbose: bool) -> None:
    """Environment variables and log levels that keep Flower and Ray quiet and local."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    level = logging.INFO if verbose else logging.ERROR
    for name in ("flwr", "ray", "absl"):
        logging.getLogger(name).setLevel(level)
    if not verbose:
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning)


def check_ray_address(address: str, *, timeout_s: float) -> None:
    """Fail fast, with a one-line error, when no Ray cluster answers at ``address``."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise FedsimError(f"--ray-address {address!r} is not HOST:PORT; pass e.g. 127.0.0.1:6379")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError:
        raise FedsimError(
            f"no Ray cluster answers at {address} (waited {timeout_s:g} s); start one with "
            f"`ray start --head --port={port} --node-ip-address=127.0.0.1` or drop --ray-address"
        ) from None


def backend_config(*, scenario: Scenario, ray_address: str | None, verbose: bool) -> dict[str, Any]:
    """Flower's Ray backend configuration for this scenario."""
    init_args: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": verbose,
        "logging_level": logging.INFO if verbose else logging.ERROR,
    }
    if ray_address:
        init_args["address"] = ray_address
    else:
        init_args["_node_ip_address"] = "127.0.0.1"
        init_args["num_cpus"] = os.cpu_count() or 1
    return {
        "client_resources": {
            "num_cpus": scenario.ray.num_cpus_per_client,
            "num_gpus": scenario.ray.num_gpus_per_client,
        },
        "init_args": init_args,
    }


def run_scenario(
    *,
    scenario: Scenario,
    out_dir: Path,
    ray_address: str | None = None,
    verbose: bool = False,
    on_round=None,
    on_start=None,
    engine: Literal["flower", "inprocess"] = "flower",
    run_id: str | None = None,
) -> RunResult:
    """Run one scenario end to end and return its run folder and rows.

    ``engine="flower"`` (the default) runs Flower's simulation engine on Ray;
    ``engine="inprocess"`` calls the same client code in this process (no Flower, no
    Ray), for debugging and as the per-client-overhead baseline.
    ``run_id`` names the run folder (default: date, time, scenario name, random hex).
    Everything that can be checked is checked before the run folder is created. Each
    finished round is durable in ``rounds.csv``; the manifest's status says how the run
    ended (completed, failed, interrupted).
    """
    prepare_environment(verbose=verbose)
    address = ray_address or scenario.ray.address
    if address and engine == "flower":
        check_ray_address(address, timeout_s=scenario.ray.timeout_s)

    import torch

    from fedsim.loop import RoundLoop, RunOutcome

    # small per-client models train fastest on one thread; Ray workers own the other cores
    torch.set_num_threads(1)
    loop = RoundLoop(scenario=scenario, on_round=on_round)  # builds data, model, strategy
    store = RunStore.create(parent=out_dir, scenario=scenario, run_id=run_id)
    loop.store = store
    if on_start is not None:
        on_start(store)
    outcome = RunOutcome()
    try:
        if engine == "inprocess":
            from fedsim.clients.local import InProcessTransport

            try:
                loop.run(InProcessTransport(scenario=scenario), outcome)
            except Exception as error:  # noqa: BLE001 - reported below, like the server thread's
                outcome.error = error
        else:
            _simulate(scenario=scenario, loop=loop, outcome=outcome, address=address, verbose=verbose)
    except KeyboardInterrupt:
        outcome.stop.set()
        store.finish(status="interrupted", error="interrupted by the user")
        raise
    except Exception as error:  # Flower/Ray failures outside the server loop
        store.finish(status="failed", error=_one_line(error))
        raise FedsimError(f"the simulation failed: {_one_line(error)}; finished rounds are in {store.path}") from error
    if outcome.error is not None:
        if isinstance(outcome.error, KeyboardInterrupt):
            store.finish(status="interrupted", error="interrupted by the user")
            raise outcome.error
        store.finish(status="failed", error=_one_line(outcome.error))
        if isinstance(outcome.error, FedsimError):
            raise outcome.error
        raise FedsimError(
            f"the run failed: {_one_line(outcome.error)}; finished rounds are in {store.path}"
        ) from outcome.error
    if len(outcome.rows) != scenario.rounds:
        store.finish(status="failed", error="the simulation ended before all rounds finished")
        raise FedsimError(
            f"the simulation ended after {len(outcome.rows)} of {scenario.rounds} rounds; see {store.path}"
        )
    store.finish(status="completed")
    return RunResult(store=store, rows=outcome.rows)


def _simulate(*, scenario: Scenario, loop, outcome, address: str | None, verbose: bool) -> None:
    """Run the loop as a Flower ServerApp against ClientApps on Ray."""
    from flwr.simulation import run_simulation

    from fedsim.clients.app import make_client_app
    from fedsim.server import make_server_app

    quiet_flower(verbose=verbose)
    num_nodes = min(scenario.data.num_clients, scenario.ray.num_nodes)
    run_simulation(
        server_app=make_server_app(loop=loop, outcome=outcome, expected_nodes=num_nodes),
        client_app=make_client_app(scenario=scenario),
        num_supernodes=num_nodes,
        backend_name="ray",
        backend_config=backend_config(scenario=scenario, ray_address=address, verbose=verbose),
        verbose_logging=verbose,
    )


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:500] if not isinstance(error, FedsimError) else text
