"""A node's work in a round: many logical clients, trained one after the other.

The server splits a round's cohort into one share per node (:func:`split_cohort`); a
node trains its share's clients with the model and data already in its process (clients
that take one plain SGD step together, fedsim.clients.batched; the others one after the
other), prepares each update on its own as the strategy's :class:`ContributionRule` says
(each clipped separately; client-side clipping with the helper of Flower's
``fixedclipping_mod``, which clips one update per message and so cannot be used on a
message of many clients), and returns their sum, each client's report, and on audited
rounds the prepared updates themselves. Ray and serialisation are paid per message and
round, not per client.

A client that raises fails alone; past the share's deadline (``round_timeout_s``) the
client in training and those after it count as failed and the node answers with the
rest. The Flower ClientApp and the in-process transport both call :func:`train_share`
on the same shares, so both engines compute the same sums in the same order.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.supercore.differential_privacy import compute_clip_model_update

from fedsim.clients.faults import hangs, inject_faults
from fedsim.clients.work import TrainedClient, discard_runner, runner_for
from fedsim.config import Scenario
from fedsim.params import flatten_state
from fedsim.strategies.aggregation import ContributionRule, clip_update, prepare_update


@dataclass(frozen=True)
class ClientReport:
    """What one trained client reports to the server (besides its update)."""

    client_id: int
    num_examples: int
    update_norm: float  # L2 norm of its update before any clipping
    train_loss: float
    noise_std: float | None = None  # local DP-SGD: the noise std Opacus used per step


@dataclass(frozen=True, kw_only=True)
class ShareRequest:
    """What the server asks of one node in a round."""

    round_number: int
    client_ids: list[int]
    rule: ContributionRule
    keep_updates: bool = False  # audited rounds: return each prepared update too
    deadline: float | None = None  # time.time() by which the node answers (round_timeout_s)
    sampled: bool = True  # False: the audit's design-pool users (no faults injected)


@dataclass(frozen=True, kw_only=True)
class ShareResult:
    """A node's answer: the sum of its clients' prepared updates and their reports."""

    total: np.ndarray  # sum of the prepared updates (weighted by examples if the rule says so)
    weight: float  # sum of the weights (example counts, or one per client)
    reports: list[ClientReport]
    failed: dict[int, str] = field(default_factory=dict)  # client id -> why
    updates: np.ndarray | None = None  # (len(reports), d) prepared updates, if kept


@dataclass(frozen=True, kw_only=True)
class CohortReplies:
    """A round's shares put together, in share order (so in client-id order)."""

    total: np.ndarray
    weight: float
    reports: list[ClientReport]
    failed: dict[int, str] = field(default_factory=dict)
    updates: np.ndarray | None = None  # the cohort's prepared updates, if kept
    design: np.ndarray | None = None  # the design-pool users' prepared updates, if asked for

    @classmethod
    def combine(cls, results: list[ShareResult], *, cohort_shares: int, dim: int, keep_updates: bool) -> CohortReplies:
        """Sum the first ``cohort_shares`` shares' totals in share order (the same order on
        every engine); the shares after them are the design pool's."""
        total, weight, reports, failed = np.zeros(dim), 0.0, [], {}
        for result in results[:cohort_shares]:
            total += result.total
            weight += result.weight
            reports.extend(result.reports)
            failed.update(result.failed)
        return cls(
            total=total,
            weight=weight,
            reports=reports,
            failed=failed,
            updates=_rows(results[:cohort_shares], dim) if keep_updates else None,
            design=_rows(results[cohort_shares:], dim) if len(results) > cohort_shares else None,
        )


def _rows(results: list[ShareResult], dim: int) -> np.ndarray:
    kept = [result.updates for result in results if result.updates is not None and len(result.updates)]
    return np.concatenate(kept) if kept else np.zeros((0, dim))


def round_requests(
    *,
    round_number: int,
    cohort: np.ndarray,
    design_ids: list[int],
    nodes: int,
    rule: ContributionRule,
    keep_updates: bool,
    deadline: float | None,
) -> tuple[list[ShareRequest], int]:
    """A round's share requests and how many of them are the cohort's: the cohort in
    shares for ``nodes`` nodes, then the audit's design-pool users (each update kept and
    clipped as the server clips, no faults) in shares the same way."""
    cohort_requests = [
        ShareRequest(
            round_number=round_number,
            client_ids=[int(c) for c in share],
            rule=rule,
            keep_updates=keep_updates,
            deadline=deadline,
        )
        for share in split_cohort(cohort, nodes=nodes)
    ]
    design_requests = [
        ShareRequest(
            round_number=round_number,
            client_ids=[int(c) for c in share],
            rule=ContributionRule(clip_norm=rule.clip_norm),
            keep_updates=True,
            deadline=deadline,
            sampled=False,
        )
        for share in split_cohort(np.asarray(design_ids, dtype=int), nodes=nodes)
    ]
    return cohort_requests + design_requests, len(cohort_requests)


def node_count(scenario: Scenario) -> int:
    """How many nodes (Flower supernodes) host the scenario's logical clients."""
    return min(scenario.data.num_clients, scenario.ray.num_nodes)


def split_cohort(cohort: np.ndarray, *, nodes: int) -> list[np.ndarray]:
    """The cohort in at most ``nodes`` contiguous shares of near-equal size (none empty)."""
    return [share for share in np.array_split(np.asarray(cohort), max(1, min(nodes, len(cohort)))) if len(share)]


def _prepare(trained: TrainedClient, *, start_arrays: list[np.ndarray], start_flat: np.ndarray, rule: ContributionRule):
    """The client's update as it enters the sum: clipped on its own where the rule says."""
    if rule.clip_norm is not None and rule.client_clips:
        arrays = list(trained.arrays)
        compute_clip_model_update(param1=arrays, param2=start_arrays, clipping_norm=rule.clip_norm)  # in place
        update = np.concatenate([array.ravel() for array in arrays], dtype=np.float64) - start_flat
        # the helper clips in float32 and adds the result back onto the float32 weights, whose
        # rounding can leave the norm a little above C (3e-5 relative was seen): clip again in float64
        return clip_update(update, norm=float(np.linalg.norm(update)), clip_norm=rule.clip_norm)
    return prepare_update(trained.update, norm=trained.update_norm, rule=rule)


def _inject_faults(scenario: Scenario, request: ShareRequest, client_id: int) -> None:
    """Raise the scenario's injected fault of a share's client, if any (design-pool users
    never fail on purpose)."""
    if request.sampled:
        inject_faults(
            faults=scenario.faults, seed=scenario.seed, client_id=client_id, round_number=request.round_number
        )


def _together_outcomes(scenario: Scenario, requests: list[ShareRequest], client_ids: list[int], train_together):
    """Yield (client id, TrainedClient or the exception it raised) for the clients of
    ``requests`` named in ``client_ids``, trained together by ``train_together(ids)``: a
    client whose faults fire fails alone, before; if the training together raises, each
    client it had not yet yielded fails."""
    wanted, ready = set(client_ids), []
    for request in requests:
        for client_id in (c for c in request.client_ids if c in wanted):
            try:
                _inject_faults(scenario, request, client_id)
                ready.append(client_id)
            except Exception as error:  # noqa: BLE001 - a failing client, reported to the server
                yield client_id, error
    done = 0
    try:
        for trained in train_together(ready) if ready else ():
            yield ready[done], trained
            done += 1
    except Exception as error:  # noqa: BLE001 - reported to the server for each client
        for client_id in ready[done:]:
            yield client_id, error


def lockstep_outcomes(
    *, scenario: Scenario, state: dict[str, torch.Tensor], requests: list[ShareRequest]
) -> dict[int, TrainedClient | BaseException]:
    """Every client of ``requests`` that trains in lockstep (a dense model, no deadline, not
    hanging), trained together whatever share it is in (fedsim.clients.lockstep: a client's
    result does not depend on the others in its group, a test checks it bit for bit, so a
    message's shares sum what they sum alone); empty when the model does not train in
    lockstep. Each outcome a TrainedClient or the exception it raised."""
    runner = runner_for(scenario)
    if not runner.lockstep or not requests or any(request.deadline is not None for request in requests):
        return {}
    ids = [cid for request in requests for cid in _steady(scenario, request)]
    common = dict(
        start=state,
        round_number=requests[0].round_number,
        start_flat=flatten_state(state),
        keep_arrays=any(request.rule.client_clips for request in requests),
    )
    return dict(
        _together_outcomes(scenario, requests, ids, lambda ready: runner.train_lockstep(client_ids=ready, **common))
    )


def _steady(scenario: Scenario, request: ShareRequest) -> list[int]:
    """A share's clients but those that hang (trained one by one, so that the deadline can
    give up on them)."""
    return [
        cid
        for cid in request.client_ids
        if not (request.sampled and hangs(faults=scenario.faults, client_id=cid, round_number=request.round_number))
    ]


def _outcomes(
    scenario: Scenario, state: dict[str, torch.Tensor], request: ShareRequest, start_flat: np.ndarray, client_ids
):
    """Yield (client id, TrainedClient or the exception it raised), one client after the
    other; past the deadline, (client id, TimeoutError) for the one in training and the rest."""
    runner = runner_for(scenario)  # kept by a late client's thread after the node gives up on it

    def train(client_id: int) -> TrainedClient:
        _inject_faults(scenario, request, client_id)
        return runner.train(
            start=state,
            client_id=client_id,
            round_number=request.round_number,
            start_flat=start_flat,
            keep_arrays=request.rule.client_clips,
        )

    if request.deadline is None:
        for client_id in client_ids:
            try:
                yield client_id, train(client_id)
            except Exception as error:  # noqa: BLE001 - a failing client, reported to the server
                yield client_id, error
        return
    done: queue.Queue[tuple[int, TrainedClient | BaseException]] = queue.Queue()
    given_up = threading.Event()

    def work() -> None:
        for client_id in client_ids:
            if given_up.is_set():
                return  # the node answered without the rest: train nobody for it any more
            try:
                done.put((client_id, train(client_id)))
            except Exception as error:  # noqa: BLE001
                done.put((client_id, error))

    threading.Thread(target=work, daemon=True, name=f"fedsim-share-{request.round_number}").start()
    for client_id in client_ids:
        try:
            yield done.get(timeout=max(0.0, request.deadline - time.time()))
        except queue.Empty:
            given_up.set()
            discard_runner(scenario)  # the late client may still be training on this runner's model
            for cid in client_ids[client_ids.index(client_id) :]:
                yield cid, TimeoutError("no reply within round_timeout_s")
            return


def train_share(
    *,
    scenario: Scenario,
    state: dict[str, torch.Tensor],
    request: ShareRequest,
    trained: dict[int, TrainedClient | BaseException] | None = None,
) -> ShareResult:
    """Train a share's clients from ``state`` and sum their prepared updates: first those
    that train in lockstep (:func:`lockstep_outcomes`; ``trained``: already trained with a
    message's other shares), then those that take one SGD step (together), then the others
    one by one; each group in client order; reports (and kept updates) in client order."""
    start_arrays = [value.detach().cpu().numpy() for value in state.values()]
    start_flat = flatten_state(state)
    rule = request.rule
    runner = runner_for(scenario)
    if trained is None:
        trained = lockstep_outcomes(scenario=scenario, state=state, requests=[request])
    lockstep = [cid for cid in request.client_ids if cid in trained]
    one_step = [cid for cid in _steady(scenario, request) if cid not in trained and runner.takes_one_step(cid)]
    alone = [cid for cid in request.client_ids if cid not in trained and cid not in one_step]
    total, weight, failed, answered = np.zeros_like(start_flat), 0.0, {}, {}
    common = dict(start=state, round_number=request.round_number, start_flat=start_flat, keep_arrays=rule.client_clips)
    outcomes = itertools.chain(
        ((cid, trained[cid]) for cid in lockstep),
        _together_outcomes(scenario, [request], one_step, lambda ids: runner.train_one_steps(client_ids=ids, **common)),
        _outcomes(scenario, state, request, start_flat, alone),
    )
    for client_id, outcome in outcomes:
        if isinstance(outcome, BaseException):
            failed[client_id] = _why(outcome)
            continue
        prepared = _prepare(outcome, start_arrays=start_arrays, start_flat=start_flat, rule=rule)
        client_weight = float(outcome.num_examples) if rule.by_examples else 1.0
        total += prepared * client_weight if rule.by_examples else prepared
        weight += client_weight
        report = ClientReport(
            client_id, outcome.num_examples, outcome.update_norm, outcome.train_loss, outcome.noise_std
        )
        answered[client_id] = (report, prepared if request.keep_updates else None)
    order = sorted(answered)
    updates = None
    if request.keep_updates:
        updates = np.stack([answered[c][1] for c in order]) if order else np.zeros((0, start_flat.shape[0]))
    return ShareResult(
        total=total, weight=weight, reports=[answered[c][0] for c in order], failed=failed, updates=updates
    )


def train_shares(
    *, scenario: Scenario, state: dict[str, torch.Tensor], requests: dict[int, ShareRequest]
) -> dict[int, ShareResult]:
    """Several shares of a round (one message may carry several): their lockstep clients
    trained together, then each share summed on its own, one after the other."""
    trained = lockstep_outcomes(scenario=scenario, state=state, requests=list(requests.values()))
    return {
        share: train_share(scenario=scenario, state=state, request=request, trained=trained)
        for share, request in requests.items()
    }


def _why(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return str(error)
    return " ".join(f"{type(error).__name__}: {error}".split())


def node_host() -> str | None:
    """The Ray node this process runs on (None outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - only a diagnostic
        return None
