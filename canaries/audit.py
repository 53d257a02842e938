"""The canary audit of one round (DESIGN.md, "The canary audit").

Works on a frozen copy of round r's global model, so its replays never change the model
and spend no privacy budget:

1. design pool: m mock clients train from the frozen model (on the nodes, alongside the
   round's cohort); updates clipped to C;
2. craft a canary (sample or update) against them;
3. the canary client's update: real local training on the canary sample (or the crafted
   direction scaled past the clip norm), clipped as its client would clip it;
4. test: many "without" aggregates (a cohort re-drawn from the round's cached trained
   updates, released through the strategy's own ``release`` with fresh noise: the same
   function that released the real round; without central DP, divided by each cohort's
   own weight as the server divides) and as many "with" aggregates, under the run's
   adjacency: add/remove (Poisson sampling) adds the canary client to the same cohort,
   replace-one (fixed cohorts) swaps it for a random member; statistic s = <v, U> / |c|
   for the canary's clipped update c = |c| v (the release projected on v, without
   materialising d-dimensional noise for every test);
5. estimate the empirical epsilon from the two score sets at the scenario's delta;
6. what-if: the same canary and cohorts released with each of ``audit.noise_multipliers``
   instead (only the replay noise changes), each with its estimate and its theory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedsim.canaries.craft import Canary, craft_sample_canary, craft_update_canary
from fedsim.canaries.design import DesignPool
from fedsim.canaries.estimators import EpsilonEstimate, empirical_epsilon
from fedsim.clients.training import train_client
from fedsim.config import Scenario
from fedsim.data.base import ClientData, FederatedDataset
from fedsim.errors import FedsimError
from fedsim.experiment import model_for, train_settings
from fedsim.params import flatten_state, unflatten_state
from fedsim.privacy import DpMechanism
from fedsim.records import WhatIfPoint
from fedsim.seeding import AUDIT, round_rng
from fedsim.strategies.aggregation import clip_updates
from fedsim.strategies.dp import Aggregator


def _estimate_summary(estimate: EpsilonEstimate) -> dict[str, Any]:
    out = {"epsilon": estimate.epsilon, "lower": estimate.lower, "upper": estimate.upper}
    if estimate.threshold is not None:
        out["threshold"] = estimate.threshold
    return out


@dataclass(frozen=True)
class Replay:
    """The canary test at one noise multiplier: raw scores and their estimates."""

    noise_multiplier: float
    epsilon_theory: float  # this round's release alone at this noise (a bound)
    scores_with: np.ndarray
    scores_without: np.ndarray
    estimates: dict[str, EpsilonEstimate]
    seed: int  # of the estimators (the threshold method's split, the bootstrap)

    def summary(self) -> dict[str, Any]:
        """JSON-able description (without the raw scores)."""
        gaussian, threshold = self.estimates.get("gaussian"), self.estimates.get("threshold")
        return WhatIfPoint(
            noise_multiplier=self.noise_multiplier,
            epsilon_theory=self.epsilon_theory,
            epsilon_empirical=gaussian.epsilon if gaussian else None,
            ci_low=gaussian.lower if gaussian else None,
            ci_high=gaussian.upper if gaussian else None,
            lower_bound=threshold.lower if threshold else None,
        ).as_dict()


@dataclass(frozen=True)
class AuditResult:
    """Everything one audited round measured (raw scores kept for recomputation)."""

    round: int
    canary: Canary
    adjacency: str
    contribution_norm: float  # |clip(u_c)|: the canary client's share of the sum
    clip_norm: float | None
    replay: Replay  # at the run's own noise
    what_if: tuple[Replay, ...] = ()

    @property
    def scores_with(self) -> np.ndarray:
        return self.replay.scores_with

    @property
    def scores_without(self) -> np.ndarray:
        return self.replay.scores_without

    @property
    def estimates(self) -> dict[str, EpsilonEstimate]:
        return self.replay.estimates

    def arrays(self) -> dict[str, np.ndarray]:
        """The raw scores, as the run store keeps them."""
        arrays = {"scores_with": self.scores_with, "scores_without": self.scores_without}
        if self.what_if:
            arrays["what_if_noise_multipliers"] = np.array([r.noise_multiplier for r in self.what_if])
            arrays["what_if_scores_with"] = np.stack([r.scores_with for r in self.what_if])
            arrays["what_if_scores_without"] = np.stack([r.scores_without for r in self.what_if])
        return arrays

    def summary(self) -> dict[str, Any]:
        """JSON-able description (without the raw scores)."""
        out: dict[str, Any] = {
            "round": self.round,
            "canary": self.canary.kind,
            "canary_health": self.canary.health,
            "loss_init": self.canary.loss_init,
            "loss_final": self.canary.loss_final,
            "gradient_norm": self.canary.gradient_norm,
            "crafting_steps": self.canary.steps,
            "label": self.canary.y,
            "adjacency": self.adjacency,
            "contribution_norm": self.contribution_norm,
            "clip_norm": self.clip_norm,
            "tests": int(len(self.scores_with)),
            "noise_multiplier": self.replay.noise_multiplier,
            "epsilon_theory": self.replay.epsilon_theory,
            "estimator_seed": self.replay.seed,
        }
        for name, estimate in self.estimates.items():
            out[name] = _estimate_summary(estimate)
        if self.what_if:
            out["what_if"] = [replay.summary() for replay in self.what_if]
        return out


class CanaryAuditor:
    """Audits rounds of one scenario with CANIFE canaries."""

    def __init__(self, *, scenario: Scenario, dataset: FederatedDataset, mechanism: DpMechanism) -> None:
        self.scenario = scenario
        self.dataset = dataset
        self.mechanism = mechanism
        self.config = scenario.audit
        self.design_ids = dataset.design_pool_ids()[: self.config.design_pool or 20]

    def should_audit(self, round_number: int) -> bool:
        """Round 1 and every k-th round."""
        return self.config.enabled and (round_number == 1 or round_number % self.config.every == 0)

    def audit(
        self,
        *,
        round_number: int,
        params: np.ndarray,
        template: dict[str, torch.Tensor],
        cohort_updates: np.ndarray,
        cohort_examples: np.ndarray,
        design_updates: np.ndarray,
        aggregator: Aggregator,
    ) -> AuditResult:
        """Audit round ``round_number`` from its frozen global model ``params``;
        ``cohort_updates`` (n, d) are the round's trained updates as they entered its sum
        (prepared by ``aggregator.rule``: clipped where it clips; not yet weighted),
        ``cohort_examples`` (n,) their clients' example counts, ``design_updates`` the
        design-pool users' (:attr:`design_ids`), trained from the same model alongside the
        cohort and clipped to the round's clip norm."""
        scenario, config = self.scenario, self.config
        rng = round_rng(seed=scenario.seed, stream=AUDIT, round_number=round_number)
        seed = int(rng.integers(2**31))
        start = unflatten_state(params.astype(np.float32), template=template)
        clip_norm = aggregator.clip_norm_now
        if not len(design_updates):
            raise FedsimError(f"round {round_number}: no design-pool user answered; the audit cannot craft a canary")
        design = DesignPool.from_rows(design_updates)
        try:
            canary, update = self._canary(start=start, params=params, design=design, clip_norm=clip_norm, seed=seed)
        finally:
            design.close()
        if clip_norm is not None:
            update = clip_updates(update[None], clip_norm=clip_norm)[0]  # as the canary's client clips
        return AuditResult(
            round=round_number,
            canary=canary,
            adjacency=self.mechanism.adjacency,
            contribution_norm=float(np.linalg.norm(update)),
            clip_norm=clip_norm,
            replay=self.replay(
                cohort_updates=cohort_updates,
                cohort_examples=cohort_examples,
                canary_update=update,
                aggregator=aggregator,
                rng=rng,
            ),
            what_if=tuple(
                self.replay(
                    cohort_updates=cohort_updates,
                    cohort_examples=cohort_examples,
                    canary_update=update,
                    aggregator=aggregator.with_noise_multiplier(noise_multiplier),
                    rng=rng,
                )
                for noise_multiplier in config.noise_multipliers
            ),
        )

    def replay(
        self,
        *,
        cohort_updates: np.ndarray,
        canary_update: np.ndarray,
        aggregator: Aggregator,
        rng: np.random.Generator,
        cohort_examples: np.ndarray | None = None,
    ) -> Replay:
        """The canary test of one round through ``aggregator.replay`` (the strategy's own
        release): ``audit.tests`` "without" and "with" releases over cohorts re-drawn from
        ``cohort_updates`` (n, d) (``cohort_examples``: their example counts, default 1
        each; the canary client holds one sample), scored s = <v, U> / |c| for the canary
        client's (clipped) update c = |c| v."""
        contribution = float(np.linalg.norm(canary_update))
        direction = canary_update / max(contribution, 1e-12)
        pool = np.vstack([cohort_updates, canary_update[None]])  # the canary client is the last row
        examples = np.append(np.ones(len(cohort_updates)) if cohort_examples is None else cohort_examples, 1.0)
        without, with_ = (
            aggregator.replay(pool, examples=examples, include=include, direction=direction, rng=rng) / contribution
            for include in self._cohorts(len(cohort_updates), rng)
        )
        # the run store keeps float32 scores: estimate from exactly what it keeps
        with_, without = with_.astype(np.float32).astype(np.float64), without.astype(np.float32).astype(np.float64)
        seed = int(rng.integers(2**31))  # the threshold split and the bootstrap, kept in the summary
        estimates = {
            method: empirical_epsilon(
                with_, without, delta=self.mechanism.delta, confidence=self.config.confidence, method=method, seed=seed
            )
            for method in self.config.estimators
        }
        z = aggregator.noise_multiplier
        theory = self.mechanism.round_epsilon(z) if self.mechanism.central else math.inf
        return Replay(z, theory, with_, without, estimates, seed)

    def _cohorts(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Boolean (tests, n + 1) matrices of the "without" and "with" cohorts over the
        round's n updates and the canary client (the last column), under the run's
        adjacency: add/remove re-draws cohorts with the run's rate and adds the canary
        client; replace-one keeps the fixed cohort and swaps a random member for it."""
        tests = self.config.tests
        without = np.zeros((tests, n + 1), dtype=bool)
        if self.mechanism.adjacency == "add_or_remove_one":
            without[:, :n] = rng.random((tests, n)) < min(1.0, self.scenario.clients_per_round / max(n, 1))
            with_ = without.copy()
        else:
            without[:, :n] = True
            with_ = without.copy()
            if n:
                with_[np.arange(tests), rng.integers(n, size=tests)] = False
        with_[:, -1] = True
        return without, with_

    def _canary(
        self, *, start, params, design: DesignPool, clip_norm: float | None, seed: int
    ) -> tuple[Canary, np.ndarray]:
        """Craft the canary and return it with its client's (unclipped) update."""
        scenario, config = self.scenario, self.config
        clip = clip_norm if clip_norm is not None else scenario.dp.clip_norm
        if config.canary == "update":
            canary = craft_update_canary(
                design=design, iterations=config.iterations, lr=config.lr, batch_size=config.design_batch, seed=seed
            )
            return canary, canary.direction * 2.0 * clip  # scaled past the clip norm
        model = model_for(scenario, self.dataset)
        model.load_state_dict(start)
        label = int(np.random.default_rng(seed).integers(self.dataset.num_classes))
        canary = craft_sample_canary(
            model=model,
            design=design,
            input_shape=self.dataset.input_shape,
            input_kind=self.dataset.input_kind,
            label=label,
            clip_norm=clip,
            norm_constant=config.norm_constant or clip / scenario.client.lr,
            iterations=config.iterations,
            lr=config.lr,
            batch_size=config.design_batch,
            seed=seed,
            min_improvement=config.min_improvement,
        )
        # the canary client trains on its one canary sample like any client would
        model.load_state_dict(start)
        x, y = canary.x[None], torch.tensor([canary.y])
        data = ClientData(x_train=x, y_train=y, x_test=x[:0], y_test=y[:0])
        train_client(model=model, data=data, settings=train_settings(scenario), seed=seed)
        return canary, flatten_state(model.state_dict()) - params
