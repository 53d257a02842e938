"""A run's epsilons round by round: the theoretical bounds and the audit's extrapolation.

:class:`TheoryTracker` composes each round's event (from the run's :class:`DpMechanism`)
and reports the per-round and cumulative bounds. :class:`EmpiricalTracker` composes the
audit's per-round estimates the same way, as an extrapolation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from fedsim.privacy.accountant import LocalDpsgdAccountant, RoundAccountant
from fedsim.privacy.events import EXTRAPOLATION_PLD_DISCRETIZATION
from fedsim.privacy.mechanism import DpMechanism


@dataclass(frozen=True)
class TheoryEpsilon:
    """Theoretical epsilons (upper bounds) after one round."""

    round: float  # this round alone, no subsampling (what the canary audit measures)
    cumulative: float  # all rounds so far with the run's sampling (headline accountant)
    cumulative_rdp: float  # the same with the RDP accountant, for comparability


def _round_accountant(mechanism: DpMechanism, **options: float) -> RoundAccountant:
    return RoundAccountant(
        delta=mechanism.delta,
        sampling=mechanism.sampling,
        population=mechanism.population,
        cohort=mechanism.expected_cohort,
        **options,
    )


class TheoryTracker:
    """Composes each round's DP event and reports epsilons at the run's delta.

    Central DP (user level): the release's Gaussian, sampled as the run samples, under the
    mechanism's adjacency. Local DP-SGD (sample level): the worst client size of the
    population (``client_sizes``), composed over all rounds without client-sampling
    amplification (:class:`LocalDpsgdAccountant`).
    """

    def __init__(
        self, *, mechanism: DpMechanism, batch_size: int = 1, epochs: int = 1, client_sizes: Iterable[int] = ()
    ) -> None:
        self.mechanism = mechanism
        self.accountant = _round_accountant(mechanism)
        self.local = (
            LocalDpsgdAccountant(
                noise_multiplier=mechanism.noise_multiplier,
                delta=mechanism.delta,
                batch_size=batch_size,
                epochs=epochs,
                client_sizes=client_sizes,
            )
            if mechanism.local
            else None
        )
        self._local_round: float | None = None

    def step(self, *, noise_multiplier: float) -> TheoryEpsilon:
        """Account one more round released with ``noise_multiplier``."""
        self.accountant.step(noise_multiplier=noise_multiplier)
        if not self.mechanism.private:
            return TheoryEpsilon(math.inf, math.inf, math.inf)
        if self.local is not None:
            rounds = self.accountant.rounds
            if self._local_round is None:
                self._local_round = self.local.epsilon(rounds=1)
            return TheoryEpsilon(
                round=self._local_round,
                cumulative=self.local.epsilon(rounds=rounds),
                cumulative_rdp=self.local.epsilon(rounds=rounds, accountant="rdp"),
            )
        return TheoryEpsilon(
            round=self.mechanism.round_epsilon(noise_multiplier),
            cumulative=self.accountant.epsilon(accountant=self.mechanism.accountant),
            cumulative_rdp=self.accountant.epsilon(accountant="rdp"),
        )

    def state_dict(self) -> dict:
        """JSON-able state (the rounds composed so far)."""
        return self.accountant.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restores what :meth:`state_dict` returned."""
        self.accountant.load_state_dict(state)


class EmpiricalTracker:
    """Cumulative *empirical* epsilon, an extrapolation: each per-round estimate becomes the
    noise multiplier whose single release has that epsilon under the run's adjacency, and
    those are composed over rounds with the run's sampling, as the theoretical line is.
    Rounds without an audit reuse the latest estimate. Where an estimate is so large that
    its noise multiplier falls below PLD's working range, RDP composes instead; beyond
    1,000 per round the audit found no privacy and the result is inf. Its PLDs use the
    coarser EXTRAPOLATION_PLD_DISCRETIZATION (each audited round brings a new level)."""

    PLD_MIN_NOISE = 0.25
    NO_PRIVACY_EPSILON = 1000.0

    def __init__(self, *, mechanism: DpMechanism) -> None:
        self.mechanism = mechanism
        self.accountant = _round_accountant(mechanism, pld_discretization=EXTRAPOLATION_PLD_DISCRETIZATION)
        self.noise_multiplier: float | None = None

    def step(self, *, round_epsilon: float | None) -> float | None:
        """Account one round; ``round_epsilon`` is its estimate, None if not audited."""
        if round_epsilon is not None:
            if round_epsilon > self.NO_PRIVACY_EPSILON:
                round_epsilon = math.inf
            self.noise_multiplier = self.mechanism.noise_multiplier_for_round_epsilon(round_epsilon)
        if self.noise_multiplier is None:
            return None
        self.accountant.step(noise_multiplier=self.noise_multiplier)
        noise = self.accountant.state_dict()["noise_multipliers"]
        pld_works = self.mechanism.accountant == "pld" and min(noise) >= self.PLD_MIN_NOISE
        return self.accountant.epsilon(accountant="pld" if pld_works else "rdp")

    def state_dict(self) -> dict:
        """JSON-able state (the equivalent noise multipliers so far)."""
        return {"accountant": self.accountant.state_dict(), "noise_multiplier": self.noise_multiplier}

    def load_state_dict(self, state: dict) -> None:
        """Restores what :meth:`state_dict` returned."""
        self.accountant.load_state_dict(state["accountant"])
        self.noise_multiplier = state["noise_multiplier"]
