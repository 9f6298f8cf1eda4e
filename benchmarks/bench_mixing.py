"""Which sampler mixes on neural BKD students? Prints one row per (sampler, setting).

Posteriors: (i) the demo's, digits with an MLP 64-32-10 student at ``lam = 144``
(``digits_posterior.build(32, 144)``), 4 chains dispersed around the first KD student
(``sample()``'s default start), test probabilities at the first 100 test inputs, compared
with the exact reference stored by ``reference_posterior.py`` (8 HMC chains from 8 KD
optima); ``--posterior 32:16`` uses the other stored reference (``lam = 16``). (ii)
``--posterior mnist``: the MNIST preset of ``pyro-bkd compare`` (MLP 784-32-10 student on
10,000 images) and (iii) ``--posterior fashion-mnist`` (``small_cnn:4``), both with
minibatches of 128 (the pipeline's choice above 5,000 examples) and no exact reference (the
reference columns are empty).

Columns: share of class-probability entries (posterior mean >= 0.01) with R-hat < 1.01 and
< 1.05, max R-hat, min bulk ESS, bulk ESS per second (min over entries), wall time; against
the reference: mean |difference| of posterior means, median and 10-90% range of the sd
ratio (entries with reference sd > 0.005). The verdict column says which of the issue's
targets a row meets (R-hat < 1.05 on >= 95% of entries, max R-hat < 1.2, median sd ratio
within [0.8, 1.25], mean |diff| < 0.01, wall <= 120 s); a run that failed (NaN, runaway) is
printed as failed, never as numbers.

    .venv/bin/python benchmarks/bench_mixing.py [--only hmc-64,sghmc] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import digits_posterior
from reference_posterior import NUM_TEST, reference_path

import pyro_bkd
from pyro_bkd.convergence import rank_rhat_and_ess_bulk

#: name -> keyword arguments of pyro_bkd.sample (budgets sized for about 2 minutes).
SETTINGS: dict[str, dict] = {
    "default": {},  # sghmc full batch, friction 0.01, step 0.7, 16000 + 200 x 120 steps
    "hmc-32": {
        "method": "hmc",
        "warmup_steps": 400,
        "num_samples": 300,
        "thin": 1,
        "algorithm_options": {"num_steps": 32},
    },
    "hmc-64": {
        "method": "hmc",
        "warmup_steps": 300,
        "num_samples": 200,
        "thin": 1,
        "algorithm_options": {"num_steps": 64},
    },
    "hmc-128": {
        "method": "hmc",
        "warmup_steps": 150,
        "num_samples": 100,
        "thin": 1,
        "algorithm_options": {"num_steps": 128},
    },
    "hmc-256": {
        "method": "hmc",
        "warmup_steps": 100,
        "num_samples": 60,
        "thin": 1,
        "algorithm_options": {"num_steps": 256},
    },
    "sghmc-f0.01": {
        "method": "sghmc",
        "warmup_steps": 8000,
        "num_samples": 200,
        "thin": 40,
        "algorithm_options": {"friction": 0.01, "step_factor": 1.0},
    },
    "sghmc": {"method": "sghmc", "warmup_steps": 8000, "num_samples": 200, "thin": 40},
    "sghmc-t80": {"method": "sghmc", "warmup_steps": 8000, "num_samples": 200, "thin": 80},
    "sghmc-w16k-t120": {
        "method": "sghmc",
        "warmup_steps": 16000,
        "num_samples": 200,
        "thin": 120,
    },
    "sghmc-f0.005": {
        "method": "sghmc",
        "warmup_steps": 8000,
        "num_samples": 200,
        "thin": 40,
        "algorithm_options": {"friction": 0.005, "step_factor": 1.0},
    },
    "sghmc-f0.01-s1.5": {
        "method": "sghmc",
        "warmup_steps": 8000,
        "num_samples": 200,
        "thin": 40,
        "algorithm_options": {"friction": 0.01, "step_factor": 1.5},
    },
    "sghmc-f0.01-s0.7": {
        "method": "sghmc",
        "warmup_steps": 8000,
        "num_samples": 200,
        "thin": 40,
        "algorithm_options": {"friction": 0.01, "step_factor": 0.7},
    },
    "sghmc-f0.01-w4k": {
        "method": "sghmc",
        "warmup_steps": 4000,
        "num_samples": 200,
        "thin": 60,
        "algorithm_options": {"friction": 0.01, "step_factor": 1.0},
    },
    "sghmc-b128": {
        "method": "sghmc",
        "batch_size": 128,
        "warmup_steps": 8000,
        "num_samples": 200,
        "thin": 40,
    },
    "sgld": {"method": "sgld", "warmup_steps": 8000, "num_samples": 200, "thin": 40},
    "psgld": {"method": "psgld", "warmup_steps": 8000, "num_samples": 200, "thin": 40},
    "sgld-b128": {
        "method": "sgld",
        "batch_size": 128,
        "warmup_steps": 8000,
        "num_samples": 200,
        "thin": 40,
    },
}
TARGET_SECONDS = 120.0
#: Settings for the large posteriors (minibatches of 128; the CNN's steps cost more).
LARGE: dict[str, dict] = {
    "sghmc-b128": {
        "method": "sghmc",
        "batch_size": 128,
        "warmup_steps": 4000,
        "num_samples": 100,
        "thin": 40,
    },
    "sgld-b128": {
        "method": "sgld",
        "batch_size": 128,
        "warmup_steps": 4000,
        "num_samples": 100,
        "thin": 40,
    },
    "psgld-b128": {
        "method": "psgld",
        "batch_size": 128,
        "warmup_steps": 4000,
        "num_samples": 100,
        "thin": 40,
    },
}


def evaluate(probs: np.ndarray, wall: float, ref: dict | None) -> dict:
    rhat, ess = rank_rhat_and_ess_bulk(probs)
    mean = probs.mean(axis=(0, 1))
    counted = mean >= 0.01
    r, e = np.nan_to_num(rhat[counted], nan=1.0), np.nan_to_num(ess[counted], nan=1e9)
    sd = probs.std(axis=(0, 1), ddof=1)
    if ref is None:  # no exact reference: the agreement columns stay empty (nan)
        ref = {"mean": np.full_like(mean, np.nan), "sd": np.full_like(sd, np.nan)}
    big = ref["sd"] > 0.005
    ratio = sd[big] / ref["sd"][big] if big.any() else np.full(1, np.nan)
    row = {
        "rhat<1.01": float((r < 1.01).mean()),
        "rhat<1.05": float((r < 1.05).mean()),
        "max_rhat": float(r.max()),
        "min_ess": float(e.min()),
        "ess/s": float(e.min()) / wall,
        "wall_s": wall,
        "mean_absdiff": float(np.abs(mean - ref["mean"]).mean()),
        "sd_ratio_median": float(np.median(ratio)),
        "sd_ratio_p10": float(np.quantile(ratio, 0.1)),
        "sd_ratio_p90": float(np.quantile(ratio, 0.9)),
    }
    missed = []
    if row["rhat<1.05"] < 0.95:
        missed.append("R-hat share")
    if row["max_rhat"] >= 1.2:
        missed.append("max R-hat")
    if not 0.8 <= row["sd_ratio_median"] <= 1.25:  # False for nan: no reference
        missed.append(
            "sd ratio" if row["sd_ratio_median"] == row["sd_ratio_median"] else "(no reference)"
        )
    if row["mean_absdiff"] >= 0.01:
        missed.append("means")
    if wall > TARGET_SECONDS:
        missed.append("time")
    row["verdict"] = "meets all targets" if not missed else "misses: " + ", ".join(missed)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated setting names")
    parser.add_argument(
        "--posterior",
        default="32:144",
        help="WIDTH:LAM of a stored digits reference, or mnist / fashion-mnist",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if ":" in args.posterior:
        width, lam = args.posterior.split(":")
        width, lam = int(width), float(lam)
        ref = dict(np.load(reference_path(width, lam)))
        post = digits_posterior.build(width, lam, num_starts=1)
        settings, num_test = SETTINGS, NUM_TEST
        print(
            f"posterior: digits, MLP 64-{width}-10, lam = {lam:g}; reference "
            f"{reference_path(width, lam).name}; {torch.get_num_threads()} threads"
        )
    else:
        ref, post = None, digits_posterior.build_preset(args.posterior)
        settings, num_test = LARGE, 200
        print(
            f"posterior: {args.posterior} preset, lam = 144, no exact reference; "
            f"{torch.get_num_threads()} threads"
        )
    names = args.only.split(",") if args.only else list(settings)
    header = (
        "setting",
        "rhat<1.01",
        "rhat<1.05",
        "max_rhat",
        "min_ess",
        "ess/s",
        "wall_s",
        "mean_absdiff",
        "sd_ratio_median",
        "sd_ratio_p10",
        "sd_ratio_p90",
        "verdict",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in names:
        options = {"num_chains": 4, **settings[name]}
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", pyro_bkd.ConvergenceWarning)
                result = pyro_bkd.sample(
                    post.model,
                    post.data,
                    x_test=post.x_test[:num_test],
                    seed=args.seed,
                    progress=False,
                    **options,
                )
        except (pyro_bkd.NonFiniteError, ValueError) as error:
            print(f"| {name} | failed: {type(error).__name__}: {error} |")
            continue
        wall = time.perf_counter() - start
        row = evaluate(result.probs.double().numpy(), wall, ref)
        cells = [f"{row[k]:.3f}" if isinstance(row[k], float) else row[k] for k in header[1:]]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
