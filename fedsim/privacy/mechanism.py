"""The run's DP mechanism: one object, built from the scenario, that answers every
question the loop, the server, the clients, the accountant and the audit ask about DP.

``dp.mode`` is interpreted here and nowhere else:

| mode            | unit   | who clips         | noise on                       |
| --------------- | ------ | ----------------- | ------------------------------ |
| none            | -      | nobody            | nothing                        |
| server_fixed    | user   | the server, C     | the clipped sum, z C           |
| client_fixed    | user   | each client, C    | the clipped sum, z C           |
| server_adaptive | user   | the server, C_t   | the clipped sum and the count  |
| local_dpsgd     | sample | Opacus, per sample| each local step (Opacus)       |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dp_accounting

from fedsim.config import DpMode, Sampling
from fedsim.privacy.events import (
    AccountantName,
    Adjacency,
    adjacency_of,
    gaussian_epsilon,
    gaussian_noise_for_epsilon,
    release_event,
    round_event,
    sensitivity,
)

if TYPE_CHECKING:
    from fedsim.config import Scenario


# What rounds.csv holds, by what it is (README: "What the numbers are").
BOUNDS = ("epsilon_round_theory", "epsilon_cumulative_theory", "epsilon_cumulative_theory_rdp")
ESTIMATES = ("epsilon_round_empirical", "epsilon_round_empirical_ci_low", "epsilon_round_empirical_ci_high")
AUDIT_BOUNDS = ("epsilon_round_empirical_lower_bound",)
EXTRAPOLATIONS = ("epsilon_cumulative_empirical_extrapolated",)
OUTSIDE_RELEASE = (
    "rounds.csv: clients, failures, train_loss, clip_fraction, eval_loss, eval_accuracy (trusted-server "
    "diagnostics, not noised)",
    "audits/ (the audit replays the cohort's un-noised clipped updates; its scores are the trusted "
    "auditor's, not a release)",
)


@dataclass(frozen=True, kw_only=True)
class DpMechanism:
    """What DP a run applies and how it is accounted.

    Attributes:
        mode: The scenario's ``dp.mode``.
        noise_multiplier: z: the noise std over the clip norm (per release, or per step).
        clip_norm: C (the initial one under adaptive clipping).
        delta: The one delta of every epsilon of the run.
        sampling: How clients join a round ("poisson" or "fixed").
        population: Number of clients.
        expected_cohort: m = q N, the divisor of the noisy sum.
    """

    mode: DpMode
    noise_multiplier: float
    clip_norm: float
    delta: float
    sampling: Sampling
    population: int
    expected_cohort: int

    @classmethod
    def from_scenario(cls, scenario: Scenario) -> DpMechanism:
        """The mechanism a scenario describes."""
        dp = scenario.dp
        return cls(
            mode=dp.mode,
            noise_multiplier=dp.noise_multiplier,
            clip_norm=dp.clip_norm,
            delta=dp.delta,
            sampling=scenario.sampling,
            population=scenario.data.num_clients,
            expected_cohort=scenario.clients_per_round,
        )

    # --- what the mode means ---------------------------------------------------------

    @property
    def private(self) -> bool:
        """Whether any DP is applied."""
        return self.mode != "none"

    @property
    def local(self) -> bool:
        """Sample-level DP-SGD inside each client (Opacus); the server adds nothing."""
        return self.mode == "local_dpsgd"

    @property
    def central(self) -> bool:
        """User-level DP-FedAvg: clipped updates, noise on their sum."""
        return self.private and not self.local

    @property
    def client_clips(self) -> bool:
        """Clients clip their own update (Flower's fixedclipping_mod); the server only adds noise."""
        return self.mode == "client_fixed"

    @property
    def server_clips(self) -> bool:
        """The server clips each update before the sum."""
        return self.mode in ("server_fixed", "server_adaptive")

    @property
    def adaptive(self) -> bool:
        """The clip norm follows a quantile of the update norms (Andrew et al. 2021)."""
        return self.mode == "server_adaptive"

    @property
    def uniform_weights(self) -> bool:
        """Every update counts the same: example counts are private (DP modes) and unweighted."""
        return self.private

    @property
    def unit(self) -> str:
        """Whose privacy the epsilon protects: 'user', 'sample', or 'none'."""
        return "sample" if self.local else "user" if self.private else "none"

    # --- accounting --------------------------------------------------------------------

    @property
    def adjacency(self) -> Adjacency:
        """Add/remove one for Poisson sampling (and local DP-SGD), replace-one for fixed cohorts."""
        return "add_or_remove_one" if self.local else adjacency_of(self.sampling)

    @property
    def accountant(self) -> AccountantName:
        """The headline accountant: PLD where it applies, RDP for replace-one."""
        return "pld" if self.adjacency == "add_or_remove_one" else "rdp"

    @property
    def sampling_rate(self) -> float:
        """q = m / N."""
        return self.expected_cohort / self.population

    def release_event(self, noise_multiplier: float | None = None) -> dp_accounting.DpEvent:
        """One round's release alone (no subsampling), under the run's adjacency."""
        z = self.noise_multiplier if noise_multiplier is None else noise_multiplier
        return release_event(noise_multiplier=z, adjacency=self.adjacency)

    def round_event(self, noise_multiplier: float | None = None) -> dp_accounting.DpEvent:
        """One central round as sampled: what the cumulative accountant composes."""
        z = self.noise_multiplier if noise_multiplier is None else noise_multiplier
        return round_event(
            noise_multiplier=z, sampling=self.sampling, sampling_rate=self.sampling_rate, population=self.population
        )

    def round_epsilon(self, noise_multiplier: float | None = None) -> float:
        """Exact epsilon at delta of one central round's release alone (a bound)."""
        z = self.noise_multiplier if noise_multiplier is None else noise_multiplier
        return gaussian_epsilon(noise_multiplier=z / sensitivity(self.adjacency), delta=self.delta)

    def noise_multiplier_for_round_epsilon(self, epsilon: float) -> float:
        """The z whose single release has ``epsilon`` under the run's adjacency."""
        return sensitivity(self.adjacency) * gaussian_noise_for_epsilon(epsilon=epsilon, delta=self.delta)

    def describe(self) -> dict[str, Any]:
        """The run's privacy, as the manifest records it."""
        return {
            "mode": self.mode,
            "unit": self.unit,
            "adjacency": self.adjacency,
            "accountant": self.accountant,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": self.clip_norm,
            "bounds": list(BOUNDS),
            "audit_bounds": list(AUDIT_BOUNDS),
            "estimates": list(ESTIMATES),
            "extrapolations": list(EXTRAPOLATIONS),
            "covered_by_epsilon": (
                "the model updates the server applies (each round's noisy clipped sum; the server optimiser is "
                "post-processing)"
                if self.central
                else "each client's trained weights (Opacus DP-SGD per sample)"
                if self.local
                else "nothing (dp.mode none)"
            ),
            "outside_release": list(OUTSIDE_RELEASE),
        }
