"""Minibatch indices: one batcher for KD, SVI, the MAP search, teacher training and the samplers.

Each pass over the data is a fresh random permutation of ``0..N-1`` per chain (sampling without
replacement within a pass, like a shuffled ``DataLoader``), drawn with ``torch.randperm`` from
the chain's own generator (:class:`~pyro_bkd.infer.streams.Streams`), or from torch's global CPU
generator when none is given. A pass is cut in one of two ways:

- ``split="fixed"``: ``floor(N / m)`` batches of exactly ``m``, the remainder dropped. The
  stochastic-gradient samplers use it: their gradient-noise level, measured in warm-up, must
  not change from step to step.
- ``split="even"``: ``ceil(N / m)`` batches whose sizes differ by at most one (no tiny last
  batch), every example once per pass. The optimisers (KD, SVI, teachers) use it.

The permutation is drawn once per pass, so the cost per step is ``O(m)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from pyro_bkd._checks import InputError

Split = Literal["fixed", "even"]
SPLITS: tuple[str, ...] = ("fixed", "even")


class EpochBatches:
    """Indices ``[chains, m_j]`` of each minibatch, pass after pass.

    Args:
        num_examples: ``N``.
        batch_size: ``m``; ``None`` means the full data (:meth:`next` returns ``None``), and
            so does ``m = N`` with ``split="fixed"``. ``"fixed"`` needs ``m <= N``;
            ``"even"`` takes any ``m >= 1`` (``m >= N``: one batch of all ``N``, reshuffled).
        num_chains: rows of each batch, one permutation per chain.
        generators: one ``torch.Generator`` per chain (each permutation is drawn on its
            generator's device, then moved to ``device``); ``None``: torch's global CPU RNG.
        device: where the indices live.
        split: ``"fixed"`` or ``"even"`` (module docstring).
    """

    def __init__(
        self,
        num_examples: int,
        batch_size: int | None,
        num_chains: int = 1,
        *,
        generators: Sequence[torch.Generator] | None = None,
        device: torch.device | str = "cpu",
        split: Split = "fixed",
    ) -> None:
        if split not in SPLITS:
            raise InputError(f"split must be one of {SPLITS}, got {split!r}")
        fixed = split == "fixed"
        if batch_size is not None and (batch_size < 1 or (fixed and batch_size > num_examples)):
            bound = f"in [1, N={num_examples}]" if fixed else ">= 1"
            raise InputError(f"batch_size (subsample_size) must be {bound}, got {batch_size}")
        if generators is not None and len(generators) != num_chains:
            raise InputError(f"need one generator per chain ({num_chains}), got {len(generators)}")
        self.num_examples = num_examples
        full = batch_size is None or (fixed and batch_size == num_examples)
        self.batch_size = None if full else batch_size
        self.num_chains = num_chains
        self.generators = generators
        self.device = torch.device(device)
        self.split = split
        self._perm: torch.Tensor | None = None
        self._pass: tuple[torch.Tensor, ...] = ()
        self._position = 0

    def next(self) -> torch.Tensor | None:
        """The next minibatch of every chain, ``[chains, m_j]``; ``None`` means all ``N``."""
        if self.batch_size is None:
            return None
        if self._position == len(self._pass):
            self._new_pass()
            self._position = 0
        idx = self._pass[self._position]
        self._position += 1
        return idx

    def epoch(self) -> tuple[torch.Tensor, ...]:
        """All minibatches ``[chains, m_j]`` of a fresh pass (a whole epoch of an optimiser)."""
        if self.batch_size is None:
            raise InputError("epoch() needs a batch_size; None means the full data")
        self._new_pass()
        self._position = len(self._pass)
        return self._pass

    @property
    def num_batches(self) -> int:
        """Minibatches per pass: ``floor(N / m)`` (fixed) or ``ceil(N / m)`` (even)."""
        if self.batch_size is None:
            return 1
        if self.split == "fixed":
            return self.num_examples // self.batch_size
        return -(-self.num_examples // self.batch_size)

    def _new_pass(self) -> None:
        self._perm = self._permutations()
        self._pass = self._cut(self._perm)

    def _cut(self, perm: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One pass ``perm [chains, N]`` cut into its minibatches (views of ``perm``)."""
        m = self.batch_size
        assert m is not None
        if self.split == "fixed":
            return perm[:, : self.num_batches * m].split(m, dim=1)
        return perm.tensor_split(self.num_batches, dim=1)

    def _permutations(self) -> torch.Tensor:
        """``[chains, N]``: a ``torch.randperm`` per chain, from its generator."""
        n = self.num_examples
        if self.generators is None:
            rows = [torch.randperm(n) for _ in range(self.num_chains)]
        else:
            rows = [torch.randperm(n, generator=g, device=g.device) for g in self.generators]
        return torch.stack([row.to(self.device) for row in rows])

    def state_dict(self) -> dict:
        """The current pass and how many of its batches were used (to resume exactly)."""
        return {"perm": self._perm, "position": self._position}

    def load_state_dict(self, state: dict) -> None:
        self._perm = state["perm"]
        self._pass = () if self._perm is None else self._cut(self._perm)
        self._position = state["position"]
