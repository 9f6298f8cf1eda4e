"""Inference for BKD models: SGLD/pSGLD kernels, the sampling driver, schedules, MAP."""

from pyro_bkd.infer.monitor import NonFiniteError
from pyro_bkd.infer.potential import BKDPotential, TracePotential, build_potential
from pyro_bkd.infer.run import SamplingResult, sample
from pyro_bkd.infer.schedules import (
    ConstantStep,
    PolynomialDecay,
    RMSPropPreconditioner,
    StepSchedule,
)
from pyro_bkd.infer.sgld import PSGLD, SGLD

__all__ = [
    "PSGLD",
    "SGLD",
    "BKDPotential",
    "ConstantStep",
    "NonFiniteError",
    "PolynomialDecay",
    "RMSPropPreconditioner",
    "SamplingResult",
    "StepSchedule",
    "TracePotential",
    "build_potential",
    "sample",
]
