"""fedsim's own round loop, independent of how clients are reached.

Flower's ``Strategy.start()`` runs every round in one call, so it cannot record a round
before the next starts, audit with the round's updates, or resume. This loop does, round
by round: sample the cohort -> train (through a transport; failed and late clients are
counted; on audited rounds the adversary's design-pool users train alongside) -> DP
aggregation -> server optimiser step -> accountant -> federated evaluation -> one
record, which the run store persists with a checkpoint. The audit runs on the round's
frozen model in a helper thread while the round is released and the next one trains;
a round's record waits for its audit, and rounds are persisted in order by a helper
thread while the next round's clients train. Everything a
round depends on is either keyed by (seed, stream, round) in fedsim/seeding.py or in
:meth:`RoundLoop.state_dict`, so a run resumes exactly.
"""

from __future__ import annotations

import copy
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from fedsim.clients.node import ClientReport, CohortReplies
from fedsim.config import Scenario
from fedsim.errors import FedsimError, ScenarioError
from fedsim.experiment import dataset_for, model_for
from fedsim.params import flatten_state, unflatten_state
from fedsim.privacy import DpMechanism, EmpiricalTracker, TheoryTracker
from fedsim.records import RoundRecord
from fedsim.seeding import EVALUATION, NOISE, round_rng
from fedsim.store import RunStore
from fedsim.strategies import build_aggregator, build_server_optimizer, sample_cohort
from fedsim.strategies.aggregation import ContributionRule

if TYPE_CHECKING:
    from fedsim.canaries.audit import AuditResult

RoundCallback = Callable[[RoundRecord], None]
T = TypeVar("T")


def _in_background(work: Callable[[], T], *, name: str) -> Callable[[], T]:
    """Start ``work`` in a daemon thread; the returned function waits for its result (and
    raises what it raised)."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            outcome.append((False, error))

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()

    def result() -> T:
        thread.join()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    return result


class _RoundHelpers:
    """The helper threads one round starts (its accountant step, its audit). If the round
    fails they are waited for, what they raise ignored, before the failure goes on: no
    thread of an unrecorded round keeps changing the loop's state or using the CPU."""

    def __init__(self) -> None:
        self._results: list[Callable[[], Any]] = []

    def start(self, work: Callable[[], T], *, name: str) -> Callable[[], T]:
        result = _in_background(work, name=name)
        self._results.append(result)
        return result

    def __enter__(self) -> _RoundHelpers:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is None:
            return
        for result in self._results:
            try:
                result()
            except BaseException:  # noqa: BLE001, S110 - the round is already failing
                pass


@dataclass
class RunOutcome:
    """What the server thread hands back to the driver (run_simulation returns None)."""

    rows: list[RoundRecord] = field(default_factory=list)
    error: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)  # set by the driver on interrupt
    finished: threading.Event = field(default_factory=threading.Event)  # set when the server loop ends


@dataclass(frozen=True)
class RoundResult:
    """What one round produced: its record, its audit when the round was audited, and the
    loop's state after it when a checkpoint is due."""

    record: RoundRecord
    audit: AuditResult | None = None
    checkpoint: dict[str, Any] | None = None


@dataclass(frozen=True)
class _TrainedRound:
    """A round trained, released, accounted and evaluated, whose record still waits for
    its audit (running in a helper thread) and the empirical extrapolation."""

    round_number: int
    columns: dict[str, Any]
    seconds: float  # its own wall time so far
    audit: Callable[[], AuditResult] | None  # waits for the audit thread's result
    checkpoint: dict[str, Any] | None  # the loop's state after the round (the empirical tracker's aside)


class Transport(Protocol):
    """How the round loop reaches clients: Flower's Grid, or in-process calls."""

    def train(
        self,
        *,
        round_number: int,
        state: dict[str, Any],
        cohort: np.ndarray,
        rule: ContributionRule,
        keep_updates: bool,
        timeout_s: float | None,
        design_ids: list[int] = (),
    ) -> CohortReplies:
        """Train each client of the cohort from ``state``, prepare each update by ``rule``
        and sum them (``keep_updates``: each prepared update too); clients that raise, or
        have not answered after ``timeout_s`` seconds, are reported as failed. The audit's
        ``design_ids`` (design-pool users) train alongside: their updates come back
        clipped as the server clips, in ``CohortReplies.design``."""

    def evaluate(self, *, round_number: int, state: dict[str, Any], client_ids: np.ndarray) -> tuple[float, int, int]:
        """Summed loss, correct predictions and count over the clients' held-out samples."""


class RoundLoop:
    """Runs the rounds of one scenario through a transport, recording each round."""

    def __init__(self, *, scenario: Scenario, on_round: RoundCallback | None = None) -> None:
        self.scenario = scenario
        self.on_round = on_round
        self.store: RunStore | None = None  # attached by the runner once everything validated
        self.rounds_done = 0
        self.dataset = dataset_for(scenario)
        model = model_for(scenario, self.dataset)
        self.template = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.params = flatten_state(self.template).astype(np.float32).astype(np.float64)
        self.mechanism = DpMechanism.from_scenario(scenario)
        self.aggregator = build_aggregator(mechanism=self.mechanism, adaptive=scenario.dp.adaptive)
        self.optimizer = build_server_optimizer(scenario=scenario)
        self.theory = TheoryTracker(
            mechanism=self.mechanism,
            batch_size=scenario.client.batch_size,
            epochs=scenario.client.epochs,
            client_sizes=(
                (self.dataset.num_train_samples(c) for c in range(self.dataset.num_clients))
                if self.mechanism.local
                else ()
            ),
        )
        self.auditor = None
        self.empirical = None
        if scenario.audit.enabled:
            from fedsim.canaries.audit import CanaryAuditor  # only audited runs pay for it

            self.auditor = CanaryAuditor(scenario=scenario, dataset=self.dataset, mechanism=self.mechanism)
            self.empirical = EmpiricalTracker(mechanism=self.mechanism)
            for noise_multiplier in scenario.audit.noise_multipliers:  # refuse impossible what-ifs now
                try:
                    self.aggregator.with_noise_multiplier(noise_multiplier)
                except ValueError as error:
                    raise ScenarioError(f"scenario key 'audit.noise_multipliers': {error}") from None

    def state(self) -> dict[str, Any]:
        """The global model as a state dict."""
        return unflatten_state(self.params.astype(np.float32), template=self.template)

    def _evaluation_clients(self, round_number: int) -> np.ndarray:
        population = self.dataset.num_clients
        wanted = self.scenario.evaluation.clients
        if wanted is None or wanted >= population:
            return np.arange(population)
        rng = round_rng(seed=self.scenario.seed, stream=EVALUATION, round_number=round_number)
        return np.sort(rng.choice(population, size=wanted, replace=False))

    def run_round(self, transport: Transport, round_number: int) -> RoundResult:
        """One round, the rounds before it done: sample, train, aggregate with DP, step,
        account, evaluate, audit."""
        return self._complete(self._train_round(transport, round_number, checkpoint=False))

    def _train_round(
        self, transport: Transport, round_number: int, *, checkpoint: bool, settle: Callable[[], None] = lambda: None
    ) -> _TrainedRound:
        """A round up to its record, its audit left running in a helper thread. ``settle``
        is called once the clients have answered: it waits until the rounds before are
        persisted, so this round's audit starts after the previous one has ended."""
        with _RoundHelpers() as helpers:  # waited for if the round fails
            scenario = self.scenario
            started = time.perf_counter()
            cohort = sample_cohort(
                population=self.dataset.num_clients,
                clients_per_round=scenario.clients_per_round,
                method=scenario.sampling,
                seed=scenario.seed,
                round_number=round_number,
            )
            audited = self.auditor is not None and self.auditor.should_audit(round_number)
            dim = self.params.shape[0]
            design_ids = self.auditor.design_ids if audited else []
            # the round's bounds depend only on its noise: composed while the clients train
            theory = helpers.start(
                functools.partial(self.theory.step, noise_multiplier=self.aggregator.noise_multiplier),
                name=f"fedsim-accountant-{round_number}",
            )
            answered = (
                transport.train(
                    round_number=round_number,
                    state=self.state(),
                    cohort=cohort,
                    rule=self.aggregator.rule,
                    keep_updates=audited,
                    timeout_s=scenario.round_timeout_s,
                    design_ids=design_ids,
                )
                if len(cohort) or design_ids
                else CohortReplies(total=np.zeros(dim), weight=0.0, reports=[])
            )
            self._check_replies(round_number, cohort, answered)
            settle()
            reports = answered.reports
            audited_round = None
            if audited and (answered.design is None or not len(answered.design)):
                audited = False  # no design-pool user answered (they crashed): no canary, the round goes on unaudited
            if audited:  # in a helper thread, while the round is released and the next one trains
                audited_round = helpers.start(
                    functools.partial(
                        self.auditor.audit,
                        round_number=round_number,
                        params=self.params,  # the frozen global model: the step below makes a new array
                        template=self.template,
                        cohort_updates=answered.updates,
                        cohort_examples=np.array([report.num_examples for report in reports], dtype=np.float64),
                        design_updates=answered.design,
                        aggregator=copy.deepcopy(self.aggregator),  # as it releases this round
                    ),
                    name=f"fedsim-audit-{round_number}",
                )
            rng = round_rng(seed=scenario.seed, stream=NOISE, round_number=round_number)
            aggregate = self.aggregator.aggregate(
                total=answered.total,
                weight=answered.weight,
                norms=np.array([report.update_norm for report in reports]),
                rng=rng,
            )
            # clients receive float32 weights: keep the server's copy exactly what it sends
            new_params = self.optimizer.step(params=self.params, mean_update=aggregate.mean_update)
            self.params = new_params.astype(np.float32).astype(np.float64)
            epsilon = theory()
            eval_loss = eval_accuracy = None
            if round_number % scenario.evaluation.every == 0 or round_number == scenario.rounds:
                loss_sum, correct, count = transport.evaluate(
                    round_number=round_number, state=self.state(), client_ids=self._evaluation_clients(round_number)
                )
                if count:
                    eval_loss, eval_accuracy = loss_sum / count, correct / count
            columns: dict[str, Any] = {
                "round": round_number,
                "clients": len(cohort),
                "failures": len(answered.failed),
                "train_loss": float(np.mean([r.train_loss for r in reports])) if reports else None,
                "eval_loss": eval_loss,
                "eval_accuracy": eval_accuracy,
                "clip_fraction": aggregate.clip_fraction,
                "clip_norm": aggregate.clip_norm,
                "noise_std": self._noise_std(aggregate.noise_std, reports),
                "epsilon_round_theory": epsilon.round,
                "epsilon_cumulative_theory": epsilon.cumulative,
                "epsilon_cumulative_theory_rdp": epsilon.cumulative_rdp,
            }
            return _TrainedRound(
                round_number=round_number,
                columns=columns,
                seconds=time.perf_counter() - started,
                audit=audited_round,
                checkpoint=self._model_state(round_number) if checkpoint else None,
            )

    def _complete(self, trained: _TrainedRound) -> RoundResult:
        """The round's record once its audit is done; the rounds before it must be complete."""
        started = time.perf_counter()
        audit = trained.audit() if trained.audit is not None else None
        columns, checkpoint = trained.columns, trained.checkpoint
        if self.empirical is not None:
            columns = {**columns, **self._empirical_columns(audit)}
            if checkpoint is not None:
                checkpoint = {**checkpoint, "empirical": self.empirical.state_dict()}
        self.rounds_done = trained.round_number
        seconds = round(trained.seconds + time.perf_counter() - started, 4)
        return RoundResult(RoundRecord(**columns, seconds=seconds), audit, checkpoint)

    def _check_replies(self, round_number: int, cohort: np.ndarray, answered: CohortReplies) -> None:
        """Go on with the replies that came, unless fewer than ``min_replies`` of the cohort
        answered. The accounting stays as sampled: a failed client's participation counts,
        and the noise is still divided by the expected cohort."""
        needed = self.scenario.min_replies * len(cohort)
        if len(answered.reports) < needed:
            client_id, why = next(iter(answered.failed.items()), (None, "no reply"))
            raise FedsimError(
                f"round {round_number}: only {len(answered.reports)} of {len(cohort)} sampled clients answered "
                f"(min_replies {self.scenario.min_replies:g}); client {client_id}: {' '.join(why.split())[:300]}; "
                "earlier rounds are kept in the run folder, rerun with --verbose for details"
            )

    def _empirical_columns(self, audit) -> dict[str, Any]:
        """Audit columns of rounds.csv: the gaussian estimate, the threshold method's
        Clopper-Pearson bounds, the cumulative empirical epsilon and canary health."""
        columns: dict[str, Any] = {}
        estimate = None
        if audit is not None:
            gaussian = audit.estimates.get("gaussian")
            threshold = audit.estimates.get("threshold")
            estimate = gaussian.epsilon if gaussian is not None else threshold.epsilon
            columns = {
                "epsilon_round_empirical": estimate,
                "epsilon_round_empirical_ci_low": gaussian.lower if gaussian is not None else None,
                "epsilon_round_empirical_ci_high": gaussian.upper if gaussian is not None else None,
                "epsilon_round_empirical_lower_bound": threshold.lower if threshold is not None else None,
                "canary_health": audit.canary.health,
            }
        columns["epsilon_cumulative_empirical_extrapolated"] = self.empirical.step(round_epsilon=estimate)
        return columns

    def run(self, transport: Transport, outcome: RunOutcome) -> None:
        """The rounds not yet done, each persisted (record, audit, checkpoint) in order by
        a helper thread as soon as it is released and its audit done, while the next
        round trains. That round's clients' answers wait for it, and so does this method
        before it returns or raises (a driver that leaves at once on an interrupt, as the
        Flower engine's does, can leave the round in flight unwritten)."""
        in_flight: Callable[[], None] | None = None  # waits until the round in flight is persisted

        def settle() -> None:
            nonlocal in_flight
            if in_flight is not None:
                in_flight()  # an interrupt while waiting leaves it in flight, to be waited for again
                in_flight = None

        try:
            for round_number in range(self.rounds_done + 1, self.scenario.rounds + 1):
                if outcome.stop.is_set():
                    break
                trained = self._train_round(
                    transport, round_number, checkpoint=self._checkpoint_due(round_number), settle=settle
                )
                in_flight = _in_background(
                    lambda trained=trained: self._persist(self._complete(trained), outcome),
                    name=f"fedsim-persist-{round_number}",
                )
            settle()
        except BaseException as error:
            try:
                settle()  # the round in flight is kept
            except BaseException as late:  # noqa: BLE001 - reported with the error that stopped the run
                if late is not error:
                    error.add_note(f"the round before was not kept either: {type(late).__name__}: {late}")
            raise

    def _persist(self, result: RoundResult, outcome: RunOutcome) -> None:
        if self.store is not None:
            self.store.persist(record=result.record, audit=result.audit, checkpoint=result.checkpoint)
        outcome.rows.append(result.record)
        if self.on_round is not None:
            self.on_round(result.record)

    def _checkpoint_due(self, round_number: int) -> bool:
        return round_number % self.scenario.checkpoint.every == 0 or round_number == self.scenario.rounds

    def state_dict(self) -> dict[str, Any]:
        """Everything the next round depends on that is not keyed by (seed, round)."""
        state = self._model_state(self.rounds_done)
        if self.empirical is not None:
            state["empirical"] = self.empirical.state_dict()
        return state

    def _model_state(self, round_number: int) -> dict[str, Any]:
        """:meth:`state_dict` after ``round_number`` without the empirical tracker's (which
        steps when the round's audit is done); every value a copy or an array the next
        round replaces rather than changes."""
        return {
            "round": round_number,
            "params": self.params.astype(np.float32),
            "optimizer": self.optimizer.state_dict(),
            "aggregator": self.aggregator.state_dict(),
            "theory": self.theory.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (a resumed run)."""
        params = np.asarray(state["params"], dtype=np.float64)
        if params.shape != self.params.shape:
            raise FedsimError(
                f"the checkpoint holds {params.size} parameters, the scenario's model {self.params.size}; "
                "the run folder's scenario.yaml was changed after the run started"
            )
        self.params = params
        self.rounds_done = int(state["round"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.aggregator.load_state_dict(state["aggregator"])
        self.theory.load_state_dict(state["theory"])
        if self.empirical is not None:
            self.empirical.load_state_dict(state["empirical"])

    def _noise_std(self, central_std: float, reports: list[ClientReport]) -> float | None:
        """Noise std on the averaged update; for local DP-SGD, the mean over the round's
        clients of the std Opacus added to each step's mean gradient."""
        if not self.mechanism.local:
            return central_std
        stds = [report.noise_std for report in reports if report.noise_std is not None]
        return float(np.mean(stds)) if stds else None
