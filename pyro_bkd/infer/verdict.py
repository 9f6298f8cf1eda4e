"""Did the chains converge? A summary and a verdict after every run, as Stan gives one.

The summary is over the (test input, class) entries of the class probabilities
``q^(s)_k(x)`` ``[chain, draw, N, K]``: rank-normalised split R-hat and bulk ESS
(:mod:`pyro_bkd.convergence`, equal to ArviZ's). Entries whose posterior mean is below
``min_mass`` (default 0.01) are left out of the worst-case figures: a class with
negligible probability has a noisy R-hat that says nothing about the prediction.

Verdict (Vehtari et al. 2021 thresholds):

- ``converged``: every counted entry has R-hat < 1.05 and bulk ESS >= 100 (400 in total
  recommended for final figures; 100 keeps intervals' Monte Carlo error near 10%);
- ``borderline``: at least 95% of counted entries have R-hat < 1.05 and none exceeds 1.2;
- ``not converged``: otherwise. The message says what to do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from pyro_bkd._checks import InputError
from pyro_bkd.convergence import rank_rhat_and_ess_bulk

#: R-hat below which an entry counts as mixed, and the bound for "borderline".
RHAT_GOOD, RHAT_BAD = 1.05, 1.2
#: Bulk ESS per entry asked for by "converged".
MIN_ESS = 100.0
#: Share of entries with R-hat below RHAT_GOOD asked for by "borderline".
MIN_SHARE = 0.95


class ConvergenceWarning(UserWarning):
    """The chains of a run did not converge (the message says what to do)."""


@dataclass(frozen=True)
class ConvergenceSummary:
    """Convergence of the class probabilities of one run (see the module docstring)."""

    status: str
    entries: int
    counted: int
    share_rhat_below_1_01: float
    share_rhat_below_1_05: float
    max_rhat: float
    median_rhat: float
    min_ess_bulk: float
    median_ess_bulk: float
    num_chains: int
    num_draws: int

    @property
    def converged(self) -> bool:
        return self.status == "converged"

    @property
    def message(self) -> str:
        """One line: the verdict, the figures behind it and what to do."""
        figures = (
            f"R-hat < 1.05 on {100 * self.share_rhat_below_1_05:.1f}% of {self.counted} "
            f"class-probability entries (max {self.max_rhat:.3f}), min bulk ESS "
            f"{self.min_ess_bulk:.0f}"
        )
        if self.status == "converged":
            return f"converged: {figures}."
        if self.num_chains < 2:
            return f"{self.status}: {figures}; run at least 2 chains so R-hat can be judged."
        advice = (
            "draw more (raise num_samples or thin) before quoting intervals"
            if self.status == "borderline"
            else "do not use these intervals yet: run longer (raise warmup_steps, thin and "
            "num_samples) and check the verdict again"
        )
        return f"{self.status}: {figures}; {advice}."

    def to_dict(self) -> dict:
        return {**asdict(self), "message": self.message}


def diagnose(probs: torch.Tensor | np.ndarray, min_mass: float = 0.01) -> ConvergenceSummary:
    """:class:`ConvergenceSummary` of class probabilities ``[chain, draw, N, K]``."""
    array = probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    if array.ndim != 4:
        raise InputError(f"probs must be [chain, draw, N, K], got shape {array.shape}")
    chains, draws = array.shape[:2]
    rhat, ess = rank_rhat_and_ess_bulk(array)
    counted = array.mean(axis=(0, 1)) >= min_mass
    rhat_c = np.nan_to_num(rhat[counted], nan=1.0)  # constant entries are trivially mixed
    ess_c = np.nan_to_num(ess[counted], nan=float(chains * draws))
    if rhat_c.size == 0:
        rhat_c, ess_c = np.ones(1), np.full(1, float(chains * draws))
    share_05 = float((rhat_c < RHAT_GOOD).mean())
    max_rhat = float(rhat_c.max()) if chains >= 2 else float("nan")
    if chains >= 2 and share_05 == 1.0 and float(ess_c.min()) >= MIN_ESS:
        status = "converged"
    elif chains >= 2 and share_05 >= MIN_SHARE and max_rhat < RHAT_BAD:
        status = "borderline"
    else:
        status = "not converged"
    return ConvergenceSummary(
        status=status,
        entries=int(rhat.size),
        counted=int(counted.sum()),
        share_rhat_below_1_01=float((rhat_c < 1.01).mean()),
        share_rhat_below_1_05=share_05,
        max_rhat=max_rhat,
        median_rhat=float(np.median(rhat_c)),
        min_ess_bulk=float(ess_c.min()),
        median_ess_bulk=float(np.median(ess_c)),
        num_chains=chains,
        num_draws=draws,
    )
