"""The BKD model (SPEC §2): a torch student with a teacher-informed prior, as a Pyro model.

Sites, for a student ``f(x; theta)`` with weight tensors ``theta = {name: tensor}``:

- ``<name>`` for every entry of ``student.named_parameters()``: the weight prior
  ``theta ~ Normal(0, sigma^2 I)`` (flat when ``prior_scale=None``);
- ``data``: the index site of ``pyro.plate("data", N)``. Conditioning it on a
  minibatch of indices (``poutine.condition(model, {"data": idx})``) makes Pyro
  rescale both data terms by ``N/m``;
- ``y``: the likelihood ``y_i ~ Categorical(q_i)``, ``q_i = softmax(z_i)``;
- ``teacher_prior``: the teacher-informed Dirichlet prior (TIP)
  ``q_i^tau ~ Dirichlet(1 + lam p_i)``, ``p_i = softmax(t_i / tau)``, whose log density
  ``lam sum_k p_ik log q_ik^tau - log B(1 + lam p_i)`` enters as an observed site of
  :class:`TeacherPrior` with the teacher's probabilities ``p_i`` as its value (so tools that
  list observed sites, such as ``az.from_pyro``, find ``p [N, K]`` there, not an empty array).

The log joint is therefore ``sum_i log q_{i,y_i}
+ sum_i [lam sum_k p_ik log q_ik^tau - log B(1 + lam p_i)] + log N(theta; 0, sigma^2 I)``,
whose negative is the KD objective of SPEC §3 up to constants.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.nn import PyroModule
from torch import nn
from torch.func import functional_call, vmap

from pyro_bkd import _checks
from pyro_bkd._checks import InputError, InputTypeError
from pyro_bkd._torch import device_of
from pyro_bkd.priors import weight_prior

DATA_PLATE = "data"
LIKELIHOOD_SITE = "y"
TEACHER_PRIOR_SITE = "teacher_prior"


def teacher_log_probs(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log p_i = log softmax(t_i / tau)``, shape ``[N, K]``."""
    return F.log_softmax(teacher_logits / temperature, dim=-1)


def log_dirichlet_normaliser(teacher_log_p: torch.Tensor, strength: float) -> torch.Tensor:
    """``log B(1 + lam p_i) = sum_k lgamma(1 + lam p_ik) - lgamma(K + lam)``, shape ``[N]``."""
    num_classes = teacher_log_p.shape[-1]
    concentration = 1.0 + strength * teacher_log_p.exp()
    total = concentration.new_tensor(num_classes + strength)
    return torch.lgamma(concentration).sum(-1) - torch.lgamma(total)


def log_softmax_classes(logits: torch.Tensor) -> torch.Tensor:
    """``log softmax(z)`` over the last (class) dimension of ``logits [..., N, K]``.

    Computed on the transposed view (classes as the second-to-last dimension): the same
    numbers, but on CPU torch's kernel for a short last dimension (``K = 10``) is 3-4x
    slower, forward and backward, and these two calls were half of a small student's step.
    """
    return torch.log_softmax(logits.transpose(-1, -2), dim=-2).transpose(-1, -2)


def teacher_prior_log_density(
    logits: torch.Tensor,
    teacher_log_p: torch.Tensor,
    log_normaliser: torch.Tensor,
    temperature: float,
    strength: float,
) -> torch.Tensor:
    """TIP log density per example: ``lam sum_k p_ik log q_ik^tau - log B(1 + lam p_i)``."""
    log_q_tau = log_softmax_classes(logits / temperature)
    return strength * (teacher_log_p.exp() * log_q_tau).sum(-1) - log_normaliser


class TeacherPrior(dist.TorchDistribution):
    """The TIP term of one example per batch entry, as an observed site whose value is the
    teacher's tempered probabilities ``p = softmax(t / tau)`` ``[..., K]``:
    ``log_prob(p) = lam sum_k p_k log softmax(z / tau)_k - log B(1 + lam p)``, the log density
    of ``Dirichlet(1 + lam p)`` at ``q^tau = softmax(z / tau)``.

    A factor of the log joint in the student's logits ``z``, not a normalised law of ``p``:
    it has no ``sample``. Batch shape: that of ``logits`` without its class dimension.
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.simplex

    def __init__(self, logits: torch.Tensor, temperature: float, strength: float) -> None:
        self.logits, self.temperature, self.strength = logits, temperature, strength
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=False)

    def expand(self, batch_shape: torch.Size, _instance: Any = None) -> TeacherPrior:
        shape = torch.Size(batch_shape) + self.event_shape
        return TeacherPrior(self.logits.expand(shape), self.temperature, self.strength)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        log_p = value.clamp_min(torch.finfo(value.dtype).tiny).log()
        return teacher_prior_log_density(
            self.logits,
            log_p,
            log_dirichlet_normaliser(log_p, self.strength),
            self.temperature,
            self.strength,
        )

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        raise NotImplementedError(
            "teacher_prior is a factor of the log joint (its value is the teacher's "
            "probabilities, always observed); it cannot be sampled"
        )


class BKDModel(PyroModule):
    """Bayesian knowledge distillation model around any ``torch.nn.Module`` student.

    Args:
        student: network mapping inputs ``x`` to logits ``z = f(x; theta)`` of shape ``[N, K]``.
            Its parameters name the weight sites; its current values are only used as
            initial values (:meth:`initial_values`), never trained in place. It is put in
            eval mode: batch-norm layers use their stored statistics (set them by KD
            pre-training) and dropout is off, so the likelihood of a point does not depend
            on which other points share its minibatch.
        temperature: ``tau > 0`` of the tempered student/teacher probabilities.
        strength: teacher strength ``lam >= 0`` (``lam = 0``: no teacher).
        prior_scale: ``sigma > 0`` of the weight prior ``Normal(0, sigma^2 I)``; ``None`` for flat.
    """

    def __init__(
        self,
        student: nn.Module,
        temperature: float = 1.0,
        strength: float = 1.0,
        prior_scale: float | None = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(student, nn.Module):
            raise InputTypeError(f"student must be a torch.nn.Module, got {type(student).__name__}")
        if not any(True for _ in student.parameters()):
            raise InputError("student must have at least one parameter (a latent weight site)")
        self.temperature = _checks.positive_float("temperature", temperature)
        self.strength = _checks.nonnegative_float("strength", strength)
        self.prior_scale = (
            None if prior_scale is None else _checks.positive_float("prior_scale", prior_scale)
        )
        # Registered without PyroModule.__setattr__/__getattr__: reading a plain nn.Module
        # through PyroModule would issue pyro.module() (param sites for unused weights).
        self._modules["student"] = student.eval()

    @property
    def student(self) -> nn.Module:
        """The wrapped network ``f(x; theta)``."""
        return self._modules["student"]

    @property
    def site_names(self) -> list[str]:
        """Names of the weight sample sites: the student's parameter names."""
        return [name for name, _ in self.student.named_parameters()]

    def initial_values(self) -> dict[str, torch.Tensor]:
        """The student's current weights, detached: a warm start (e.g. after KD training)."""
        return {name: p.detach().clone() for name, p in self.student.named_parameters()}

    def buffers_dict(self) -> dict[str, torch.Tensor]:
        """The student's buffers (e.g. batch-norm statistics), used as they are."""
        return dict(self.student.named_buffers())

    def student_logits(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``z = f(x; theta)`` with the weights ``params`` in place of the student's own.

        Weights ``[*B, *shape]`` with leading batch dimensions ``B`` (one per draw, as
        ``pyro.infer.Predictive(..., parallel=True)`` conditions them) give logits
        ``[*B, N, K]``: ``z^(b) = f(x; theta^(b))`` through one ``torch.func.vmap`` over the
        flattened ``B``. Every weight tensor must carry the same ``B``.
        """
        buffers = self.buffers_dict()
        batch = self._weight_batch_shape(params)
        if not batch:
            return functional_call(self.student, {**params, **buffers}, (x,))
        flat = {
            name: value.reshape(-1, *value.shape[len(batch) :]) for name, value in params.items()
        }

        def one_draw(theta: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(self.student, {**theta, **buffers}, (x,))

        logits = vmap(one_draw)(flat)
        return logits.reshape(*batch, *logits.shape[1:])

    def _weight_batch_shape(self, params: dict[str, torch.Tensor]) -> torch.Size:
        """The leading dimensions ``B`` of ``params`` beyond each parameter's own shape."""
        shapes = dict(self.student.named_parameters())
        batches = set()
        for name, value in params.items():
            shape = shapes[name].shape
            extra = value.dim() - len(shape)
            if extra < 0 or value.shape[extra:] != shape:
                raise InputError(
                    f"weight {name!r} must have shape [..., {', '.join(map(str, shape))}], "
                    f"got {tuple(value.shape)}"
                )
            batches.add(value.shape[:extra])
        if len(batches) > 1:
            raise InputError(f"weights disagree on their leading (draw) dimensions: {batches}")
        return batches.pop() if batches else torch.Size()

    def check_data(
        self, x: torch.Tensor, y: torch.Tensor | None, teacher_logits: torch.Tensor | None
    ) -> None:
        """Validate shapes, labels and teacher logits; raise :class:`~pyro_bkd.InputError`."""
        _checks.inputs("x", x)
        num_examples = x.shape[0]
        num_classes = None
        if teacher_logits is not None:
            _checks.logits("teacher_logits", teacher_logits, num_examples)
            num_classes = teacher_logits.shape[1]
        if y is not None:
            _checks.labels("y", y, num_examples, num_classes)
        device = device_of(self.student)
        _checks.same_device("the student", device, x=x, y=y, teacher_logits=teacher_logits)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the model on ``N`` inputs; returns the logits of the plate's (sub)sample."""
        self.check_data(x, y, teacher_logits)
        params = {
            name: pyro.sample(name, weight_prior(self.prior_scale, p))
            for name, p in self.student.named_parameters()
        }
        num_examples = x.shape[0]
        data_plate = pyro.plate(DATA_PLATE, num_examples, device=x.device)
        idx = data_plate.indices
        full = data_plate.subsample_size == num_examples
        # Logits are computed outside the plate: the weights carry no data dimension.
        logits = self.student_logits(params, x if full else x[idx])
        if logits.dim() < 2 or logits.shape[-2] != idx.shape[0]:
            raise InputError(f"student must return logits [N, K], got {tuple(logits.shape)}")
        num_classes = logits.shape[-1]
        if teacher_logits is not None and num_classes != teacher_logits.shape[1]:
            raise InputError(
                f"student returns {num_classes} classes but teacher_logits has "
                f"{teacher_logits.shape[1]}"
            )
        if y is not None and teacher_logits is None:
            _checks.labels("y", y, num_examples, num_classes)
        with data_plate:
            pyro.sample(
                LIKELIHOOD_SITE,
                dist.Categorical(logits=logits),
                obs=None if y is None else (y if full else y[idx]),
            )
            if teacher_logits is not None and self.strength > 0:
                log_p = teacher_log_probs(
                    teacher_logits if full else teacher_logits[idx], self.temperature
                )
                pyro.sample(
                    TEACHER_PRIOR_SITE,
                    TeacherPrior(logits, self.temperature, self.strength),
                    obs=log_p.exp(),
                )
        return logits
