"""Fully connected students: softmax regression and a ReLU multilayer perceptron."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from itertools import pairwise

from torch import nn


class MLP(nn.Sequential):
    """ReLU multilayer perceptron (Rumelhart et al., 1986); flattens its input, so images work too.

    Layers are named ``fc1, fc2, ...`` and ``out``, so parameter names read well in a posterior.
    """

    def __init__(
        self, in_features: int, num_classes: int, hidden: Sequence[int] = (256, 256)
    ) -> None:
        if isinstance(hidden, str | bytes) or not isinstance(hidden, Sequence):
            raise TypeError(f"hidden must be a sequence of ints, got {type(hidden).__name__}")
        if not all(isinstance(h, int) and not isinstance(h, bool) for h in hidden):
            raise TypeError(f"hidden must hold ints, got {tuple(hidden)!r}")
        if not all(h > 0 for h in hidden):
            raise ValueError(f"hidden must hold positive ints, got {tuple(hidden)!r}")
        widths = [in_features, *hidden]
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        for i, (width_in, width_out) in enumerate(pairwise(widths), 1):
            layers[f"fc{i}"] = nn.Linear(width_in, width_out)
            layers[f"relu{i}"] = nn.ReLU()
        layers["out"] = nn.Linear(widths[-1], num_classes)
        super().__init__(layers)


def linear(in_features: int, num_classes: int) -> MLP:
    """Softmax (multinomial logistic) regression: an :class:`MLP` without hidden layers."""
    return MLP(in_features, num_classes, hidden=())
