"""Choose the teacher strength ``lam`` or the posterior temperature ``T`` on a validation split
so that the credible label sets cover at their nominal level.

Why: the teacher-informed prior pulls the BKD posterior towards the teacher with weight ``lam``
(``lam = alpha c / (1 - alpha)``, 144 at KD's ``alpha = 0.9, tau = 4``), so the posterior's
sets and intervals are only as good as the teacher; a too-strong pull gives sets that are too
small for the labels the model gets wrong. Coverage is measurable on labelled data the model
was not fitted to, so the strength can be tuned like any hyper-parameter.

The procedure (:func:`choose_strength`):

1. split off a validation set ``(x_val, y_val)`` that neither the teacher nor the student saw;
2. for each candidate ``v`` (values of ``lam``, or of ``T`` at a fixed ``lam``) fit the
   posterior on the training split and keep the draws ``q^(s)(x_val)`` (``fit(v)``);
3. score each candidate by the coverage ``c_v`` of its ``level`` credible label sets on the
   validation set (:func:`pyro_bkd.metrics.label_set_coverage`) and its mean set size;
4. a candidate is *admissible* when its coverage is not significantly below nominal,
   ``c_v >= level - z sqrt(level (1 - level) / n_val)`` (one-sided test at ``z = 1.645``, 5%,
   by default); among the admissible candidates take the one with the smallest mean set
   size (the sharpest valid sets; ties: coverage closest to ``level``, then the first
   candidate); when none is admissible, take the one with the highest coverage and say so;
5. report the chosen model's coverage on held-out test data, never the validation number
   (it was used to choose).

Markov chains carry their convergence verdict into the scores; with ``require_converged=True``
a candidate whose chains did not converge is not admissible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from pyro_bkd import _checks, metrics, uq
from pyro_bkd._checks import InputError

#: Parameters :func:`choose_strength` can tune (names used in its output only).
PARAMETERS: tuple[str, ...] = ("strength", "posterior_temperature")


class CandidateScore(NamedTuple):
    """Validation scores of one candidate value (see :func:`choose_strength`)."""

    value: float
    coverage: float
    se: float
    mean_size: float
    mean_mass: float
    admissible: bool
    verdict: str | None


class StrengthChoice(NamedTuple):
    """The outcome of :func:`choose_strength`.

    ``value``: the chosen candidate; ``parameter``: ``"strength"`` or
    ``"posterior_temperature"``; ``level``; ``threshold``: the smallest admissible validation
    coverage ``level - z sqrt(level (1 - level) / n_val)``; ``num_val``; ``scores``: every
    candidate in the order given; ``fallback``: ``True`` when no candidate was admissible and
    the highest coverage was taken instead.
    """

    value: float
    parameter: str
    level: float
    threshold: float
    num_val: int
    scores: list[CandidateScore]
    fallback: bool

    def score(self, value: float) -> CandidateScore:
        """The scores of candidate ``value``."""
        for score in self.scores:
            if score.value == value:
                return score
        raise InputError(f"value {value!r} is not a candidate of this choice")


def score_candidates(
    probs_by_value: Mapping[float, Any],
    y_val: Any,
    level: float = 0.95,
    *,
    z: float = 1.645,
    verdicts: Mapping[float, str | None] | None = None,
    require_converged: bool = False,
) -> tuple[list[CandidateScore], float]:
    """Validation scores of each candidate and the admissibility threshold.

    Args:
        probs_by_value: candidate value -> draws ``[chain, draw, N_val, K]`` on the
            validation inputs (``[1, 1, N_val, K]`` for a point estimate).
        y_val: validation labels ``[N_val]``.
        level: nominal level of the label sets, in (0, 1).
        z: one-sided critical value; a coverage below ``level - z sqrt(level (1 - level) /
            N_val)`` is significantly below nominal.
        verdicts: candidate value -> convergence verdict (``"converged"``, ``"borderline"``,
            ``"not converged"``) of its chains, or nothing for independent draws.
        require_converged: make candidates whose verdict is ``"not converged"`` inadmissible.

    Returns:
        ``(scores in the order of probs_by_value, threshold)``.

    Raises:
        InputError: no candidates, a non-finite candidate value, bad ``level``/``z``, or
            draws and labels that do not match (named).
    """
    if not probs_by_value:
        raise InputError("probs_by_value must hold at least one candidate")
    z = _checks.nonnegative_float("z", z)
    verdicts = dict(verdicts or {})
    scores: list[CandidateScore] = []
    threshold = math.nan
    for value, probs in probs_by_value.items():
        number = _checks.float_in("probs_by_value (a candidate value)", value, -math.inf)
        row = metrics.label_set_coverage(probs, y_val, level)
        threshold = level - z * math.sqrt(level * (1.0 - level) / row.num_obs)
        verdict = verdicts.get(value)
        admissible = row.coverage >= threshold and not (
            require_converged and verdict == "not converged"
        )
        scores.append(
            CandidateScore(
                number, row.coverage, row.se, row.mean_size, row.mean_mass, admissible, verdict
            )
        )
    return scores, threshold


def choose_strength(
    fit: Callable[[float], Any],
    candidates: Iterable[float],
    y_val: Any,
    level: float = 0.95,
    *,
    parameter: str = "strength",
    z: float = 1.645,
    require_converged: bool = False,
) -> StrengthChoice:
    """Pick the teacher strength (or posterior temperature) whose label sets cover at
    ``level`` on a validation split (the procedure of this module's docstring).

    Args:
        fit: ``fit(v)`` fits the posterior with candidate value ``v`` on the training split
            and returns its draws on the validation inputs: a
            :class:`~pyro_bkd.infer.result.SamplingResult` (its ``probs`` and the verdict of
            ``convergence`` are used), or draws ``[chain, draw, N_val, K]`` (array or tensor).
        candidates: the values to try (``lam``, or ``T``), at least one.
        y_val: validation labels ``[N_val]``.
        level: nominal level of the label sets, in (0, 1).
        parameter: ``"strength"`` or ``"posterior_temperature"`` (what ``v`` is; recorded).
        z: one-sided critical value of the admissibility test (1.645: 5%).
        require_converged: candidates whose chains did not converge are not admissible.

    Returns:
        A :class:`StrengthChoice`: among admissible candidates (validation coverage ``c_v >=
        level - z sqrt(level (1 - level) / N_val)``), the one with the smallest mean set
        size; if none is admissible, the one with the highest coverage (``fallback``).

    Example (lam on MNIST-like data; ``student`` a KD student, ``train`` a
    :class:`~pyro_bkd.DistillationData`)::

        def fit(lam):
            model = BKDModel(copy.deepcopy(student), temperature=4.0, strength=lam)
            return sample(model, train, x_test=x_val, seed=0, progress=False)

        choice = choose_strength(fit, [0.0, 16.0, 144.0], y_val, level=0.95)
        choice.value, choice.scores

    Raises:
        InputError: an unknown ``parameter``, no candidates, or bad values (named).
    """
    if parameter not in PARAMETERS:
        raise InputError(f"parameter must be one of {PARAMETERS}, got {parameter!r}")
    values = [_checks.float_in("candidates", value, -math.inf) for value in candidates]
    if not values:
        raise InputError("candidates must hold at least one value")
    if len(set(values)) != len(values):
        raise InputError(f"candidates must be distinct, got {values}")
    probs_by_value, verdicts = {}, {}
    for value in values:
        probs, verdict = _draws_and_verdict(fit(value))
        probs_by_value[value], verdicts[value] = probs, verdict
    return choose_from_draws(
        probs_by_value,
        y_val,
        level,
        parameter=parameter,
        z=z,
        verdicts=verdicts,
        require_converged=require_converged,
    )


def choose_from_draws(
    probs_by_value: Mapping[float, Any],
    y_val: Any,
    level: float = 0.95,
    *,
    parameter: str = "strength",
    z: float = 1.645,
    verdicts: Mapping[float, str | None] | None = None,
    require_converged: bool = False,
) -> StrengthChoice:
    """:func:`choose_strength` on draws already computed: ``probs_by_value`` maps each
    candidate value to its draws on the validation inputs (see :func:`score_candidates`)."""
    if parameter not in PARAMETERS:
        raise InputError(f"parameter must be one of {PARAMETERS}, got {parameter!r}")
    scores, threshold = score_candidates(
        probs_by_value,
        y_val,
        level,
        z=z,
        verdicts=verdicts,
        require_converged=require_converged,
    )
    admissible = [s for s in scores if s.admissible]
    if admissible:
        best = min(admissible, key=lambda s: (s.mean_size, abs(s.coverage - level)))
    else:
        best = max(scores, key=lambda s: s.coverage)
    num_val = int(uq.to_numpy(y_val).shape[0])
    return StrengthChoice(
        best.value, parameter, float(level), threshold, num_val, scores, not admissible
    )


def _draws_and_verdict(fitted: Any) -> tuple[Any, str | None]:
    """``(probs, verdict)`` of what a ``fit`` returned (a sampling result or the draws)."""
    if hasattr(fitted, "probs") and hasattr(fitted, "convergence"):
        if fitted.probs is None:
            raise InputError("fit must return draws on the validation inputs (x_test=x_val)")
        verdict = None if fitted.convergence is None else str(fitted.convergence.status)
        return fitted.probs, verdict
    return fitted, None
