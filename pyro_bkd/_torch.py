"""Torch helpers shared by the whole package: devices, RNG forking, eval mode, batched logits.

One home for what every trainer and evaluator needs, so that teachers, students, baselines,
the samplers and the pipeline agree on it:

- :func:`default_device`, :func:`device_of`, :func:`run_device`: which device a run uses;
- :func:`rng_devices` and :func:`seeded`: the CUDA devices :func:`torch.random.fork_rng` must
  fork, and a block run under a seeded global RNG that is restored afterwards;
- :func:`eval_mode`: a block with a network in eval mode, every submodule's mode restored;
- :func:`network_logits`: the logits of any network, batch by batch, without gradients.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from pyro_bkd import _checks

#: Batch size of the no-grad evaluation passes.
EVAL_BATCH = 512


def default_device(device: torch.device | str | None = None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_of(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter or buffer (CPU when it has none)."""
    tensor = next(iter(module.parameters()), None)
    if tensor is None:
        tensor = next(iter(module.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


def run_device(module: nn.Module, device: torch.device | str | None) -> torch.device:
    """The device to run ``module`` on: its own for ``None``, else ``device`` (moved there)."""
    if device is None:
        return device_of(module)
    device = torch.device(device)
    module.to(device)
    return device


def rng_devices(device: torch.device) -> list[int]:
    """The CUDA device whose RNG :func:`torch.random.fork_rng` must fork (none on CPU)."""
    if device.type != "cuda":
        return []
    return [torch.cuda.current_device() if device.index is None else device.index]


@contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run a block with the global RNG seeded by ``seed``; the RNG state of the CPU (and of
    ``device`` when it is a CUDA device) is restored on exit."""
    with torch.random.fork_rng(devices=rng_devices(device or torch.device("cpu"))):
        torch.manual_seed(seed)
        yield


@contextmanager
def eval_mode(module: nn.Module, keep_training: Iterable[nn.Module] = ()) -> Iterator[nn.Module]:
    """Run a block with ``module`` in eval mode (except the submodules in ``keep_training``,
    put in train mode); every submodule's own mode is restored on exit."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    for layer in keep_training:
        layer.train()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def batched_logits(
    model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Logits of ``x`` on ``device``, batch by batch, in eval mode, without gradients."""
    with eval_mode(model), torch.no_grad():
        return torch.cat([model(batch.to(device)) for batch in torch.split(x, batch_size)])


def network_logits(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int = EVAL_BATCH,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Logits ``f(x_i)`` of any network, shape ``[N, K]``, on the CPU.

    Computed in eval mode under ``torch.no_grad`` in batches of ``batch_size``; the model's
    train/eval modes are restored afterwards. ``device=None`` runs on the model's device; a
    given ``device`` moves the model there first.
    """
    _checks.tensor("x", x)
    batch_size = _checks.positive_int("batch_size", batch_size)
    return batched_logits(model, x, batch_size, run_device(model, device)).cpu()
