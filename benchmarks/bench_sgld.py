"""Speed and memory of pyro-bkd's SGLD against hand-written PyTorch, as ratios.

(a) One SGLD step of the ``SGLD`` kernel, called the way ``pyro.infer.MCMC`` calls it
    (``setup`` once, then ``params = kernel.sample(params)``), divided by one hand-written
    PyTorch SGLD step on the same student, minibatch size and teacher (the limit). Also a
    step of the same kernel on Pyro's trace potential (``TracePotential``), to show what the
    trace-free ``BKDPotential`` saves. MLP 64-256-256-10 (N=1347, digits-sized) and resnet20
    (N=1024 CIFAR-shaped inputs), minibatch 128, tau=4, lam=1, sigma=1.
(b) Draws per second of ``pyro_bkd.sample`` with 4 vectorised chains against 4 chains run
    one after another, same total steps (MLP).
(c) Peak resident memory of ``pyro_bkd.sample`` on resnet20 with the streamed predictive
    (``keep_weights=False``) against stored weights (``keep_weights=True``), one fresh
    process per variant.

Run ``python benchmarks/bench_sgld.py`` (``make bench``) or ``--quick`` for a short run.
Inputs are random tensors: speed and memory do not depend on their values.
"""

from __future__ import annotations

import argparse
import copy
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `models` lives at the repository root
    sys.path.insert(0, str(ROOT))

import pyro  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pyro_bkd import (  # noqa: E402
    SGLD,
    BKDModel,
    DistillationData,
    models,
    sample,
)
from pyro_bkd.infer.potential import BKDPotential, TracePotential  # noqa: E402

TAU, LAM, SIGMA = 4.0, 1.0, 1.0
NUM_CLASSES = 10
MLP_N, MLP_IN, MLP_HIDDEN = 1347, 64, (256, 256)
CIFAR_N, CIFAR_SHAPE = 1024, (3, 32, 32)
TARGET, ACCEPTABLE = 1.10, 1.25


# -- helpers -------------------------------------------------------------------------------
def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_student(kind: str) -> torch.nn.Module:
    if kind == "mlp":
        return models.build("mlp", NUM_CLASSES, in_features=MLP_IN, hidden=MLP_HIDDEN)
    return models.build(kind, NUM_CLASSES, in_channels=CIFAR_SHAPE[0])


def make_data(kind: str, device: torch.device, seed: int = 0) -> DistillationData:
    """Random inputs, labels and teacher logits of the benchmark's sizes."""
    gen = torch.Generator().manual_seed(seed)
    n, shape = (MLP_N, (MLP_IN,)) if kind == "mlp" else (CIFAR_N, CIFAR_SHAPE)
    x = torch.randn(n, *shape, generator=gen)
    y = torch.randint(NUM_CLASSES, (n,), generator=gen)
    t = 3.0 * torch.randn(n, NUM_CLASSES, generator=gen)
    return DistillationData(x, y, t).to(device)


def step_size(n: int) -> float:
    """The library's default SGLD step (``2 lr / N`` with ``lr = 1e-4``)."""
    return 2e-4 / n


def time_interleaved(
    fns: dict[str, Callable[[int], None]], steps: int, repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each ``fn(steps)``/steps; variants alternate, order rotates."""
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            sync(device)
            start = time.perf_counter()
            fns[name](steps)
            sync(device)
            times[name].append((time.perf_counter() - start) / steps)
    return times


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over repeats of ``num[r] / den[r]`` (robust to load drifting between repeats)."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def rss_mb() -> float | None:
    """Current resident set size of this process in MB (Linux), else ``None``."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KB


# -- (a) one SGLD step ---------------------------------------------------------------------
def kernel_stepper(model: BKDModel, data: DistillationData, m: int, trace: bool):
    """``fn(n)``: n SGLD steps of the kernel, as ``pyro.infer.MCMC`` calls it."""
    if trace:  # a plain function is not a BKDModel: the kernel falls back to Pyro traces

        def target(x, y, teacher_logits):
            return model(x, y, teacher_logits)

    else:
        target = model
    kernel = SGLD(target, step_size=step_size(len(data)), subsample_size=m)
    kernel.initial_params = model.initial_values()  # same start as the baseline
    kernel.setup(0, data.x, data.y, data.teacher_logits)
    expected = TracePotential if trace else BKDPotential
    assert isinstance(kernel._potential, expected), type(kernel._potential)
    state = {"params": kernel.initial_params}

    def run(n: int) -> None:
        params = state["params"]
        for _ in range(n):
            params = kernel.sample(params)
        state["params"] = params

    return run


def driver_seconds_per_step(
    model: BKDModel, data: DistillationData, m: int, steps: int, device: torch.device
) -> float:
    """Seconds per SGLD step of :func:`pyro_bkd.sample` (1 chain, minibatch ``m``, fixed
    step, no test inputs): the time of ``2 steps`` minus that of ``steps`` iterations, so
    the fixed set-up (potential, runaway floor) cancels."""

    def run(n: int) -> float:
        sync(device)
        start = time.perf_counter()
        sample(
            model,
            data,
            method="sgld",
            num_samples=n,
            warmup_steps=0,
            thin=1,
            num_chains=1,
            batch_size=m,
            step_size=step_size(len(data)),
            warm_start=None,
            init_spread=0.0,
            seed=0,
            progress=False,
        )
        sync(device)
        return time.perf_counter() - start

    return (run(2 * steps) - run(steps)) / steps


def torch_stepper(student: torch.nn.Module, data: DistillationData, m: int):
    """``fn(n)``: n hand-written SGLD steps, the speed limit a PyTorch user would write."""
    net = copy.deepcopy(student).eval()
    params = list(net.parameters())
    x, y = data.x, data.y
    teacher_p = F.softmax(data.teacher_logits / TAU, dim=-1)
    n_total = len(data)
    scale, eps = n_total / m, step_size(n_total)
    noise_scale = math.sqrt(eps)
    device = x.device

    def run(n: int) -> None:
        for _ in range(n):
            idx = torch.randint(n_total, (m,), device=device)
            logits = net(x[idx])
            tip = (teacher_p[idx] * F.log_softmax(logits / TAU, dim=-1)).sum()
            loss = F.cross_entropy(logits, y[idx], reduction="sum") - LAM * tip
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                # p -= eps/2 * (N/m * grad + p / sigma^2), then + sqrt(eps) * xi
                torch._foreach_mul_(grads, scale)
                torch._foreach_add_(grads, params, alpha=1.0 / SIGMA**2)
                torch._foreach_add_(params, grads, alpha=-0.5 * eps)
                noise = [torch.randn_like(p) for p in params]
                torch._foreach_add_(params, noise, alpha=noise_scale)

    return run


def bench_step(kind: str, device: torch.device, quick: bool, m: int = 128) -> dict:
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    student = make_student(kind).to(device)
    data = make_data(kind, device)
    model = BKDModel(student, temperature=TAU, strength=LAM, prior_scale=SIGMA)
    fns = {
        "kernel": kernel_stepper(model, data, m, trace=False),
        "torch": torch_stepper(student, data, m),
        "trace": kernel_stepper(model, data, m, trace=True),
    }
    if kind == "mlp":
        warm, steps, repeats = (20, 20, 5) if quick else (50, 40, 21)
    else:
        warm, steps, repeats = (1, 1, 3) if quick else (2, 3, 7)
    for fn in fns.values():
        fn(warm)
    times = time_interleaved(fns, steps, repeats, device)
    driver_steps = 8 * steps if kind == "mlp" else 2 * steps
    times["driver"], times["driver_torch"] = [], []
    for _ in range(max(3, repeats // 3)):  # the driver in alternation with the baseline
        times["driver"].append(driver_seconds_per_step(model, data, m, driver_steps, device))
        baseline = time_interleaved({"torch": fns["torch"]}, steps, 1, device)["torch"][0]
        times["driver_torch"].append(baseline)
    med = {name: statistics.median(t) for name, t in times.items()}
    return {
        "kind": kind,
        "ms": {name: 1e3 * t for name, t in med.items()},
        "driver/torch": paired_ratio(times["driver"], times["driver_torch"]),
        "kernel/torch": paired_ratio(times["kernel"], times["torch"]),
        "trace/torch": paired_ratio(times["trace"], times["torch"]),
        "trace/kernel": paired_ratio(times["trace"], times["kernel"]),
        "steps": steps * repeats,
    }


# -- (b) vectorised chains -----------------------------------------------------------------
def bench_chains(device: torch.device, quick: bool, chains: int = 4) -> dict:
    data = make_data("mlp", device)
    torch.manual_seed(0)
    model = BKDModel(make_student("mlp").to(device), TAU, LAM, SIGMA)
    warmup, num_samples, repeats = (50, 100, 2) if quick else (100, 400, 3)
    common = dict(
        method="sgld",
        warmup_steps=warmup,
        thin=1,
        batch_size=128,
        step_size=step_size(len(data)),
        warm_start=None,
        progress=False,
    )

    def vectorised(_: int) -> None:
        sample(model, data, num_samples=num_samples, num_chains=chains, seed=0, **common)

    def sequential(_: int) -> None:
        for seed in range(chains):
            sample(model, data, num_samples=num_samples, num_chains=1, seed=seed, **common)

    # warm-up (vmap and allocator caches), then timed repeats in alternating order
    sample(model, data, num_samples=5, num_chains=chains, **{**common, "warmup_steps": 5})
    sample(model, data, num_samples=5, num_chains=1, **{**common, "warmup_steps": 5})
    times = time_interleaved(
        {"vectorised": vectorised, "sequential": sequential}, 1, repeats, device
    )
    draws = chains * num_samples
    rate = {name: draws / statistics.median(t) for name, t in times.items()}
    return {
        "chains": chains,
        "steps_per_chain": warmup + num_samples,
        "draws": draws,
        "rate": rate,
        "ratio": paired_ratio(times["sequential"], times["vectorised"]),
    }


# -- (c) peak memory -----------------------------------------------------------------------
def _memory_child(
    keep_weights: bool, draws: int, n_test: int, batch: int, device: str, threads: int | None
) -> dict:
    """Runs in a fresh (spawned) process: sample resnet20 and report its peak RSS."""
    if threads is not None:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    data = make_data("resnet20", dev)
    x_test = torch.randn(n_test, *CIFAR_SHAPE, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = BKDModel(make_student("resnet20").to(dev), TAU, LAM, SIGMA)
    before = rss_mb()
    start = time.perf_counter()
    result = sample(
        model,
        data,
        method="sgld",
        num_samples=draws,
        warmup_steps=0,
        thin=1,
        num_chains=1,
        batch_size=batch,
        step_size=step_size(len(data)),
        x_test=x_test,
        keep_weights=keep_weights,
        warm_start=None,
        init_spread=0.0,
        progress=False,
    )
    seconds = time.perf_counter() - start
    assert result.probs is not None and result.probs.shape[:2] == (1, draws)
    assert (result.weights is not None) == keep_weights
    return {"peak_mb": peak_rss_mb(), "before_mb": before, "seconds": seconds}


def bench_memory(
    device: torch.device, quick: bool, draws: int | None, budget: float, threads: int | None
) -> dict:
    requested = draws if draws is not None else (50 if quick else 1000)
    n_test, batch = (64 if quick else 256), 32
    # probe the cost of one draw (step + predictive) to fit the run in the time budget
    data = make_data("resnet20", device)
    model = BKDModel(make_student("resnet20").to(device), TAU, LAM, SIGMA)
    x_test = torch.randn(n_test, *CIFAR_SHAPE)

    def probe(num_samples: int) -> None:
        sample(
            model,
            data,
            method="sgld",
            num_samples=num_samples,
            warmup_steps=0,
            thin=1,
            num_chains=1,
            batch_size=batch,
            step_size=step_size(len(data)),
            x_test=x_test,
            warm_start=None,
            init_spread=0.0,
            progress=False,
        )

    probe(2)  # warm-up
    start = time.perf_counter()
    probe(8)
    per_draw = (time.perf_counter() - start) / 8
    # both variants; x1.5 because the run's predictive works on chunks of 32 draws, slower
    # per draw than the probe's 8, and a shared machine's load drifts
    estimate = 1.5 * 2 * requested * per_draw
    used = requested
    if estimate > budget:
        used = max(16, int(requested * budget / estimate))
    ctx = multiprocessing.get_context("spawn")
    out = {}
    for keep in (False, True):
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            args = (keep, used, n_test, batch, str(device), threads)
            out[keep] = pool.submit(_memory_child, *args).result()
    return {
        "requested": requested,
        "draws": used,
        "estimate_s": estimate,
        "n_test": n_test,
        "batch": batch,
        "streamed": out[False],
        "stored": out[True],
        "ratio": out[True]["peak_mb"] / out[False]["peak_mb"],
        "mb_per_draw": sum(p.numel() for p in model.student.parameters()) * 4 / 2**20,
    }


# -- main ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (fewer steps/draws)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--only", default="abc", help="which benchmarks to run, a subset of 'abc' (default all)"
    )
    parser.add_argument("--mem-draws", type=int, default=None, help="draws for (c)")
    parser.add_argument(
        "--mem-budget",
        type=float,
        default=180.0,
        help="seconds allowed for (c); fewer draws if over",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    threads = f"{torch.get_num_threads()} ({'set' if args.threads is not None else 'default'})"
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(
        f"pyro-bkd SGLD benchmark ({'quick' if args.quick else 'full'}): torch "
        f"{torch.__version__}, pyro {pyro.__version__}, python {platform.python_version()}, "
        f"device {device}, torch threads {threads}, cpus {os.cpu_count()}{load}"
    )
    summary: list[tuple[str, str, str]] = []
    wall = time.perf_counter()

    if "a" in args.only:
        print("\n(a) one SGLD step (minibatch 128), kernel.sample() vs hand-written PyTorch")
        for kind in ("mlp", "resnet20"):
            r = bench_step(kind, device, args.quick)
            ms = r["ms"]
            label = "MLP 64-256-256-10" if kind == "mlp" else "resnet20 3x32x32"
            print(
                f"  {label}: driver {ms['driver']:.3f} ms, kernel {ms['kernel']:.3f} ms, torch "
                f"{ms['torch']:.3f} ms, trace {ms['trace']:.3f} ms per step (medians)"
            )
            driver_ok = "ok" if r["driver/torch"] <= TARGET else "ABOVE TARGET"
            ok = "ok" if r["kernel/torch"] <= ACCEPTABLE else "ABOVE TARGET"
            print(
                f"  {label}: driver/torch {r['driver/torch']:.3f} ({driver_ok}; target <= "
                f"{TARGET}), kernel/torch {r['kernel/torch']:.3f} ({ok}; target <= "
                f"{ACCEPTABLE}), trace/torch {r['trace/torch']:.3f}"
            )
            summary.append((f"(a) {kind} step driver/torch", f"{r['driver/torch']:.3f}", driver_ok))
            summary.append((f"(a) {kind} step kernel/torch", f"{r['kernel/torch']:.3f}", ok))
            summary.append(
                (f"(a) {kind} step trace/torch", f"{r['trace/torch']:.3f}", "Pyro trace")
            )

    if "b" in args.only:
        print("\n(b) pyro_bkd.sample on the MLP: 4 vectorised chains vs 4 chains in sequence")
        r = bench_chains(device, args.quick)
        print(
            f"  {r['chains']} chains x {r['steps_per_chain']} steps ({r['draws']} draws): "
            f"vectorised {r['rate']['vectorised']:.1f} draws/s, sequential "
            f"{r['rate']['sequential']:.1f} draws/s, speed-up {r['ratio']:.2f}x"
        )
        summary.append(("(b) vectorised/sequential draws/s", f"{r['ratio']:.2f}x", "MLP, 4 chains"))

    if "c" in args.only:
        print("\n(c) peak RSS of pyro_bkd.sample on resnet20, streamed vs stored weights")
        r = bench_memory(device, args.quick, args.mem_draws, args.mem_budget, args.threads)
        note = ""
        if r["draws"] != r["requested"]:
            note = (
                f" [REDUCED from {r['requested']} draws: the full run was estimated at "
                f"{r['estimate_s']:.0f} s, over the {args.mem_budget:.0f} s budget]"
            )
        for name in ("streamed", "stored"):
            v = r[name]
            grew = "" if v["before_mb"] is None else f", +{v['peak_mb'] - v['before_mb']:.0f} MB"
            print(
                f"  {name:8s} (keep_weights={name == 'stored'}): peak RSS "
                f"{v['peak_mb']:.0f} MB (before sampling {v['before_mb']:.0f} MB{grew}), "
                f"{v['seconds']:.1f} s"
            )
        per_draw = r["mb_per_draw"]
        print(
            f"  {r['draws']} draws, 1 chain, thin 1, batch {r['batch']}, {r['n_test']} test "
            f"inputs; stored weights {r['draws'] * per_draw:.0f} MB ({per_draw:.2f} MB per draw, "
            f"{r['requested'] * per_draw:.0f} MB for {r['requested']} draws); "
            f"ratio stored/streamed {r['ratio']:.2f}{note}"
        )
        summary.append(
            (
                f"(c) resnet20 peak RSS stored/streamed, {r['draws']} draws",
                f"{r['ratio']:.2f}",
                f"{r['stored']['peak_mb']:.0f} vs {r['streamed']['peak_mb']:.0f} MB"
                + (" (fewer draws)" if note else ""),
            )
        )

    print(f"\nSummary ({time.perf_counter() - wall:.0f} s, {torch.get_num_threads()} threads)")
    width = max(len(row[0]) for row in summary) if summary else 10
    print(f"  {'benchmark':{width}s}  {'ratio':>8s}  note")
    for name, value, note in summary:
        print(f"  {name:{width}s}  {value:>8s}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
