"""Exact (Metropolis-corrected) reference posteriors of small neural BKD students on digits.

For each (student width, teacher strength) in ``CONFIGS``: 8 chains of full-batch HMC
(:func:`pyro_bkd.sample`, ``method="hmc"``), each started from its own KD optimum
(:mod:`digits_posterior`), long warm-up, then ``num_samples`` draws. Stored per
configuration in ``tests/reference/digits_w<width>_lam<lam>.npz``: the posterior mean and
sd of the class probabilities at the first ``NUM_TEST`` test inputs, their R-hat and bulk
ESS over the 8 chains, and the settings; ``tests/test_reference.py`` checks the default
sampler against them. Regenerating takes about 15-25 minutes per configuration on one CPU
thread:

    .venv/bin/python benchmarks/reference_posterior.py [--only 32:144] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import digits_posterior

import pyro_bkd
from pyro_bkd.convergence import rank_rhat_and_ess_bulk

#: The stored references. Widths 16 and 64 at lam = 144 were run too and did not converge
#: (R-hat < 1.05 on 88.7% / 87.8% of the entries, max 1.245 / 1.262, 22 / 29 CPU minutes):
#: their 8 KD optima differ in function space, so they are no references and are not stored.
CONFIGS: tuple[tuple[int, float], ...] = ((32, 144.0), (32, 16.0))
NUM_TEST = 100
OUT = Path(__file__).resolve().parents[1] / "tests" / "reference"
SETTINGS = {"num_chains": 8, "warmup_steps": 1500, "num_samples": 1000, "thin": 2, "num_steps": 64}


def reference_path(width: int, strength: float) -> Path:
    return OUT / f"digits_w{width}_lam{strength:g}.npz"


def run(width: int, strength: float) -> dict:
    post = digits_posterior.build(width, strength, num_starts=SETTINGS["num_chains"])
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_bkd.ConvergenceWarning)
        result = pyro_bkd.sample(
            post.model,
            post.data,
            method="hmc",
            num_samples=SETTINGS["num_samples"],
            warmup_steps=SETTINGS["warmup_steps"],
            thin=SETTINGS["thin"],
            num_chains=SETTINGS["num_chains"],
            x_test=post.x_test[:NUM_TEST],
            warm_start=post.starts,
            algorithm_options={"num_steps": SETTINGS["num_steps"]},
            seed=0,
            progress=True,
        )
    wall = time.perf_counter() - start
    probs = result.probs.double().numpy()
    rhat, ess = rank_rhat_and_ess_bulk(probs)
    summary = {
        "mean": probs.mean(axis=(0, 1)),
        "sd": probs.std(axis=(0, 1), ddof=1),
        "rhat": rhat,
        "ess_bulk": ess,
    }
    meta = {
        **SETTINGS,
        "width": width,
        "strength": strength,
        "wall_seconds": round(wall, 1),
        "step_size": result.config["step_size"],
        "accept_prob": float(result.sample_stats["accept_prob"].mean()),
        "verdict": result.convergence.message,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(reference_path(width, strength), meta=json.dumps(meta), **summary)
    print(json.dumps(meta, indent=1))
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="WIDTH:LAM, e.g. 32:144")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configs = CONFIGS
    if args.only:
        width, lam = args.only.split(":")
        configs = ((int(width), float(lam)),)
    for width, strength in configs:
        run(width, strength)


if __name__ == "__main__":
    main()
