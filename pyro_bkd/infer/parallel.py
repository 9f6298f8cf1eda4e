"""One run over several processes with ``torch.distributed`` (gloo on CPU, NCCL on GPUs).

Launched the way PyTorch users launch anything, ``torchrun --nproc_per_node=K ...``; each of
the ``K`` processes (ranks) calls :func:`~pyro_bkd.infer.driver.sample` with the same
arguments. Two ways to split the work (:class:`Partition`):

- ``"chains"``: rank ``r`` runs chains ``[r C/K, (r+1) C/K)`` on its own device. Each chain's
  randomness is its own stream seeded from ``(seed, chain)``
  (:mod:`~pyro_bkd.infer.streams`), the run-level choices come from the shared stream, and
  what warm-up pools over chains (dual averaging's acceptance rate) is gathered first; so
  on CPUs ``K`` processes produce exactly the draws of one process running all ``C`` chains
  (bit for bit). On GPUs they agree up to float rounding only: cuBLAS picks its kernels by
  the number of chains batched in a process (measured on an H200: 2e-5 after 20 draws). At the
  end every rank gathers all chains' draws and sample stats (``all_gather``), so all ranks
  return the same :class:`~pyro_bkd.infer.result.SamplingResult`.
- ``"data"``: every rank runs all ``C`` chains on its shard of the ``N`` training points
  (:class:`ShardedPotential`): the data part of ``U`` and its gradient are summed over ranks
  (``all_reduce``), the weight prior is added once. The chains' streams are the same on every
  rank, so all ranks draw the same minibatch indices (each evaluates those that fall in its
  shard) and the same noise, and the weights stay identical everywhere; the draws equal a
  one-process run's with the same global minibatches, up to the order of the float sums.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Literal

import torch
import torch.distributed as dist

from pyro_bkd._checks import InputError
from pyro_bkd.infer.potential import BKDPotential, Potential

Mode = Literal["single", "chains", "data"]


@dataclasses.dataclass(frozen=True)
class Partition:
    """How a run is split over ``world_size`` processes; this process is ``rank``."""

    mode: Mode = "single"
    rank: int = 0
    world_size: int = 1

    @classmethod
    def resolve(cls, distributed: bool | str | None) -> Partition:
        """``distributed``: ``None`` (``"chains"`` when ``torch.distributed`` is initialised
        with more than one process or torchrun launched more than one, else one process),
        ``False`` (one process), ``True`` (``"chains"``), ``"chains"`` or ``"data"``; the
        process group is initialised from torchrun's environment if needed."""
        if distributed is None:
            distributed = "chains" if _launched_on_several_processes() else False
        if distributed is False:
            return cls()
        if distributed is True:
            distributed = "chains"
        if distributed not in ("chains", "data"):
            raise InputError(
                f"distributed must be None, True, False, 'chains' or 'data', got {distributed!r}"
            )
        init_process_group()
        return cls(distributed, dist.get_rank(), dist.get_world_size())

    @property
    def is_main(self) -> bool:
        """Whether this process writes outputs (rank 0)."""
        return self.rank == 0

    def chain_ids(self, num_chains: int) -> range:
        """The chains this process runs."""
        if self.mode != "chains":
            return range(num_chains)
        if num_chains % self.world_size:
            raise InputError(
                f"num_chains must be a multiple of the number of processes "
                f"({self.world_size}) to split the chains, got {num_chains}"
            )
        share = num_chains // self.world_size
        return range(self.rank * share, (self.rank + 1) * share)

    def shard(self, num_examples: int) -> tuple[int, int]:
        """Rows ``[lo, hi)`` of the training set this process holds (all of them unless the
        data are split; the first ``N mod K`` ranks get one row more)."""
        if self.mode != "data":
            return 0, num_examples
        base, extra = divmod(num_examples, self.world_size)
        if base == 0:
            raise InputError(
                f"cannot split N={num_examples} training points over {self.world_size} processes"
            )
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (self.rank < extra)

    def gather(self, value: torch.Tensor) -> torch.Tensor:
        """``[c, ...]`` of this process's chains to ``[C, ...]`` of all chains, in chain
        order (the identity unless the chains are split)."""
        if self.mode != "chains":
            return value
        device = value.device
        moved = value.contiguous().to(_collective_device(device))
        parts = [torch.empty_like(moved) for _ in range(self.world_size)]
        dist.all_gather(parts, moved)
        return torch.cat(parts).to(device)

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers of ``module`` (in place)."""
        if self.mode == "single":
            return
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                moved = tensor.detach().to(_collective_device(tensor.device))
                dist.broadcast(moved, src=0)
                tensor.copy_(moved)

    def checkpoint_path(self, path: str | os.PathLike[str]) -> str:
        """This process's checkpoint file: ``path`` itself in one process, else
        ``<path>.rank<r>-of-<K>`` (each rank saves and resumes its own state)."""
        path = os.fspath(path)
        return path if self.world_size == 1 else f"{path}.rank{self.rank}-of-{self.world_size}"

    def config(self, num_examples: int | None, batch_size: int | None) -> dict[str, Any]:
        """The split, for a run's config: mode and processes; with the data split, each
        rank's rows and its expected share of a global minibatch of ``batch_size``
        (``m n_r / N``: the rows of the minibatch that fall in its shard; ``None``: full
        batch, all its rows)."""
        config: dict[str, Any] = {"mode": self.mode, "world_size": self.world_size}
        if self.mode == "data" and num_examples is not None:
            shards = [
                hi - lo
                for lo, hi in (
                    dataclasses.replace(self, rank=r).shard(num_examples)
                    for r in range(self.world_size)
                )
            ]
            config["rows_per_rank"] = shards
            config["global_batch_size"] = batch_size or num_examples
            config["batch_size_per_rank"] = [
                n if batch_size is None else round(batch_size * n / num_examples, 2) for n in shards
            ]
        return config


def _launched_on_several_processes() -> bool:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """Whether this process writes outputs and prints results: rank 0 of an initialised
    process group, or the only process."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def init_process_group() -> None:
    """Initialise ``torch.distributed`` from torchrun's environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ...) unless it is already: gloo for CPU tensors and, when
    CUDA is present, NCCL for CUDA tensors (``"cpu:gloo,cuda:nccl"``), so a CPU run on a GPU
    machine works too."""
    if not dist.is_available():
        raise InputError("distributed sampling needs a torch build with torch.distributed")
    if dist.is_initialized():
        return
    if "WORLD_SIZE" not in os.environ:
        raise InputError(
            "distributed=True outside torchrun: launch with `torchrun --nproc_per_node=K ...` "
            "or call torch.distributed.init_process_group first"
        )
    dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")


def local_device() -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` when CUDA is present (torchrun sets
    ``LOCAL_RANK``), else the CPU."""
    if torch.cuda.is_available():
        index = int(os.environ.get("LOCAL_RANK", "0"))
        if index >= torch.cuda.device_count():
            raise InputError(
                f"process {index} of this machine has no GPU of its own "
                f"({torch.cuda.device_count()} found): launch at most that many processes per "
                "machine (--nproc_per_node), or run on the CPU (--device cpu)"
            )
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def _collective_device(device: torch.device) -> torch.device:
    """Where a tensor on ``device`` must be for the process group's backend: the current GPU
    for a group of NCCL alone, the CPU for gloo alone, else where it is."""
    backend = dist.get_backend()
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    if backend == "gloo":
        return torch.device("cpu")
    return device


class _SumOverRanks(torch.autograd.Function):
    """``sum_r x_r`` (``all_reduce``), passing gradients through unchanged: with
    :class:`_Replicated` on the input side it differentiates ``sum_r f_r(theta)`` for weights
    ``theta`` held identically by every rank (twice, for Hessian-vector products)."""

    @staticmethod
    def forward(ctx, value: torch.Tensor) -> torch.Tensor:
        total = value.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class _Replicated(torch.autograd.Function):
    """The identity on weights every rank holds; their gradient is summed over ranks."""

    @staticmethod
    def forward(ctx, theta: torch.Tensor) -> torch.Tensor:
        return theta.view_as(theta)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _SumOverRanks.apply(grad)


class ShardedPotential(Potential):
    """The BKD potential of all ``N`` training points when this process holds rows
    ``[offset, offset + n)`` of them (module docstring).

    ``U_B(theta) = -(N/m) sum_r sum_{i in B, i in shard r} [log q_{i,y_i} + TIP_i] - log
    N(theta; 0, sigma^2 I)`` for a global minibatch ``B`` of size ``m`` (``N/m = 1`` on the
    full data); each rank sums the rows of ``B`` it holds, padding its share to the longest
    chain's with rows of weight 0.
    """

    transforms: dict = {}  # noqa: RUF012 - every weight site is unconstrained

    def __init__(self, local: BKDPotential, offset: int, num_examples: int) -> None:
        self.local = local
        self.offset = offset
        self.num_examples = num_examples
        self.layout = local.layout

    def initial_theta(self) -> torch.Tensor:
        return self.local.initial_theta()

    def _local_rows(
        self, idx: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, float]:
        """``(local indices [C, R], weights [C, R], N/m)`` of global minibatches ``idx [C, m]``
        (``None``: every local row, weight 1, scale 1)."""
        if idx is None:
            return None, None, 1.0
        lo, n_local = self.offset, self.local.num_examples
        mine = (idx >= lo) & (idx < lo + n_local)
        width = max(1, int(mine.sum(-1).max()))
        order = (~mine).to(torch.uint8).argsort(dim=-1, stable=True)[..., :width]
        local = (idx.gather(-1, order) - lo).clamp(0, n_local - 1)
        return (
            local,
            mine.gather(-1, order).to(self.local.x.dtype),
            self.num_examples / idx.shape[-1],
        )

    def _data_term(self, theta, rows, weights, scale):
        """``-scale sum_i w_i [log q_{i,y_i} + TIP_i]`` over ``rows`` for ``theta [D]``."""
        terms = self.local.row_log_likelihood(theta, *rows)
        if weights is not None:
            terms = terms * weights
        return -terms.sum() * scale

    def log_joint(self, theta: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        local, weights, scale = self._local_rows(None if idx is None else idx[None])
        rows = self.local.rows(None if local is None else local[0])
        data = self._data_term(
            _Replicated.apply(theta), rows, None if weights is None else weights[0], scale
        )
        return -_SumOverRanks.apply(data) + self.local.log_prior(theta)

    def value_and_grad(self, theta, idx):
        value, grad = self.batched_value_and_grad(theta[None], None if idx is None else idx[None])
        return value[0], grad[0]

    def batched_value_and_grad(
        self, theta: torch.Tensor, idx: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        local, weights, scale = self._local_rows(idx)
        rows = self.local.rows(local)
        batched = 0 if local is not None else None
        in_dims = (0, *(batched for _ in rows), batched)

        def data_term(theta_c, *rows_and_weights):
            *rows_c, weights_c = rows_and_weights
            return self._data_term(theta_c, rows_c, weights_c, scale)

        grad, value = torch.func.vmap(torch.func.grad_and_value(data_term), in_dims=in_dims)(
            theta, *rows, weights
        )
        packed = torch.cat([value[:, None], grad], dim=1)
        dist.all_reduce(packed)
        value, grad = packed[:, 0], packed[:, 1:]
        return value - self.local.log_prior(theta), self.local.add_prior_grad(grad, theta)
