"""Minibatch OT couplings for flow matching: exact assignments and entropic plans between sample batches.

Modules: ``assignment`` (:func:`linear_assignment`, otkit's one assignment solver, and ``_auction.c``, its
compiled CPU auction), ``hungarian`` (its torch method for small sides), ``plan`` (the functional :func:`plan`),
``result`` (:class:`Coupling`) and ``sampler`` (:class:`OTPlanSampler`, torchcfm's interface).
"""

from otkit.couplings.assignment import linear_assignment
from otkit.couplings.plan import LP_MAX_SIZE, METHODS, plan, squared_distances
from otkit.couplings.result import Coupling
from otkit.couplings.sampler import OTPlanSampler

__all__ = ["LP_MAX_SIZE", "METHODS", "Coupling", "OTPlanSampler", "linear_assignment", "plan", "squared_distances"]
