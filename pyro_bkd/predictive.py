"""Class probabilities of a student network under weight draws, vectorised with ``torch.func``.

For draws ``theta_s`` (``s`` over chains and draws) and inputs ``x`` the predictive holds
``q^(s)(x) = softmax(f(x; theta_s) / T)`` (SPEC §5; ``T = 1`` unless asked), as a tensor
``[chain, draw, N, K]``. Draws are taken ``draw_chunk`` at a time and stacked through
``torch.func.vmap`` over ``torch.func.functional_call``, inputs ``input_chunk`` at a time, so
memory stays bounded for any number of draws and inputs. Only the result ``[S, N, K]`` grows
with them; it is written in place, on the requested device. Pyro's
``Predictive(model, draws, parallel=True)`` also runs on a :class:`~pyro_bkd.BKDModel` (its
``student_logits`` maps over the draws with ``vmap``), but evaluates every draw at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import pyro
import torch
from pyro import poutine
from torch import nn
from torch.func import functional_call, vmap

from pyro_bkd import _checks
from pyro_bkd._checks import InputError
from pyro_bkd._torch import eval_mode

Draws = Mapping[str, torch.Tensor]
PARTICLES_PLATE = "particles"
ROWS_PER_CALL = 8192  # default bound on (draw, input) pairs per vmap call
INPUT_FLOATS_PER_CALL = 1 << 20  # default bound on input floats per call (images are large)


def predict_probs(
    student: nn.Module,
    draws: Draws,
    x: torch.Tensor,
    *,
    draw_chunk: int | None = None,
    input_chunk: int | None = None,
    temperature: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``q^(s)(x_n) = softmax(f(x_n; theta_s) / T)`` for every draw ``s`` and input ``x_n``.

    Args:
        student: the network ``f``; it runs in eval mode (its modes are restored after).
        draws: ``name -> [chain, draw, *shape]`` for some of ``student.named_parameters()``,
            all with the same ``chain`` and ``draw`` sizes. Parameters not in ``draws`` keep
            the module's current values (weights held fixed); buffers are used as they are.
            Draws are cast to their parameter's dtype and moved to its device chunk by chunk.
        x: ``[N, ...]`` inputs, moved to the student's device chunk by chunk.
        draw_chunk: number of draws evaluated at once (one ``vmap``); ``None`` chooses 64,
            or 1 for students with convolutions: ``vmap`` turns a convolution with
            per-draw weights into a grouped one, measured 1.5-2x slower on CPU than one
            call per draw (small_cnn, resnet8).
        input_chunk: number of inputs evaluated at once; ``None`` chooses
            ``ROWS_PER_CALL // draw_chunk`` bounded by ``INPUT_FLOATS_PER_CALL`` input
            floats (at least 1), which bounds the activations held at once (and is faster on
            CPU than a few huge calls).
        temperature: ``T > 0``.
        dtype, device: of the result (computation happens on the student's device).

    Returns:
        ``[chain, draw, N, K]`` class probabilities.

    Raises:
        ValueError: a name that is not a parameter of ``student``, no draws at all, shapes
            that disagree, no inputs, logits that are not ``[N, K]``, or a non-positive chunk
            size or temperature (an :class:`~pyro_bkd.InputError`).
        FloatingPointError: NaN or inf probabilities at some input (:func:`check_finite_probs`).
    """
    params = dict(student.named_parameters())
    num_chains, num_draws = _check_draws(draws, params)
    _checks.inputs("x", x)
    if draw_chunk is None:
        draw_chunk = 1 if _has_convolutions(student) else 64
    _checks.positive_int("draw_chunk", draw_chunk)
    _checks.positive_float("temperature", temperature)
    if input_chunk is not None:
        _checks.positive_int("input_chunk", input_chunk)
    flat = {name: value.reshape(-1, *params[name].shape) for name, value in draws.items()}
    fixed = {name: p.detach() for name, p in params.items() if name not in draws}
    fixed.update(student.named_buffers())
    logits_fn = _batched_logits(student, fixed)
    total, num_inputs = num_chains * num_draws, x.shape[0]
    input_step = input_chunk
    if input_step is None:
        per_input = max(1, x[0].numel())
        input_step = max(1, min(ROWS_PER_CALL // draw_chunk, INPUT_FLOATS_PER_CALL // per_input))
    out: torch.Tensor | None = None
    with torch.no_grad(), eval_mode(student):
        for start in range(0, total, draw_chunk):
            chunk = {
                name: value[start : start + draw_chunk].to(params[name])
                for name, value in flat.items()
            }
            for begin in range(0, num_inputs, input_step):
                x_chunk = x[begin : begin + input_step].to(_device_of(params))
                probs = _probs(logits_fn(chunk, x_chunk), temperature)
                if out is None:
                    out = torch.empty(
                        total, num_inputs, probs.shape[-1], dtype=dtype, device=device
                    )
                out[start : start + draw_chunk, begin : begin + input_step] = probs
    assert out is not None  # total >= 1 and N >= 1 were checked
    return check_finite_probs(out.reshape(num_chains, num_draws, *out.shape[1:]))


def check_finite_probs(probs: torch.Tensor) -> torch.Tensor:
    """Return ``probs [chain, draw, N, K]`` after checking it holds no NaN or inf.

    Raises:
        FloatingPointError: naming how many of the ``N`` inputs got non-finite probabilities
            in some draw, and the first of them (the student overflows there).
    """
    bad = (~torch.isfinite(probs)).flatten(0, 1).any(0).any(-1)
    if bad.any():
        first = int(bad.nonzero()[0])
        raise FloatingPointError(
            f"the student's class probabilities are NaN or inf at {int(bad.sum())} of "
            f"{bad.numel()} test inputs (first: input {first}); its logits overflow there"
        )
    return probs


def guide_draws(
    guide: Callable[..., object],
    num_samples: int,
    *model_args: object,
    vectorize: bool = True,
    **model_kwargs: object,
) -> dict[str, torch.Tensor]:
    """``num_samples`` joint draws of every latent site of a Pyro ``guide``, as one chain.

    The guide is called with the model's arguments (as in SVI). With ``vectorize``, one call
    inside ``pyro.plate("particles", num_samples)`` draws them all (AutoNormal, AutoDelta,
    AutoLowRankMultivariateNormal, ... support this); a guide that cannot be vectorised
    (an error, or draws without the particle dimension) is sampled in a loop instead, with a
    warning. Randomness comes from Pyro's global RNG (``pyro.set_rng_seed``).

    Returns:
        ``name -> [1, num_samples, *site_shape]`` for every non-observed, non-auxiliary sample
        site, detached.
    """
    _checks.positive_int("num_samples", num_samples)
    with torch.no_grad():
        first_trace = _trace(guide, model_args, model_kwargs)  # also sets up an AutoGuide
        first = _latent_values(first_trace)
        if vectorize:
            try:
                stacked = _vectorized_draws(
                    guide, num_samples, first_trace, model_args, model_kwargs
                )
            except (RuntimeError, ValueError) as error:
                warnings.warn(
                    f"the guide could not be sampled vectorised ({error}); sampling in a loop",
                    stacklevel=2,
                )
            else:
                return stacked
        samples = [
            _latent_values(_trace(guide, model_args, model_kwargs)) for _ in range(num_samples)
        ]
    return {name: torch.stack([s[name] for s in samples]).unsqueeze(0) for name in first}


def probs_from_guide(
    student: nn.Module,
    guide: Callable[..., object],
    x: torch.Tensor,
    num_samples: int,
    *model_args: object,
    draw_chunk: int | None = None,
    input_chunk: int | None = None,
    temperature: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    **model_kwargs: object,
) -> torch.Tensor:
    """``[1, num_samples, N, K]`` class probabilities of ``student`` under draws from ``guide``.

    The guide's latent sites are named after ``student.named_parameters()`` (as in
    ``BKDModel``); its other sites (e.g. hyper-parameters) are ignored, and parameters without a
    site keep their current values. ``model_args``/``model_kwargs`` are the model's arguments
    (the training data), ``x`` the inputs to predict at. See :func:`guide_draws` and
    :func:`predict_probs`.

    Raises:
        ValueError: no site of the guide is a parameter of ``student``.
    """
    sites = guide_draws(guide, num_samples, *model_args, **model_kwargs)
    names = [name for name, _ in student.named_parameters()]
    draws = {name: sites[name] for name in names if name in sites}
    if not draws:
        raise InputError(
            f"no site of the guide is a parameter of the student: sites {sorted(sites)}, "
            f"parameters {names}"
        )
    return predict_probs(
        student,
        draws,
        x,
        draw_chunk=draw_chunk,
        input_chunk=input_chunk,
        temperature=temperature,
        dtype=dtype,
        device=device,
    )


def _batched_logits(
    student: nn.Module, fixed: Mapping[str, torch.Tensor]
) -> Callable[[Draws, torch.Tensor], torch.Tensor]:
    """``(chunk of draws [s, ...], x [n, ...]) -> logits [s, n, K]`` through one ``vmap``."""

    def logits(params: Draws, x: torch.Tensor) -> torch.Tensor:
        return functional_call(student, {**fixed, **params}, (x,))

    return vmap(logits, in_dims=(0, None))


def _has_convolutions(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


def _probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(z / T)`` over the class dimension of batched logits ``[s, n, K]``."""
    if logits.dim() != 3:
        raise InputError(f"student must return logits [N, K], got {tuple(logits.shape[1:])}")
    return torch.softmax(logits / temperature, dim=-1)


def _check_draws(draws: Draws, params: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """Check names and shapes of ``draws``; return ``(chain, draw)``."""
    unknown = sorted(set(draws) - set(params))
    if unknown:
        raise InputError(
            f"draws has names that are not parameters of the student: {unknown}; "
            f"valid names: {list(params)}"
        )
    if not draws:
        raise InputError("draws is empty: give [chain, draw, ...] values for some parameters")
    leading = set()
    for name, value in draws.items():
        if value.dim() < 2 or value.shape[2:] != params[name].shape:
            expected = ", ".join(["chain", "draw", *map(str, params[name].shape)])
            raise InputError(
                f"draws[{name!r}] must have shape [{expected}], got {tuple(value.shape)}"
            )
        leading.add(tuple(value.shape[:2]))
    if len(leading) > 1:
        raise InputError(f"draws disagree on [chain, draw]: {sorted(leading)}")
    num_chains, num_draws = leading.pop()
    if num_chains * num_draws == 0:
        raise InputError(f"draws hold no draws: [chain, draw] = [{num_chains}, {num_draws}]")
    return num_chains, num_draws


def _device_of(params: Mapping[str, torch.Tensor]) -> torch.device:
    return next(iter(params.values())).device


def _trace(
    guide: Callable[..., object], args: tuple[object, ...], kwargs: Mapping[str, object]
) -> poutine.Trace:
    return poutine.trace(guide).get_trace(*args, **kwargs)


def _latent_values(trace: poutine.Trace) -> dict[str, torch.Tensor]:
    """Values of the non-observed, non-auxiliary sample sites of a guide trace."""
    return {
        name: site["value"].detach()
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and not site["infer"].get("is_auxiliary", False)
    }


def _plate_nesting(trace: poutine.Trace) -> int:
    """Number of batch dimensions the trace's vectorised plates use."""
    dims = [
        -frame.dim
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return max(dims, default=0)


def _vectorized_draws(
    guide: Callable[..., object],
    num_samples: int,
    single_trace: poutine.Trace,
    args: tuple[object, ...],
    kwargs: Mapping[str, object],
) -> dict[str, torch.Tensor]:
    """All draws from one guide call in a particle plate left of every plate in use.

    The plates in use are those of the guide's trace and, for an AutoGuide, of the model's
    prototype trace.
    """
    traces = [single_trace]
    prototype = getattr(guide, "prototype_trace", None)
    if prototype is not None:
        traces.append(prototype)
    nesting = max(_plate_nesting(t) for t in traces)
    with pyro.plate(PARTICLES_PLATE, num_samples, dim=-nesting - 1):
        values = _latent_values(_trace(guide, args, kwargs))
    draws = {}
    for name, value in _latent_values(single_trace).items():
        if name not in values or value.numel() * num_samples != values[name].numel():
            raise ValueError(f"site {name!r} came out without the particle dimension")
        draws[name] = values[name].reshape(1, num_samples, *value.shape)
    return draws
