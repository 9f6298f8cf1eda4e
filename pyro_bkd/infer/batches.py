"""Minibatch indices without a permutation of ``N`` per step.

Each chain walks through its own random permutation of ``0..N-1`` in slices of ``m``, drawn
from its own stream (:class:`~pyro_bkd.infer.streams.Streams`), or from torch's global RNG
when none is given (sampling without replacement within a pass, like a shuffled DataLoader with
``drop_last``); a new permutation is drawn once per pass, so the cost per step is ``O(m)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pyro_bkd._checks import InputError


class EpochBatches:
    """Indices ``[chains, m]`` for each step (``None`` when ``m`` is the full data)."""

    def __init__(
        self,
        num_examples: int,
        batch_size: int | None,
        num_chains: int = 1,
        *,
        generators: Sequence[torch.Generator] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if batch_size is not None and not 0 < batch_size <= num_examples:
            raise InputError(
                f"batch_size (subsample_size) must be in [1, N={num_examples}], got {batch_size}"
            )
        self.num_examples = num_examples
        self.batch_size = None if batch_size == num_examples else batch_size
        self.num_chains = num_chains
        if generators is not None and len(generators) != num_chains:
            raise InputError(f"need one generator per chain ({num_chains}), got {len(generators)}")
        self.generators = generators
        self.device = torch.device(device)
        self._perm: torch.Tensor | None = None
        self._position = 0

    def next(self) -> torch.Tensor | None:
        """The next minibatch of every chain, ``[chains, m]``; ``None`` means all ``N``."""
        m = self.batch_size
        if m is None:
            return None
        if self._perm is None or self._position + m > self.num_examples:
            self._perm = self._keys().argsort(dim=1)
            self._position = 0
        idx = self._perm[:, self._position : self._position + m]
        self._position += m
        return idx

    def _keys(self) -> torch.Tensor:
        """``[chains, N]`` uniform keys whose per-row order is a random permutation."""
        shape = (self.num_chains, self.num_examples)
        if self.generators is None:
            return torch.rand(shape, device=self.device)
        keys = torch.empty(shape, device=self.device)
        for row, generator in zip(keys, self.generators, strict=True):
            row.uniform_(generator=generator)
        return keys

    def state_dict(self) -> dict:
        return {"perm": self._perm, "position": self._position}

    def load_state_dict(self, state: dict) -> None:
        self._perm = state["perm"]
        self._position = state["position"]
