"""The canary audit of one round (DESIGN.md, "The canary audit").

Works on a frozen copy of round r's global model, so its replays never change the model
and spend no privacy budget:

1. design pool: m mock clients train from the frozen model; updates clipped to C;
2. craft a canary (sample or update) against them;
3. the canary client's update: real local training on the canary sample (or the crafted
   direction scaled past the clip norm), clipped as its client would clip it;
4. test: many "without" aggregates (a cohort re-drawn from the round's cached trained
   updates, released through the strategy's own clip-sum-noise code with fresh noise)
   and "with" aggregates (the same cohort plus the canary client: add/remove adjacency,
   as the accountant assumes); statistic s = <v, U> / |c| for the canary's clipped
   update c = |c| v, computed by the strategy's ``release_scores`` (the projection of
   its release, without materialising d-dimensional noise for every test);
5. estimate the empirical epsilon from the two score sets at the scenario's delta.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fedsim.canaries.craft import Canary, craft_sample_canary, craft_update_canary
from fedsim.canaries.design import DesignPool
from fedsim.canaries.estimators import EpsilonEstimate, empirical_epsilon
from fedsim.clients.training import train_client
from fedsim.config import Scenario
from fedsim.data.base import ClientData, FederatedDataset
from fedsim.experiment import model_for, train_settings
from fedsim.params import flatten_state, unflatten_state
from fedsim.seeding import AUDIT, round_rng
from fedsim.strategies.aggregation import clip_updates
from fedsim.strategies.dp import Aggregator


@dataclass(frozen=True)
class AuditResult:
    """Everything one attacked round measured (raw scores kept for recomputation)."""

    round: int
    canary: Canary
    scores_with: np.ndarray
    scores_without: np.ndarray
    contribution_norm: float  # |clip(u_c)|: the canary client's share of the sum
    clip_norm: float | None
    estimates: dict[str, EpsilonEstimate] = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-able description (without the raw scores)."""
        out = {
            "round": self.round,
            "canary": self.canary.kind,
            "canary_health": self.canary.health,
            "loss_init": self.canary.loss_init,
            "loss_final": self.canary.loss_final,
            "gradient_norm": self.canary.gradient_norm,
            "label": self.canary.y,
            "contribution_norm": self.contribution_norm,
            "clip_norm": self.clip_norm,
            "tests": int(len(self.scores_with)),
        }
        for name, estimate in self.estimates.items():
            out[name] = {"epsilon": estimate.epsilon, "lower": estimate.lower, "upper": estimate.upper}
        return out


class CanaryAuditor:
    """Audits rounds of one scenario with CANIFE canaries."""

    def __init__(self, *, scenario: Scenario, dataset: FederatedDataset) -> None:
        self.scenario = scenario
        self.dataset = dataset
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
        aggregator: Aggregator,
    ) -> AuditResult:
        """Audit round ``round_number`` from its frozen global model ``params``."""
        scenario, config = self.scenario, self.config
        rng = round_rng(seed=scenario.seed, stream=AUDIT, round_number=round_number)
        seed = int(rng.integers(2**31))
        start = unflatten_state(params.astype(np.float32), template=template)
        clip_norm = aggregator.clip_norm_now
        design = DesignPool.train(
            scenario=scenario, start=start, client_ids=self.design_ids, round_number=round_number, clip_norm=clip_norm
        )
        try:
            canary, update = self._canary(start=start, params=params, design=design, clip_norm=clip_norm, seed=seed)
        finally:
            design.close()
        if clip_norm is not None:
            update = clip_updates(update[None], clip_norm=clip_norm)[0]  # as the canary's client clips
        contribution = float(np.linalg.norm(update))
        direction = update / max(contribution, 1e-12)
        scores_with, scores_without = self._test(
            cohort_updates=cohort_updates,
            canary_update=update,
            direction=direction,
            scale=contribution,
            aggregator=aggregator,
            rng=rng,
        )
        estimates = {
            method: empirical_epsilon(
                scores_with, scores_without, delta=scenario.dp.delta, confidence=config.confidence, method=method
            )
            for method in config.estimators
        }
        return AuditResult(round_number, canary, scores_with, scores_without, contribution, clip_norm, estimates)

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
        )
        # the canary client trains on its one canary sample like any client would
        model.load_state_dict(start)
        x, y = canary.x[None], torch.tensor([canary.y])
        data = ClientData(x_train=x, y_train=y, x_test=x[:0], y_test=y[:0])
        train_client(model=model, data=data, settings=train_settings(scenario), seed=seed)
        return canary, flatten_state(model.state_dict()) - params

    def _test(
        self, *, cohort_updates, canary_update, direction, scale, aggregator: Aggregator, rng
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores of many aggregates without and with the canary client (fresh noise each)."""
        tests = self.config.tests
        pool = np.vstack([cohort_updates, canary_update[None]])  # the canary client is the last row
        rate = min(1.0, self.scenario.clients_per_round / max(len(cohort_updates), 1))
        include = np.zeros((tests, len(pool)), dtype=bool)
        include[:, :-1] = rng.random((tests, len(cohort_updates))) < rate  # re-drawn cohorts
        scores_without = aggregator.release_scores(pool, include=include, direction=direction, rng=rng)
        include[:, -1] = True  # the same cohorts plus the canary client, fresh noise
        scores_with = aggregator.release_scores(pool, include=include, direction=direction, rng=rng)
        # the run store keeps float32 scores: estimate from exactly what it keeps
        return (
            (scores_with / scale).astype(np.float32).astype(np.float64),
            (scores_without / scale).astype(np.float32).astype(np.float64),
        )
