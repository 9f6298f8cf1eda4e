"""The random streams of a run: one shared by all chains, one of its own for each chain.

A chain's noise, minibatches and accept/reject tests come from its own ``torch.Generator``,
seeded from ``(seed, chain index)`` alone (:func:`chain_seed`). So a chain's draws do not
depend on how many chains run beside it or in which process: 2 processes running chains
``{0, 1}`` and ``{2, 3}`` produce exactly the draws of 1 process running ``{0, 1, 2, 3}``,
and a resumed run continues every stream where it stopped.

The shared stream (seeded with ``seed``) makes the choices that concern the run as a whole
and must be the same in every process: the MAP search's minibatches, the dispersion of the
starts, HMC's trajectory lengths and the curvature probes of warm-up.

Where a random source is taken (:data:`RandomSource`), ``None`` means torch's global RNG
(the Pyro kernels, seeded with ``pyro.set_rng_seed``) and one ``torch.Generator`` draws all
chains from one stream (the tests' many-replicate runs, where a generator per replicate
would cost a kernel launch each).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch


def chain_seed(seed: int, chain: int) -> int:
    """The seed of chain ``chain``'s stream: 63 bits of ``SHA-256("pyro-bkd:seed:chain")``
    (streams of neighbouring chains or seeds share no structure)."""
    digest = hashlib.sha256(f"pyro-bkd:{seed}:{chain}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class Streams:
    """The shared stream and the streams of chains ``chain_ids`` of a run seeded ``seed``."""

    def __init__(
        self, seed: int, chain_ids: Iterable[int], device: torch.device | str = "cpu"
    ) -> None:
        self.chain_ids = tuple(chain_ids)
        self.shared = torch.Generator(device=device).manual_seed(seed)
        self.chains = tuple(
            torch.Generator(device=device).manual_seed(chain_seed(seed, c)) for c in self.chain_ids
        )

    def normal(self, like: torch.Tensor) -> torch.Tensor:
        """``xi ~ N(0, I)`` shaped like ``like [C, ...]``, row ``c`` from chain ``c``'s stream."""
        out = torch.empty_like(like)
        for row, generator in zip(out, self.chains, strict=True):
            row.normal_(generator=generator)
        return out

    def uniform(self, like: torch.Tensor) -> torch.Tensor:
        """``u ~ U[0, 1)`` shaped like ``like [C, ...]``, row ``c`` from chain ``c``'s stream."""
        out = torch.empty_like(like)
        for row, generator in zip(out, self.chains, strict=True):
            row.uniform_(generator=generator)
        return out

    def state_dict(self) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        return {
            "shared": self.shared.get_state(),
            "chains": [g.get_state() for g in self.chains],
        }

    def load_state_dict(self, state: dict) -> None:
        self.shared.set_state(state["shared"])
        for generator, saved in zip(self.chains, state["chains"], strict=True):
            generator.set_state(saved)


#: Where random numbers come from (module docstring).
RandomSource = Streams | torch.Generator | None


def standard_normal(like: torch.Tensor, rng: RandomSource) -> torch.Tensor:
    """``xi ~ N(0, I)`` of the shape, dtype and device of ``like [C, ...]``."""
    if isinstance(rng, Streams):
        return rng.normal(like)
    return torch.randn(like.shape, generator=rng, device=like.device, dtype=like.dtype)


def uniform(like: torch.Tensor, rng: RandomSource) -> torch.Tensor:
    """``u ~ U[0, 1)`` of the shape, dtype and device of ``like [C, ...]``."""
    if isinstance(rng, Streams):
        return rng.uniform(like)
    return torch.rand(like.shape, generator=rng, device=like.device, dtype=like.dtype)


def shared_generator(rng: RandomSource) -> torch.Generator | None:
    """The generator of run-level choices: a :class:`Streams`' shared stream, else ``rng``."""
    return rng.shared if isinstance(rng, Streams) else rng


def random_int(low: int, high: int, rng: RandomSource) -> int:
    """An integer uniform on ``[low, high)`` from the shared stream of ``rng``."""
    generator = shared_generator(rng)
    device = "cpu" if generator is None else generator.device
    return int(torch.randint(low, high, (1,), generator=generator, device=device))
