"""Draws per second of ``pyro_bkd.sample`` in 1 and 2 processes (torch.distributed), as ratios.

The MNIST MLP student of the paper table (784-32-10, 25,450 weights) on ``N = 10,000``
MNIST-shaped inputs, 4 chains, one torch thread per process, each configuration launched by
``torchrun`` in a fresh set of processes:

- ``1 process``: all 4 chains vectorised in one process (the baseline);
- ``chains x 2``: 2 processes of 2 chains each (``distributed="chains"``);
- ``data x 2``: 2 processes holding 5,000 points each, 4 chains in both, gradients summed
  over the processes (``distributed="data"``).

Each runs SGLD on minibatches of 128 (the MNIST preset's sampler) and SGHMC on full-batch
gradients (the default sampler below 5,000 points, and what data splitting is for). Each
configuration runs twice, with ``D`` and ``2 D`` draws per chain: "sampling draws/s" is the
difference of draws over the difference of times (the set-up, warm-up of 50 iterations and
the starts cancel: the per-step scaling), "whole run" is ``2 D`` draws over the whole second
run. No MAP search: the chains start from the student's initial weights. Inputs and teacher
logits are random tensors: speed does not depend on their values.

``python benchmarks/bench_distributed.py`` (CPU, gloo); ``--device cuda`` runs one process
per GPU with NCCL (``--processes`` up to the GPU count) and prints per-device throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

N, INPUTS, HIDDEN, CLASSES = 10_000, 784, 32, 10
CHAINS, BATCH = 4, 128


def worker(args: argparse.Namespace) -> None:
    """One process of a configuration; rank 0 writes ``{"seconds", "draws"}`` to ``--result``."""
    from pyro_bkd import BKDModel, DistillationData, sample
    from pyro_bkd.infer.parallel import is_main_process, local_device

    torch.set_num_threads(1)
    device = local_device() if args.device == "cuda" else torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, INPUTS, generator=g)
    y = torch.randint(0, CLASSES, (N,), generator=g)
    teacher = 3.0 * torch.randn(N, CLASSES, generator=g)
    torch.manual_seed(0)
    student = torch.nn.Sequential(
        torch.nn.Linear(INPUTS, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES)
    )
    model = BKDModel(student, temperature=4.0, strength=144.0, prior_scale=1.0).to(device)
    start = time.perf_counter()
    result = sample(
        model,
        DistillationData(x, y, teacher),
        method=args.method,
        batch_size=BATCH if args.method == "sgld" else None,
        num_chains=CHAINS,
        warmup_steps=50,
        num_samples=args.draws,
        thin=args.thin,
        x_test=x[:100],
        warm_start=None,
        seed=0,
        device=device,
        progress=False,
        distributed=False if args.mode == "single" else args.mode,
    )
    seconds = time.perf_counter() - start
    if is_main_process():
        draws = int(result.probs.shape[0] * result.probs.shape[1])
        Path(args.result).write_text(json.dumps({"seconds": seconds, "draws": draws}))


def measure(mode: str, processes: int, method: str, options: argparse.Namespace) -> dict:
    """``{"sampling": draws/s, "whole": draws/s}`` of one configuration (module docstring),
    or ``{"failed": message}``."""
    short = launch(mode, processes, method, options, options.draws)
    if "failed" in short:
        return short
    long = launch(mode, processes, method, options, 2 * options.draws)
    if "failed" in long:
        return long
    extra = long["draws"] - short["draws"]
    return {
        "sampling": extra / (long["seconds"] - short["seconds"]),
        "whole": long["draws"] / long["seconds"],
    }


def launch(mode: str, processes: int, method: str, options: argparse.Namespace, draws: int) -> dict:
    """Run one configuration under torchrun; its rank 0's measurement."""
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", __file__, "--worker", "--mode", mode,
            "--method", method, "--device", options.device, "--draws", str(draws),
            "--thin", str(options.thin), "--result", str(result),
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "Error" in line]
            return {"failed": (errors or done.stderr.strip().splitlines() or ["?"])[-1]}
        return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--processes", type=int, default=2, help="processes to compare with 1")
    parser.add_argument("--draws", type=int, default=50, help="draws per chain (50)")
    parser.add_argument("--thin", type=int, default=10, help="iterations per draw (10)")
    parser.add_argument("--methods", default="sgld,sghmc")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="single", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="sgld", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        worker(options)
        return
    k = options.processes
    if options.device == "cuda" and k > torch.cuda.device_count():
        raise SystemExit(f"--processes {k} needs {k} GPUs, found {torch.cuda.device_count()}")
    print(
        f"# bench_distributed: MLP {INPUTS}-{HIDDEN}-{CLASSES}, N = {N}, {CHAINS} chains, "
        f"device {options.device}, 1 thread per process, {os.cpu_count()} CPUs; "
        f"{options.draws} draws x thin {options.thin} + 50 warm-up per chain"
    )
    print("| method | configuration | sampling draws/s | per process | vs 1 process | whole run |")
    print("|---|---|---|---|---|---|")
    for method in options.methods.split(","):
        baseline = None
        for mode, processes in (("single", 1), ("chains", k), ("data", k)):
            if processes == 1 and mode != "single":
                continue
            measured = measure(mode, processes, method, options)
            label = "1 process" if mode == "single" else f"{mode} x {processes}"
            if "failed" in measured:
                print(f"| {method} | {label} | FAILED: {measured['failed']} | | | |")
                continue
            rate = measured["sampling"]
            if mode == "single":
                baseline, ratio = rate, "1.00"
            else:
                ratio = "n/a (1 process failed)" if baseline is None else f"{rate / baseline:.2f}"
            print(
                f"| {method} | {label} | {rate:.1f} | {rate / processes:.1f} | {ratio} "
                f"| {measured['whole']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
