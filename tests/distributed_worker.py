"""Worker of ``test_distributed.py``: SGLD on minibatches of a small BKD problem, in one
process (``off``) or, under torchrun, with the data split (``data``); rank 0 saves the
draws to the given file."""

from __future__ import annotations

import sys

import torch

from pyro_bkd import BKDModel, sample
from pyro_bkd.data import DistillationData
from pyro_bkd.infer.parallel import is_main_process


def problem() -> tuple[BKDModel, DistillationData, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n, d, k = 301, 3, 4  # N odd: the shards differ in size
    w = 1.5 * torch.randn(d, k, generator=g)
    x = torch.randn(n, d, generator=g)
    y = torch.multinomial((x @ w).softmax(-1), 1, generator=g).squeeze(-1)
    teacher = x @ w + 0.5 * torch.randn(n, k, generator=g)
    torch.manual_seed(1)
    student = torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.Tanh(), torch.nn.Linear(8, k))
    model = BKDModel(student, temperature=4.0, strength=16.0, prior_scale=1.0)
    return model, DistillationData(x, y, teacher), torch.randn(10, d, generator=g)


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, out = sys.argv[1], sys.argv[2]
    model, data, x_test = problem()
    result = sample(
        model,
        data,
        method="sgld",
        batch_size=32,
        num_chains=2,
        warmup_steps=60,
        num_samples=20,
        thin=3,
        x_test=x_test,
        map_steps=50,
        seed=2,
        progress=False,
        distributed=False if mode == "off" else mode,
    )
    if is_main_process():
        torch.save({"probs": result.probs, "split": result.config["distributed"]}, out)
