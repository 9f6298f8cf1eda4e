"""Teacher and student architectures, built by name.

>>> import models
>>> net = models.build("resnet20", num_classes=100)
>>> student = models.build("mlp", num_classes=10, in_features=784, hidden=(128, 128))

Every model is a plain ``torch.nn.Module`` with a pure forward pass, so it works with
``torch.func.functional_call`` and ``torch.func.vmap`` over stacked parameters. Models with
batch norm (ResNets, WRNs, VGGs) must be in eval mode for that: in training mode batch norm
updates its running statistics in place.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import NamedTuple

from pyro_bkd.models import lenet, mlp, resnet, small_cnn, vgg, wrn
from torch import nn


class _Entry(NamedTuple):
    factory: Callable[..., nn.Module]
    input_arg: str  # "in_features" or "in_channels"
    default_input: int | None  # used when the caller passes None


_REGISTRY: dict[str, _Entry] = {
    "linear": _Entry(mlp.linear, "in_features", None),
    "mlp": _Entry(mlp.MLP, "in_features", None),
    "lenet": _Entry(lenet.LeNet5, "in_channels", None),
    "small_cnn": _Entry(small_cnn.SmallCNN, "in_channels", None),
    "resnet8": _Entry(resnet.resnet8, "in_channels", 3),
    "resnet20": _Entry(resnet.resnet20, "in_channels", 3),
    "resnet32": _Entry(resnet.resnet32, "in_channels", 3),
    "resnet56": _Entry(resnet.resnet56, "in_channels", 3),
    "resnet110": _Entry(resnet.resnet110, "in_channels", 3),
    "resnet8x4": _Entry(resnet.resnet8x4, "in_channels", 3),
    "resnet32x4": _Entry(resnet.resnet32x4, "in_channels", 3),
    "wrn_16_2": _Entry(wrn.wrn_16_2, "in_channels", 3),
    "wrn_40_2": _Entry(wrn.wrn_40_2, "in_channels", 3),
    "vgg8": _Entry(vgg.vgg8, "in_channels", 3),
    "vgg13": _Entry(vgg.vgg13, "in_channels", 3),
}

_INPUT_HINTS = {
    "in_features": "the number of input features, e.g. 784 for 28x28 grey images",
    "in_channels": "the number of image channels, 1 for grey or 3 for colour",
}


def available() -> list[str]:
    """The names :func:`build` accepts, fully connected and small models first."""
    return list(_REGISTRY)


def build(
    name: str,
    num_classes: int,
    in_channels: int | None = None,
    in_features: int | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build the architecture ``name`` with ``num_classes`` outputs (logits).

    ``mlp`` and ``linear`` need ``in_features`` (they flatten their input); convolutional
    models read ``in_channels`` (ResNets, WRNs and VGGs default to 3; ``lenet`` and
    ``small_cnn`` need it). The argument a model does not use is ignored, so callers may pass
    both. ``kwargs`` go to the model: ``hidden`` for ``mlp``, ``width`` for ``small_cnn``.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(available())}")
    entry = _REGISTRY[name]
    extra = inspect.signature(entry.factory).parameters.keys() - {entry.input_arg, "num_classes"}
    unknown = sorted(kwargs.keys() - extra)
    if unknown:
        accepted = ", ".join(sorted(extra)) or "none"
        raise TypeError(
            f"{name} got unexpected keyword argument(s) {', '.join(unknown)}; accepted: {accepted}"
        )
    size = in_features if entry.input_arg == "in_features" else in_channels
    if size is None:
        size = entry.default_input
    if size is None:
        raise ValueError(f"{name} needs {entry.input_arg} ({_INPUT_HINTS[entry.input_arg]})")
    inputs = {entry.input_arg: _positive_int(entry.input_arg, size)}
    return entry.factory(**inputs, num_classes=_positive_int("num_classes", num_classes), **kwargs)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value
