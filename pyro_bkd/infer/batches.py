"""Minibatch indices without a permutation of ``N`` per step.

Each chain walks through its own random permutation of ``0..N-1`` in slices of ``m``
(sampling without replacement within a pass, like a shuffled DataLoader with
``drop_last``); a new permutation is drawn once per pass, so the cost per step is ``O(m)``.
"""

from __future__ import annotations

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
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if batch_size is not None and not 0 < batch_size <= num_examples:
            raise InputError(
                f"batch_size (subsample_size) must be in [1, N={num_examples}], got {batch_size}"
            )
        self.num_examples = num_examples
        self.batch_size = None if batch_size == num_examples else batch_size
        self.num_chains = num_chains
        self.generator = generator
        self.device = torch.device(device)
        self._perm: torch.Tensor | None = None
        self._position = 0

    def next(self) -> torch.Tensor | None:
        """The next minibatch of every chain, ``[chains, m]``; ``None`` means all ``N``."""
        m = self.batch_size
        if m is None:
            return None
        if self._perm is None or self._position + m > self.num_examples:
            keys = torch.rand(
                self.num_chains, self.num_examples, generator=self.generator, device=self.device
            )
            self._perm = keys.argsort(dim=1)
            self._position = 0
        idx = self._perm[:, self._position : self._position + m]
        self._position += m
        return idx

    def state_dict(self) -> dict:
        return {"perm": self._perm, "position": self._position}

    def load_state_dict(self, state: dict) -> None:
        self._perm = state["perm"]
        self._position = state["position"]
