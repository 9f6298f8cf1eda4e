"""MC dropout (Gal & Ghahramani, 2016): dropout kept on at test time as approximate inference.

A student trained with dropout of rate ``p`` on the inputs of its fully connected layers
approximately minimises the KL divergence from a variational family of weight matrices whose
columns are zeroed with probability ``p``. Each test-time forward pass with a fresh dropout mask
``z_s`` is one draw ``q^(s)(x) = softmax(f(x; theta, z_s))``.

:func:`add_dropout` inserts the dropout layers into any student, :func:`mc_dropout_probs` draws
``q^(s)(x)`` with only the dropout layers in train mode (batch norm keeps its running
statistics, as it must at test time).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from pyro_bkd import _checks
from pyro_bkd._torch import device_of, eval_mode, seeded

#: Test inputs per forward pass of :func:`mc_dropout_probs`.
INPUT_CHUNK = 1024


def add_dropout(student: nn.Module, rate: float, example: torch.Tensor) -> nn.Module:
    """A copy of ``student`` with ``nn.Dropout(rate)`` before each hidden fully connected layer.

    Every ``nn.Linear`` whose input is a hidden activation becomes
    ``nn.Sequential(nn.Dropout(rate), linear)`` (so its parameters are renamed
    ``<name>.1.weight``, ``<name>.1.bias``). Layers that read the raw input (found by running
    ``student`` on ``example`` and comparing storage) are left alone: dropping pixels is data
    augmentation, not MC dropout. A student whose only fully connected layers read the input
    (softmax regression) gets input dropout instead, the only dropout it can have.

    Args:
        student: the network; it is not modified.
        rate: dropout probability ``p`` in ``(0, 1)``.
        example: a few inputs of the student, ``[n, ...]``.

    Raises:
        ValueError: ``rate`` outside ``(0, 1)`` or a student without ``nn.Linear`` layers.
    """
    rate = _checks.fraction("rate", rate, open_low=True, note=" (a dropout probability)")
    _checks.tensor("example", example)
    linear_names = [name for name, m in student.named_modules() if isinstance(m, nn.Linear)]
    if not linear_names:
        raise ValueError(
            f"add_dropout needs a student with nn.Linear layers; {type(student).__name__} has none"
        )
    reads_input = _layers_reading_input(student, example, linear_names)
    hidden = [name for name in linear_names if name not in reads_input] or linear_names
    copied = copy.deepcopy(student)
    for name in hidden:
        parent_name, _, child = name.rpartition(".")
        parent = copied.get_submodule(parent_name)
        setattr(parent, child, nn.Sequential(nn.Dropout(rate), getattr(parent, child)))
    return copied


def mc_dropout_probs(
    student: nn.Module,
    x: torch.Tensor,
    num_samples: int,
    *,
    seed: int = 0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``q^(s)(x_n) = softmax(f(x_n; theta, z_s) / T)`` for ``num_samples`` dropout masks.

    Draw ``s`` uses one mask per input (the masks of different inputs are independent, as in
    training), drawn from a generator seeded with ``seed`` (the global RNG is left as it
    was). Only the ``nn.Dropout`` layers are put in train mode; the modes are restored after.

    Returns:
        ``[1, num_samples, N, K]`` float32 probabilities on the CPU: one chain of independent
        draws, so its R-hat is close to 1 by construction.

    Raises:
        ValueError: a student without dropout layers (use :func:`add_dropout`), a bad
            ``num_samples`` or ``temperature``.
    """
    _checks.tensor("x", x)
    num_samples = _checks.positive_int("num_samples", num_samples)
    temperature = _checks.positive_float("temperature", temperature)
    dropouts = [m for m in student.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    if not dropouts:
        raise ValueError("student has no dropout layers; build it with add_dropout(student, p, x)")
    device = device_of(student)
    draws = []
    with torch.no_grad(), eval_mode(student, keep_training=dropouts), seeded(seed, device):
        for _ in range(num_samples):
            logits = torch.cat([student(chunk.to(device)) for chunk in torch.split(x, INPUT_CHUNK)])
            draws.append((logits.double() / temperature).softmax(-1).float().cpu())
    return torch.stack(draws)[None]


def _layers_reading_input(
    student: nn.Module, example: torch.Tensor, linear_names: list[str]
) -> set[str]:
    """Names of the ``nn.Linear`` layers whose input shares storage with ``example``."""
    example = example.contiguous().to(device_of(student))
    pointer = example.untyped_storage().data_ptr()
    found: set[str] = set()
    modules = dict(student.named_modules())
    handles = []
    for name in linear_names:

        def record(_: nn.Module, args: tuple, name: str = name) -> None:
            if args and args[0].untyped_storage().data_ptr() == pointer:
                found.add(name)

        handles.append(modules[name].register_forward_pre_hook(record))
    try:
        with torch.no_grad(), eval_mode(student):
            student(example)
    finally:
        for handle in handles:
            handle.remove()
    return found
