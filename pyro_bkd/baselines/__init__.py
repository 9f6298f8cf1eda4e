"""Non-Bayesian uncertainty baselines for the distilled student (outputs of docs/spec.md §5).

Both return class probabilities ``[chain, draw, N, K]``, the layout of :func:`pyro_bkd.sample`,
so they go through the same :mod:`pyro_bkd.metrics`, :mod:`pyro_bkd.uq` and
:mod:`pyro_bkd.export` code as the posterior draws:

- :mod:`~pyro_bkd.baselines.mc_dropout`: a KD student trained with dropout, which stays on at
  test time (Gal & Ghahramani, 2016); the draws are dropout masks.
- :mod:`~pyro_bkd.baselines.ensemble`: a deep ensemble of KD students from different
  initialisations and batch orders (Lakshminarayanan et al., 2017); the draws are members.
"""

from pyro_bkd.baselines.ensemble import ensemble_probs, train_kd_ensemble
from pyro_bkd.baselines.mc_dropout import add_dropout, mc_dropout_probs

__all__ = ["add_dropout", "ensemble_probs", "mc_dropout_probs", "train_kd_ensemble"]
