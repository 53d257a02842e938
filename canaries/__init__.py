"""What the adversary does: craft canaries, insert them, score aggregates, estimate epsilon."""

from fedsim.canaries.estimators import EpsilonEstimate, empirical_epsilon
from fedsim.privacy.gaussians import gaussians_epsilon

__all__ = ["EpsilonEstimate", "empirical_epsilon", "gaussians_epsilon"]
