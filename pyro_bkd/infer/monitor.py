"""Detection of numerical blow-ups without a host-device sync per step."""

from __future__ import annotations

import math

import torch


class NonFiniteError(FloatingPointError):
    """The potential or its gradient became NaN/inf at ``step``."""

    def __init__(
        self,
        step: int,
        last_finite_log_joint: float | None,
        chain: int | None = None,
        detail: str = "Lower the step size or enable the step-size back-off.",
    ):
        self.step = step
        self.last_finite_log_joint = last_finite_log_joint
        self.chain = chain
        where = "" if chain is None else f" in chain {chain}"
        last = "none" if last_finite_log_joint is None else f"{last_finite_log_joint:.6g}"
        super().__init__(
            f"non-finite potential or gradient at step {step}{where}; "
            f"last finite log joint: {last}. {detail}"
        )


class RunawayError(NonFiniteError):
    """The log joint fell below ``floor`` at ``step``: the chain left the posterior (a blow-up
    that has not reached NaN/inf yet)."""

    def __init__(self, step: int, log_joint: float, floor: float, chain: int | None = None):
        FloatingPointError.__init__(
            self,
            f"runaway potential at step {step}"
            + ("" if chain is None else f" in chain {chain}")
            + f": log joint {log_joint:.6g} fell below {floor:.6g}. Lower the step size or "
            "enable the step-size back-off.",
        )
        self.step = step
        self.last_finite_log_joint = log_joint
        self.chain = chain


def runaway_floor(start_log_joint: float, dim: int, posterior_temperature: float = 1.0) -> float:
    """The lowest believable log joint of a chain started at ``start_log_joint``.

    Near a mode, a posterior draw (tempered by ``T``) has ``log p(theta*) - log p(theta) ~
    T chi^2_D / 2`` (Laplace): about ``T D / 2`` below the mode, sd ``T sqrt(D / 2)``.
    Minibatch estimates of the log joint add noise, and the start need not be a mode, so the
    allowance is generous: ``max(10 T D, |log p(theta_0)|)`` below the start. A chain below
    that has left the posterior."""
    return start_log_joint - max(10.0 * posterior_temperature * dim, abs(start_log_joint))


class FiniteMonitor:
    """Buffers ``(log joint, gradient norm)`` on the device and checks them in blocks.

    ``record`` only writes into a preallocated buffer; ``check`` syncs once per block and
    raises :class:`NonFiniteError` naming the first bad step and the last finite log joint,
    or :class:`RunawayError` when a log joint fell below ``floor`` (:func:`runaway_floor`).
    """

    def __init__(self, block: int = 100, first_step: int = 0, floor: float | None = None) -> None:
        self.block = block
        self.floor = floor
        self._values: list[torch.Tensor] = []
        self._first_step = first_step
        self._last_finite: float | None = None

    def record(self, log_joint: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        """Store one step (per-chain tensors allowed); returns True when a check is due."""
        self._values.append(torch.stack([log_joint, grad_norm]))
        return len(self._values) >= self.block

    def check(self) -> None:
        """Raise :class:`NonFiniteError` if any buffered step was not finite."""
        if not self._values:
            return
        values = torch.stack(self._values).detach().cpu()  # [steps, 2, (chains)]
        first_step = self._first_step
        self._first_step += len(self._values)
        self._values = []
        finite = torch.isfinite(values).all(dim=1)  # [steps, (chains)]
        bad = ~finite.reshape(finite.shape[0], -1)
        log_joint = values[:, 0].reshape(values.shape[0], -1)
        if bad.any():
            step, chain = (int(i) for i in bad.nonzero()[0])
            previous = log_joint[:step, chain]
            last = float(previous[-1]) if step else self._last_finite
            raise NonFiniteError(
                first_step + step, last, None if log_joint.shape[1] == 1 else chain
            )
        if self.floor is not None and bool((log_joint < self.floor).any()):
            step, chain = (int(i) for i in (log_joint < self.floor).nonzero()[0])
            raise RunawayError(
                first_step + step,
                float(log_joint[step, chain]),
                self.floor,
                None if log_joint.shape[1] == 1 else chain,
            )
        last = float(log_joint[-1].min())
        self._last_finite = last if math.isfinite(last) else self._last_finite
