"""What :func:`pyro_bkd.sample` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from pyro_bkd._checks import InputError
from pyro_bkd.infer.verdict import ConvergenceSummary


@dataclass(frozen=True, eq=False)
class SamplingResult:
    """Output of :func:`pyro_bkd.sample`.

    Attributes:
        probs: ``q^(s)(x_test)`` of shape ``[chain, draw, N_test, K]`` (CPU), or ``None``.
        sample_stats: ``lp`` (log joint, minibatch estimate for minibatch methods),
            ``step_size``, ``grad_norm`` and ``accept_prob`` (1 for unadjusted methods);
            ``[chain, draw]``.
        weights: ``{name: [chain, draw, *shape]}`` when ``keep_weights``, else ``None``.
        config: method and hyper-parameters, for ``InferenceData`` attributes.
        wall_seconds: sampling time, warm start included.
        backoffs: steps at which a non-finite value made the step size halve.
        convergence: the verdict on the class probabilities (``None`` without ``x_test``).
        metric: the diagonal preconditioner ``G`` frozen after warm-up, ``[chain, D]``
            (``None`` for plain SGLD, whose ``G`` is the identity).
    """

    probs: torch.Tensor | None
    sample_stats: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor] | None
    config: dict[str, Any]
    wall_seconds: float
    backoffs: list[int] = field(default_factory=list)
    convergence: ConvergenceSummary | None = None
    metric: torch.Tensor | None = None

    def to_inference_data(
        self,
        *,
        y_test: Any = None,
        p_true: Any = None,
        teacher_probs: Any = None,
        obs_ids: Any = None,
        class_names: list[str] | None = None,
        log_likelihood: Any = None,
        y_train: Any = None,
        y_train_draws: Any = None,
    ):
        """An ``arviz.InferenceData``: ``probs`` in ``predictions``, the weights (when kept) in
        ``posterior``, ``sample_stats``, and the other arguments as
        :func:`pyro_bkd.export.to_inference_data` places them. For ``az.loo``/``az.plot_ppc``
        pass the training-set groups, e.g. ``**export.fitted_labels(train_probs, y_train)``
        with ``train_probs = pyro_bkd.predict_probs(student, result.weights, x_train)``."""
        from pyro_bkd.export import to_inference_data

        if self.probs is None:
            raise InputError("no test inputs were given to sample(), so there are no probs")
        attrs = {**self.config, "wall_seconds": self.wall_seconds}
        if self.convergence is not None:
            attrs["convergence"] = self.convergence.message
        return to_inference_data(
            self.probs,
            y_test=y_test,
            p_true=p_true,
            teacher_probs=teacher_probs,
            obs_ids=obs_ids,
            sample_stats=self.sample_stats,
            posterior=self.weights,
            log_likelihood=log_likelihood,
            y_train=y_train,
            y_train_draws=y_train_draws,
            class_names=class_names,
            attrs=attrs,
        )
