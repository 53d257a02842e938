"""Run a scenario on Flower's simulation engine over Ray, writing the run store.

By default a local Ray runtime bound to 127.0.0.1 is started (and stopped by Flower at
the end); with ``ray_address`` the run attaches to an existing cluster instead, after
checking within a timeout that the cluster answers (a driver given a dead address would
otherwise retry forever).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
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
    """Flower sets its logger to DEBUG on import: lower it afterwards unless verbose. Quiet
    means silent: a failing client is counted and reported by fedsim itself, so Flower's
    own error lines (with Ray's tracebacks) show only with --verbose."""
    from flwr.supercore.logger import update_console_handler

    level = logging.INFO if verbose else logging.CRITICAL
    logging.getLogger("flwr").setLevel(level)
    update_console_handler(level=level)


@dataclass(frozen=True)
class RunResult:
    """A finished run: its folder and all its round rows (``ran``: False when a resumed run
    had nothing left to do)."""

    store: RunStore
    rows: list[RoundRecord]
    ran: bool = True


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


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: stop, keep every finished round, mark the run interrupted."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


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
    finished round is durable in ``rounds.csv`` (with a checkpoint every
    ``checkpoint.every`` rounds); the manifest's status says how the run ended
    (completed, failed, interrupted).
    """
    address = _prepare(scenario=scenario, ray_address=ray_address, verbose=verbose, engine=engine)
    loop = _build_loop(scenario=scenario, on_round=on_round)
    store = RunStore.create(parent=out_dir, scenario=scenario, privacy=loop.mechanism.describe(), run_id=run_id)
    return _execute(loop=loop, store=store, address=address, verbose=verbose, on_start=on_start, engine=engine)


def resume_run(
    *,
    path: Path,
    ray_address: str | None = None,
    verbose: bool = False,
    on_round=None,
    on_start=None,
    engine: Literal["flower", "inprocess"] = "flower",
) -> RunResult:
    """Continue an interrupted or failed run from its last checkpoint.

    The rounds after the checkpoint are dropped from the run folder and recomputed, so
    the finished rounds.csv equals an uninterrupted run's (the seconds column aside).
    A completed run is returned as it is (``RunResult.ran`` is False).
    """
    store = RunStore.open(path)
    manifest = store.manifest()
    if manifest["status"] == "completed":
        return RunResult(store=store, rows=store.rounds(), ran=False)
    store.check_not_running()
    from fedsim.config import load_scenario

    scenario = load_scenario(store.path / "scenario.yaml")
    address = _prepare(scenario=scenario, ray_address=ray_address, verbose=verbose, engine=engine)
    loop = _build_loop(scenario=scenario, on_round=on_round)
    checkpoint = store.read_checkpoint()
    if checkpoint is not None:
        loop.load_state_dict(checkpoint)
    store.rewind(to_round=loop.rounds_done)
    return _execute(loop=loop, store=store, address=address, verbose=verbose, on_start=on_start, engine=engine)


def _prepare(*, scenario: Scenario, ray_address: str | None, verbose: bool, engine: str) -> str | None:
    """Quiet, local environment; a reachable Ray cluster when one is named."""
    prepare_environment(verbose=verbose)
    address = ray_address or scenario.ray.address
    if address and engine == "flower":
        check_ray_address(address, timeout_s=scenario.ray.timeout_s)
    return address


def _build_loop(*, scenario: Scenario, on_round):
    from fedsim.loop import RoundLoop
    from fedsim.threads import use_one_thread

    # small per-client models train fastest on one thread; Ray workers own the other cores
    use_one_thread()
    return RoundLoop(scenario=scenario, on_round=on_round)  # builds data, model, strategy


def _execute(*, loop, store: RunStore, address: str | None, verbose: bool, on_start, engine: str) -> RunResult:
    """Run the loop's remaining rounds into ``store`` and record how the run ended."""
    from fedsim.loop import RunOutcome

    scenario = loop.scenario
    loop.store = store
    store.claim()
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
    except KeyboardInterrupt as stop:
        outcome.stop.set()
        _finish(store, status="interrupted", error=_interrupted(stop))
        raise
    except Exception as error:  # Flower/Ray failures outside the server loop
        _finish(store, status="failed", error=_one_line(error))
        raise FedsimError(f"the simulation failed: {_one_line(error)}; finished rounds are in {store.path}") from error
    if outcome.error is not None:
        if isinstance(outcome.error, KeyboardInterrupt):
            _finish(store, status="interrupted", error=_interrupted(outcome.error))
            raise outcome.error
        _finish(store, status="failed", error=_one_line(outcome.error))
        if isinstance(outcome.error, FedsimError):
            raise outcome.error
        raise FedsimError(
            f"the run failed: {_one_line(outcome.error)}; finished rounds are in {store.path}"
        ) from outcome.error
    if loop.rounds_done != scenario.rounds:
        _finish(store, status="failed", error="the simulation ended before all rounds finished")
        raise FedsimError(
            f"the simulation ended after {loop.rounds_done} of {scenario.rounds} rounds; see {store.path}"
        )
    _finish(store, status="completed")
    return RunResult(store=store, rows=store.rounds())


def _finish(store: RunStore, *, status: str, error: str | None = None) -> None:
    """Record how the run ended, if the run folder can still be written."""
    try:
        store.finish(status=status, error=error)
    except OSError:
        pass  # e.g. the disk is full: the error itself is reported to the user


def _interrupted(stop: BaseException) -> str:
    return f"interrupted ({getattr(stop, 'signal_name', 'SIGINT')}); resume with `fedsim resume`"


# After the server loop has ended, how long Flower may take to wind down before Ray is
# stopped under it (a hung client would otherwise keep a worker thread waiting forever).
WIND_DOWN_S = 30.0


def _simulate(*, scenario: Scenario, loop, outcome, address: str | None, verbose: bool) -> None:
    """Run the loop as a Flower ServerApp against ClientApps on Ray.

    Flower's simulation runs in a helper thread so that the driver can leave once the
    server loop has ended: Flower waits for every ClientApp call to return, and a client
    that hangs never does; its actor is stopped with Ray after ``WIND_DOWN_S``.
    """
    from flwr.simulation import run_simulation

    from fedsim.clients.app import make_client_app
    from fedsim.server import make_server_app, quick_dispatch

    quiet_flower(verbose=verbose)
    config = backend_config(scenario=scenario, ray_address=address, verbose=verbose)
    _init_ray(config["init_args"])
    num_nodes = min(scenario.data.num_clients, scenario.ray.num_nodes)
    crashed: list[BaseException] = []

    def simulate() -> None:
        try:
            with quick_dispatch():
                run_simulation(
                    server_app=make_server_app(loop=loop, outcome=outcome, expected_nodes=num_nodes),
                    client_app=make_client_app(scenario=scenario),
                    num_supernodes=num_nodes,
                    backend_name="ray",
                    backend_config=config,
                    verbose_logging=verbose,
                )
        except BaseException as error:  # noqa: BLE001 - re-raised in the driver's thread
            crashed.append(error)

    flower = threading.Thread(target=simulate, name="fedsim-flower", daemon=True)
    flower.start()
    while flower.is_alive() and not outcome.finished.is_set():
        flower.join(timeout=0.2)  # short waits keep Ctrl-C and SIGTERM responsive
    flower.join(timeout=WIND_DOWN_S)
    if flower.is_alive():
        import ray

        ray.shutdown()  # stops the actors of clients that never answered
        flower.join(timeout=WIND_DOWN_S)
    if crashed and not outcome.finished.is_set():
        raise crashed[0]


def _init_ray(init_args: dict[str, Any]) -> None:
    """Start (or attach to) Ray here rather than inside Flower's backend, which skips its
    own ``ray.init`` when Ray is up: ``ray.init`` replaces the SIGTERM handler with one
    that exits at once, and fedsim's (stop, mark the run interrupted) is put back after it."""
    import ray

    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers belong to the main thread; let Flower start Ray
    handler = signal.getsignal(signal.SIGTERM)
    ray.init(**init_args)
    signal.signal(signal.SIGTERM, handler)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:500] if not isinstance(error, FedsimError) else text
