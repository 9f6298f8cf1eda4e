"""Minibatch potentials ``U_B(theta)`` (the gradient estimators of SGLD, SPEC §4).

``U_B(theta) = -(N/m) sum_{i in B} [log q_{i,y_i} + lam sum_k p_ik log q_ik^tau
- log B(1 + lam p_i)] - log N(theta; 0, sigma^2 I)``: both data terms are rescaled by
``N/m``, the weight prior is not.

This is the one boundary between the model world and the numeric world: a potential is built
once from a Pyro model and its data, then the per-step path sees flat tensors only.

- :class:`BKDPotential` evaluates a :class:`~pyro_bkd.model.BKDModel` by calling the
  student with the weights swapped in, as ``torch.func.functional_call`` does (no Pyro trace
  per step); tests check it equals the Pyro
  trace's log joint with the plate index conditioned on the same minibatch.
- :class:`TracePotential` serves any other Pyro model with a ``pyro.plate("data", N)``: it
  conditions the plate's index site on the minibatch and uses Pyro's ``initialize_model``
  potential (unconstrained space, Jacobians included).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro.poutine as poutine
import torch
from pyro.infer.mcmc.util import initialize_model
from pyro.poutine.subsample_messenger import _Subsample
from torch.func import grad_and_value, vmap

from pyro_bkd._checks import InputError, InputTypeError
from pyro_bkd.infer.layout import FlatLayout
from pyro_bkd.model import (
    DATA_PLATE,
    BKDModel,
    log_dirichlet_normaliser,
    log_softmax_classes,
    teacher_log_probs,
    teacher_prior_log_density,
)


class Potential:
    """Interface: ``log_joint(theta [D], idx [m] | None)`` (differentiable, ``-U``) and
    ``value_and_grad(theta [D], idx) -> (U, dU/dtheta)``; the batched form and the curvature
    are derived from them here (subclasses may do them faster)."""

    layout: FlatLayout
    num_examples: int | None
    transforms: dict

    def initial_theta(self) -> torch.Tensor:
        raise NotImplementedError

    def log_joint(self, theta: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def value_and_grad(
        self, theta: torch.Tensor, idx: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = theta.detach().requires_grad_(True)
        potential = -self.log_joint(leaf, idx)
        (grad,) = torch.autograd.grad(potential, leaf)
        return potential.detach(), grad

    def batched_value_and_grad(
        self, theta: torch.Tensor, idx: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``U`` and its gradient for chains ``theta [C, D]``, chain ``c`` on ``idx[c]``."""
        pairs = [
            self.value_and_grad(theta[c], None if idx is None else idx[c])
            for c in range(theta.shape[0])
        ]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def max_curvature(
        self,
        theta: torch.Tensor,
        *,
        metric: torch.Tensor | None = None,
        iterations: int = 20,
        max_rows: int = 512,
        generator: torch.Generator | None = None,
    ) -> float:
        """``lambda_max`` of ``G^(1/2) H G^(1/2)`` (``H`` the Hessian of ``U`` at
        ``theta [D]``, ``G = metric [D]`` a diagonal preconditioner, ``I`` by default), by
        power iteration on Hessian-vector products (the ``N/m``-rescaled Hessian of the first
        ``max_rows`` points of a random order when ``N`` is larger). It sets the scale of a
        stable step: ``eps < 4 / lambda_max`` for Langevin, ``h < 2 / sqrt(lambda_max)``
        for leapfrog."""
        idx = None
        if self.num_examples is not None and self.num_examples > max_rows:
            idx = torch.randperm(self.num_examples, generator=generator)[:max_rows]
            idx = idx.to(theta.device)
        root = None if metric is None else metric.sqrt()
        leaf = theta.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(-self.log_joint(leaf, idx), leaf, create_graph=True)
        v = torch.randn(theta.shape, generator=generator, dtype=theta.dtype).to(theta.device)
        v = v / v.norm()
        eigenvalue = 0.0
        for _ in range(iterations):
            direction = v if root is None else root * v
            (hv,) = torch.autograd.grad(grad, leaf, direction, retain_graph=True)
            if root is not None:
                hv = root * hv
            eigenvalue = float(hv @ v)
            v = hv / hv.norm().clamp_min(1e-30)
        return abs(eigenvalue)


class _StudentCall:
    """``f(x; theta)`` with given weight tensors in place of the student's parameters.

    Does what ``torch.func.functional_call(student, {**params, **buffers}, (x,))`` does in
    :meth:`BKDModel.student_logits` (swap the tensors into the modules' ``_parameters``, run,
    swap back; buffers are used as they are; tied parameters get the tensor of their one
    name), but finds the modules once instead of walking the module tree on every call: that
    walk costs about as much as a small MLP's forward pass.
    """

    def __init__(self, student: torch.nn.Module, names: tuple[str, ...]) -> None:
        self.student = student
        slots: dict[str, list[tuple[torch.nn.Module, str]]] = {name: [] for name in names}
        canonical = {id(p): name for name, p in student.named_parameters()}
        seen: set[tuple[int, str]] = set()
        for full_name, param in student.named_parameters(remove_duplicate=False):
            prefix, _, attr = full_name.rpartition(".")
            module = student.get_submodule(prefix)
            if (id(module), attr) not in seen:
                seen.add((id(module), attr))
                slots[canonical[id(param)]].append((module, attr))
        self.slots = [(name, slots[name]) for name in names]

    def __call__(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        saved: list[tuple[torch.nn.Module, str, torch.Tensor]] = []
        try:
            for name, places in self.slots:
                value = params[name]
                for module, attr in places:
                    saved.append((module, attr, module._parameters[attr]))
                    module._parameters[attr] = value
            return self.student(x)
        finally:
            for module, attr, original in reversed(saved):
                module._parameters[attr] = original


class BKDPotential(Potential):
    """The BKD potential without Pyro traces, for one chain or a batch of chains."""

    transforms: dict = {}  # noqa: RUF012 - every weight site is unconstrained

    def __init__(
        self,
        model: BKDModel,
        x: torch.Tensor,
        y: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
    ) -> None:
        if y is None:
            raise InputError("y is required to sample the posterior (got None)")
        model.check_data(x, y, teacher_logits)
        self.model = model
        self.x, self.y = x, y
        self.num_examples = x.shape[0]
        self.layout = FlatLayout.of(model.initial_values())
        # the fast path only where functional_call would do exactly the same
        standard = type(model).student_logits is BKDModel.student_logits and not isinstance(
            model.student, torch.jit.ScriptModule | torch.nn.DataParallel
        )
        self._student_logits = (
            _StudentCall(model.student, self.layout.names) if standard else model.student_logits
        )
        self.use_teacher = teacher_logits is not None and model.strength > 0
        if self.use_teacher:
            self.teacher_log_p = teacher_log_probs(teacher_logits, model.temperature)
            self.log_normaliser = log_dirichlet_normaliser(self.teacher_log_p, model.strength)
        sigma = model.prior_scale
        self._prior_const = (
            0.0 if sigma is None else -0.5 * self.layout.dim * math.log(2 * math.pi * sigma**2)
        )

    def initial_theta(self) -> torch.Tensor:
        """The student's current weights (e.g. a KD/MAP solution), flattened."""
        return self.layout.flatten(self.model.initial_values())

    def log_prior(self, theta: torch.Tensor) -> torch.Tensor:
        """``log N(theta; 0, sigma^2 I) = -||theta||^2 / (2 sigma^2) + const`` (0 when flat)."""
        sigma = self.model.prior_scale
        if sigma is None:
            return theta.new_zeros(())
        return self._prior_const - 0.5 * theta.square().sum(-1) / sigma**2

    def rows(self, idx: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """The rows ``idx`` (any shape; ``None``: all) of ``x``, ``y`` and, with a teacher,
        its tempered log-probabilities and Dirichlet normalisers."""
        if idx is None:
            rows = (self.x, self.y)
            if self.use_teacher:
                rows += (self.teacher_log_p, self.log_normaliser)
            return rows
        rows = (self.x[idx], self.y[idx])
        if self.use_teacher:
            rows += (self.teacher_log_p[idx], self.log_normaliser[idx])
        return rows

    def row_log_likelihood(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *teacher):
        """``log q_{i,y_i} + TIP_i`` per row ``[m]`` for one chain's ``theta [D]``."""
        logits = self._student_logits(self.layout.unflatten(theta), x)
        terms = log_softmax_classes(logits).gather(-1, y.unsqueeze(-1)).squeeze(-1)
        if teacher:
            log_p, log_norm = teacher
            terms = terms + teacher_prior_log_density(
                logits, log_p, log_norm, self.model.temperature, self.model.strength
            )
        return terms

    def _log_likelihood(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *teacher):
        """``(N/m) sum_B [log q_y + TIP]``, the data part of the log joint, for ``theta [D]``."""
        terms = self.row_log_likelihood(theta, x, y, *teacher)
        return terms.sum() * (self.num_examples / y.shape[-1])

    def _log_joint(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *teacher):
        """``(N/m) sum_B [log q_y + TIP] + log prior`` for one chain's ``theta [D]``."""
        return self._log_likelihood(theta, x, y, *teacher) + self.log_prior(theta)

    def add_prior_grad(self, grad: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """``grad + theta / sigma^2``: adds ``-d log N(theta; 0, sigma^2 I) / d theta``.

        The prior's gradient is written out rather than left to autograd (a square, a sum and
        their backward passes over the ``D`` weights). The result is bitwise the one autograd
        gives: one fused pass when ``1/sigma^2`` is a power of two (``sigma = 1``), where
        ``theta / sigma^2`` is exact, else the same two roundings as autograd.
        """
        sigma = self.model.prior_scale
        if sigma is None:
            return grad
        inv_var = 1.0 / sigma**2
        if math.frexp(inv_var)[0] == 0.5:
            return torch.add(grad, theta, alpha=inv_var)
        return grad + theta * inv_var

    def log_joint(self, theta: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The minibatch estimate of ``log p(theta, D)`` (``-U_B``)."""
        return self._log_joint(theta, *self.rows(idx))

    def value_and_grad(self, theta, idx):
        theta = theta.detach()
        leaf = theta.detach().requires_grad_(True)
        data = -self._log_likelihood(leaf, *self.rows(idx))
        (grad,) = torch.autograd.grad(data, leaf)
        return data.detach() - self.log_prior(theta), self.add_prior_grad(grad, theta)

    def batched_value_and_grad(
        self, theta: torch.Tensor, idx: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``U`` and its gradient for chains ``theta [C, D]``, each with its own minibatch
        ``idx [C, m]`` (vectorised with ``torch.func.vmap``; one chain without it)."""
        if theta.shape[0] == 1:
            value, grad = self.value_and_grad(theta[0], None if idx is None else idx[0])
            return value.unsqueeze(0), grad.unsqueeze(0)
        rows = self.rows(idx)
        in_dims = (0, *(None if idx is None else 0 for _ in rows))

        def negative(theta_c, *rows_c):
            return -self._log_likelihood(theta_c, *rows_c)

        grad, value = vmap(grad_and_value(negative), in_dims=in_dims)(theta, *rows)
        return value - self.log_prior(theta), self.add_prior_grad(grad, theta)


class TracePotential(Potential):
    """The potential of any Pyro model, minibatched by conditioning its ``data`` plate index."""

    def __init__(self, model: Callable, model_args: tuple, model_kwargs: dict) -> None:
        _refuse_subsampling_plates(model, model_args, model_kwargs)
        self._condition: dict[str, torch.Tensor] = {}
        conditioned = poutine.condition(model, data=self._condition)
        init_params, self._potential_fn, self.transforms, trace = initialize_model(
            conditioned, model_args, model_kwargs
        )
        if not init_params:
            raise InputError("model has no latent sample sites to sample")
        self.layout = FlatLayout.of(init_params)
        self._init = self.layout.flatten(init_params).detach()
        self.num_examples = trace.nodes[DATA_PLATE]["fn"].size if DATA_PLATE in trace else None

    def initial_theta(self) -> torch.Tensor:
        """Pyro's default initial point (``init_to_uniform``), unconstrained."""
        return self._init.clone()

    def log_joint(self, theta: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """``-U(theta)`` on the minibatch ``idx`` (``None``: all data), Pyro's potential in
        unconstrained space (Jacobians included)."""
        if idx is None:
            self._condition.pop(DATA_PLATE, None)
        else:
            self._condition[DATA_PLATE] = idx
        return -self._potential_fn(self.layout.unflatten(theta))


def _refuse_subsampling_plates(model: Callable, args: tuple, kwargs: dict) -> None:
    """Raise a ``ValueError`` naming the fix when a plate of ``model`` draws its own
    subsample (``pyro.plate(name, N, subsample_size=m)``): the kernels choose the minibatches
    (without replacement, epoch by epoch) and rescale by ``N/m`` through the ``data`` plate's
    conditioned index site, and Pyro's potential refuses subsample sites."""
    trace = poutine.trace(model).get_trace(*args, **kwargs)
    for name, site in trace.nodes.items():
        fn = site.get("fn")
        if not isinstance(fn, _Subsample) or fn.subsample_size in (None, fn.size):
            continue
        raise InputError(
            f"pyro.plate({name!r}, {fn.size}, subsample_size={fn.subsample_size}) in "
            "the model: the kernel draws the minibatches itself. Write "
            f"`with pyro.plate('data', {fn.size}) as idx:` and index the data with it "
            "(`obs=y[idx]`), then give the size to the kernel: "
            f"`SGLD(model, step_size, subsample_size={fn.subsample_size})`"
        )


def bkd_arguments(args: tuple, kwargs: dict) -> dict[str, torch.Tensor | None]:
    """The arguments of ``BKDModel.forward`` by name: ``x`` (required), ``y`` and
    ``teacher_logits`` (``None`` when not given)."""
    names = ("x", "y", "teacher_logits")
    bound = dict(zip(names, args, strict=False)) | kwargs
    unknown = set(bound) - set(names)
    if unknown:
        raise InputTypeError(f"BKDModel takes x, y, teacher_logits; got {sorted(unknown)}")
    if "x" not in bound:
        raise InputTypeError("x is required")
    return {name: bound.get(name) for name in names}


def build_potential(model: Callable, args: tuple, kwargs: dict) -> Potential:
    """The fast :class:`BKDPotential` for a BKDModel, else the generic :class:`TracePotential`."""
    if isinstance(model, BKDModel):
        return BKDPotential(model, *bkd_arguments(args, kwargs).values())
    return TracePotential(model, args, kwargs)
