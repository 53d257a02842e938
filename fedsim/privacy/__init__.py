"""Privacy: the run's DP mechanism and the accounting of its theoretical epsilon.

events (what happened, as dp-accounting events) <- accountant (per-run composition),
calculator (``fedsim privacy epsilon``) <- mechanism (the run's DP, from the scenario)
<- tracking (a run's epsilons round by round). The canary audit lives in
fedsim.canaries; the exact Gaussian maths it needs beyond dp-accounting is here too.
"""

from fedsim.privacy.accountant import LocalDpsgdAccountant, OpacusSchedule, RoundAccountant, opacus_schedule
from fedsim.privacy.calculator import cumulative_epsilon, noise_multiplier_for_epsilon
from fedsim.privacy.events import (
    AccountantName,
    Adjacency,
    dpsgd_event,
    epsilon_for_event,
    gaussian_epsilon,
    gaussian_noise_for_epsilon,
    release_event,
    round_event,
)
from fedsim.privacy.mechanism import DpMechanism
from fedsim.privacy.tracking import EmpiricalTracker, TheoryEpsilon, TheoryTracker

__all__ = [
    "AccountantName",
    "Adjacency",
    "DpMechanism",
    "EmpiricalTracker",
    "LocalDpsgdAccountant",
    "OpacusSchedule",
    "RoundAccountant",
    "TheoryEpsilon",
    "TheoryTracker",
    "cumulative_epsilon",
    "dpsgd_event",
    "epsilon_for_event",
    "gaussian_epsilon",
    "gaussian_noise_for_epsilon",
    "noise_multiplier_for_epsilon",
    "opacus_schedule",
    "release_event",
    "round_event",
]
