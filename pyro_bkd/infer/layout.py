"""One flat vector for all weight tensors: ``theta`` of length ``D`` and named views of it.

Keeping the weights of a chain in one contiguous tensor makes the SGLD update one fused
operation (``theta - eps/2 grad + sqrt(eps T) xi`` with one draw of ``D`` normals) instead of
one kernel launch per weight tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from pyro_bkd._checks import InputError


@dataclass(frozen=True)
class FlatLayout:
    """Names, shapes and offsets of the weight tensors packed into ``theta``."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def of(cls, params: Mapping[str, torch.Tensor]) -> FlatLayout:
        """The layout of a ``{name: tensor}`` dict, in its iteration order."""
        return cls(tuple(params), tuple(torch.Size(p.shape) for p in params.values()))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(shape.numel() for shape in self.shapes)

    @property
    def dim(self) -> int:
        """``D``, the total number of weights."""
        return sum(self.sizes)

    def flatten(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Pack ``{name: tensor [*batch, *shape]}`` into ``theta [*batch, D]``."""
        missing = set(self.names) - set(params)
        if missing:
            raise InputError(f"params lack the weight sites {sorted(missing)}")
        first = params[self.names[0]]
        batch = first.shape[: first.dim() - len(self.shapes[0])]
        return torch.cat([params[n].reshape(*batch, -1) for n in self.names], dim=-1)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named views of ``theta [*batch, D]`` with shapes ``[*batch, *shape]`` (no copy)."""
        batch = theta.shape[:-1]
        pieces = torch.split(theta, self.sizes, dim=-1)
        return {
            name: piece.view(batch + shape)
            for name, piece, shape in zip(self.names, pieces, self.shapes, strict=True)
        }
