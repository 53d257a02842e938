"""Clients that fail or hang on purpose, as the scenario's ``faults`` section asks.

Injected inside the client's own work, so the Flower engine, the in-process engine and a
Ray cluster see the same failures: a client that raises, or one that stops answering.
"""

from __future__ import annotations

import time

from fedsim.config import FaultsConfig
from fedsim.seeding import FAULTS, round_rng


class InjectedFault(RuntimeError):
    """A failure the scenario asked for (``faults.fail_clients`` or ``faults.dropout``)."""


def inject_faults(*, faults: FaultsConfig, seed: int, client_id: int, round_number: int) -> None:
    """Raise, or hang and then raise, if the scenario says this client fails in this round."""
    if faults.rounds is None or round_number in faults.rounds:
        if client_id in faults.fail_clients:
            raise InjectedFault(f"client {client_id} fails in round {round_number} (faults.fail_clients)")
        if client_id in faults.hang_clients:
            time.sleep(faults.hang_s)  # stops answering; the round gives up on it after round_timeout_s
            raise InjectedFault(f"client {client_id} hung for {faults.hang_s:g} s in round {round_number}")
    if faults.dropout > 0:
        draw = round_rng(seed=seed, stream=FAULTS, round_number=round_number, extra=client_id).random()
        if draw < faults.dropout:
            raise InjectedFault(f"client {client_id} drops out in round {round_number} (faults.dropout)")


def hangs(*, faults: FaultsConfig, client_id: int, round_number: int) -> bool:
    """Whether :func:`inject_faults` makes this client hang in this round."""
    return client_id in faults.hang_clients and (faults.rounds is None or round_number in faults.rounds)
