"""Zeroth-order estimators beyond MeZO, each a ``torch.optim.Optimizer`` on zoft's seeded-direction
engine (:mod:`zoft.optim.directions`): usable like :class:`zoft.optim.MeZO` in zoft's loop
(``optimizer=<name>``) or in a loop of one's own (``opt.step(closure)``)."""

from zoft.optim.estimators.conservative import ZOConservative
from zoft.optim.estimators.forward_grad import ForwardGradient
from zoft.optim.estimators.fzoo import FZOO
from zoft.optim.estimators.hizoo import HiZOO
from zoft.optim.estimators.hizoo_low_rank import HiZOOLowRank
from zoft.optim.estimators.lowrank import LOZO, LowRankZO, SubZero
from zoft.optim.estimators.momentum import ZOMomentum
from zoft.optim.estimators.norm_scaled import NormScaledZO
from zoft.optim.estimators.nspsa import ScheduledSPSA
from zoft.optim.estimators.one_point import OnePointZO
from zoft.optim.estimators.sign import ZOSign
from zoft.optim.estimators.sparse import SparseMeZO

__all__ = ["FZOO", "ForwardGradient", "HiZOO", "HiZOOLowRank", "LOZO", "LowRankZO", "SubZero", "NormScaledZO", "OnePointZO", "ScheduledSPSA", "SparseMeZO", "ZOConservative", "ZOMomentum", "ZOSign"]
