"""pyro-bkd: Bayesian knowledge distillation with uncertainty quantification, on Pyro.

The public API: :class:`BKDModel` (the student as a Pyro model with a teacher-informed prior),
the KD loss and its mapping to the teacher strength (:mod:`pyro_bkd.kd`), SGLD, pSGLD, SGHMC and HMC
kernels for ``pyro.infer.MCMC`` and the vectorised driver :func:`sample`, teachers (MLL and MCMI),
uncertainty summaries (:mod:`pyro_bkd.uq`, :mod:`pyro_bkd.metrics`) and the ArviZ export.
"""

__version__ = "0.1.0"

from pyro_bkd._checks import InputError
from pyro_bkd.cmi import class_centroids, cmi
from pyro_bkd.data import DistillationData
from pyro_bkd.distill import fit_map
from pyro_bkd.infer import (
    HMC,
    PSGLD,
    SGHMC,
    SGLD,
    ConstantStep,
    ConvergenceWarning,
    CyclicalStep,
    NonFiniteError,
    PolynomialDecay,
    SamplingResult,
    sample,
)
from pyro_bkd.kd import alpha_from_strength, kd_loss, strength_from_alpha
from pyro_bkd.model import BKDModel
from pyro_bkd.predictive import predict_probs, probs_from_guide
from pyro_bkd.teachers import freeze, streaming_cmi, teacher_logits, train_teacher

__all__ = [
    "HMC",
    "PSGLD",
    "SGHMC",
    "SGLD",
    "BKDModel",
    "ConstantStep",
    "ConvergenceWarning",
    "CyclicalStep",
    "DistillationData",
    "InputError",
    "NonFiniteError",
    "PolynomialDecay",
    "SamplingResult",
    "__version__",
    "alpha_from_strength",
    "class_centroids",
    "cmi",
    "fit_map",
    "freeze",
    "kd_loss",
    "predict_probs",
    "probs_from_guide",
    "sample",
    "streaming_cmi",
    "strength_from_alpha",
    "teacher_logits",
    "train_teacher",
]
