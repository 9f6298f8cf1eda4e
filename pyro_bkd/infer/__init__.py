"""Inference for BKD models: the algorithms, their Pyro kernels, the driver, MAP and SVI."""

from pyro_bkd.infer.base import Algorithm, ChainState, StepInfo
from pyro_bkd.infer.driver import DEFAULT_METHOD, METHODS, sample
from pyro_bkd.infer.hmc import HMCStep
from pyro_bkd.infer.kernels import HMC, PSGLD, SGHMC, SGLD, BKDKernel
from pyro_bkd.infer.langevin import PSGLDStep, SGLDStep
from pyro_bkd.infer.monitor import NonFiniteError, RunawayError
from pyro_bkd.infer.potential import BKDPotential, TracePotential, build_potential
from pyro_bkd.infer.result import SamplingResult
from pyro_bkd.infer.schedules import ConstantStep, CyclicalStep, PolynomialDecay, StepSchedule
from pyro_bkd.infer.sghmc import SGHMCStep
from pyro_bkd.infer.verdict import ConvergenceSummary, ConvergenceWarning, diagnose

__all__ = [
    "DEFAULT_METHOD",
    "HMC",
    "METHODS",
    "PSGLD",
    "SGHMC",
    "SGLD",
    "Algorithm",
    "BKDKernel",
    "BKDPotential",
    "ChainState",
    "ConstantStep",
    "ConvergenceSummary",
    "ConvergenceWarning",
    "CyclicalStep",
    "HMCStep",
    "NonFiniteError",
    "PSGLDStep",
    "PolynomialDecay",
    "RunawayError",
    "SGHMCStep",
    "SGLDStep",
    "SamplingResult",
    "StepInfo",
    "StepSchedule",
    "TracePotential",
    "build_potential",
    "diagnose",
    "sample",
]
