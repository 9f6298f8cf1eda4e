"""Cost of one SVI step on the BKD model relative to one plain PyTorch Adam step.

Student: MLP 64-256-256-10 (85k weights); data: scikit-learn digits training split (N = 1347),
random teacher logits (the teacher does not change the cost); minibatch m = 128; one thread.

The plain step is ``kd_loss`` on the minibatch, backward, ``torch.optim.Adam`` step (the same
work as the MAP step without Pyro). SVI variants, from Pyro's defaults down to the path of
:func:`pyro_bkd.infer.svi.fit_svi`, then with two proposed changes to ``pyro_bkd/model.py``
(applied here by subclassing, the library is not changed):

1. ``pyro-svi``: ``SVI(model, guide, ClippedAdam, Trace_ELBO()).step`` with validation on
   (Pyro's defaults; the earlier measurement, 4.6x AutoDelta and 10.8x AutoNormal);
2. ``pyro-svi-noval``: the same under ``pyro.validation_enabled(False)``;
3. ``delta-scores``: ``Trace_ELBO(max_plate_nesting=1).differentiable_loss`` + one
   ``torch.optim.Adam`` over all guide parameters, validation off;
4. ``fit_svi``: 3 with the guide's point-mass sites scored without Pyro's element-wise
   ``Delta.log_prob`` (``PointMassScores``): the path of ``fit_svi`` (``SVIStep``);
5. ``+student``: 4 with ``BKDModel`` reading its student from ``self._modules`` instead of
   through ``PyroModule.__getattr__``, which issues ``pyro.module("student", ...)`` (a
   ``pyro.param`` site per student weight tensor) on every access, four times per call;
6. ``+checked``: 5 with ``check_data`` skipped when the same, unmodified tensors were checked on
   the previous call.

Times are CPU time of the (single) computing thread (``time.thread_time``), so time spent
descheduled while other processes run does not count; blocks of steps of every variant are
interleaved over several rounds and the median per-step time is reported. Run from the repo
root: ``.venv/bin/python benchmarks/bench_svi.py [--rounds 7] [--steps 30] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal, init_to_value
from pyro.optim import ClippedAdam

from pyro_bkd import models
from pyro_bkd.data.loaders import load_digits
from pyro_bkd.infer.svi import MinibatchModel, SVIStep
from pyro_bkd.kd import kd_loss, strength_from_alpha
from pyro_bkd.model import BKDModel

TEMPERATURE, ALPHA, PRIOR_SCALE, BATCH, LR = 4.0, 0.9, 1.0, 128, 1e-3
GUIDES = {"AutoDelta": AutoDelta, "AutoNormal": AutoNormal}


class DirectStudentBKDModel(BKDModel):
    """Proposal A for model.py: read ``student`` without ``PyroModule.__getattr__``."""

    def __getattr__(self, name: str) -> object:
        if name == "student":
            return self._modules["student"]
        return super().__getattr__(name)


class CheckedOnceBKDModel(DirectStudentBKDModel):
    """Proposal B for model.py: skip ``check_data`` for the tensors checked last time."""

    def check_data(self, x, y, teacher_logits) -> None:
        key = [(t, None if t is None else t._version) for t in (x, y, teacher_logits)]
        last = self.__dict__.get("_last_checked")
        if last is not None and all(
            a is b and va == vb for (a, va), (b, vb) in zip(key, last, strict=True)
        ):
            return
        super().check_data(x, y, teacher_logits)
        self.__dict__["_last_checked"] = key


class Variant:
    """A step function with its own parameter-store scope, timed block by block."""

    def __init__(self, name: str, step: Callable[[torch.Tensor], object], scope: dict | None):
        self.name, self.step, self.scope, self.times = name, step, scope, []

    def run(self, batches: list[torch.Tensor], validate: bool = False) -> None:
        store = pyro.get_param_store()
        with store.scope(self.scope), pyro.validation_enabled(validate):
            start = time.thread_time()
            for idx in batches:
                self.step(idx)
            self.times.append((time.thread_time() - start) / len(batches))


def _student(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build("mlp", 10, in_features=64, hidden=(256, 256))


def _plain(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> Variant:
    student = _student().train()
    opt = torch.optim.Adam(student.parameters(), lr=LR)

    def step(idx: torch.Tensor) -> None:
        loss = kd_loss(student(x[idx]), t[idx], y[idx], temperature=TEMPERATURE, alpha=ALPHA)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return Variant("plain Adam", step, None)


def _svi_variants(
    guide_cls: type, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, first: torch.Tensor
) -> list[Variant]:
    strength = strength_from_alpha(ALPHA, TEMPERATURE)
    variants = []
    specs = [
        ("pyro-svi", BKDModel, True),
        ("pyro-svi-noval", BKDModel, True),
        ("delta-scores", BKDModel, False),
        ("fit_svi", BKDModel, False),
        ("+student", DirectStudentBKDModel, False),
        ("+checked", CheckedOnceBKDModel, False),
    ]
    for name, model_cls, pyro_svi in specs:
        model = model_cls(_student(), TEMPERATURE, strength, PRIOR_SCALE)
        wrapped = MinibatchModel(model)
        init = init_to_value(values=model.initial_values())
        with pyro.get_param_store().scope() as scope:
            guide = guide_cls(wrapped, init_loc_fn=init)
            if pyro_svi:
                svi = SVI(wrapped, guide, ClippedAdam({"lr": LR}), Trace_ELBO())
                svi.step(x, y, t, first)

                def step(idx: torch.Tensor, svi: SVI = svi) -> None:
                    svi.step(x, y, t, idx)
            else:
                elbo = Trace_ELBO(max_plate_nesting=1)
                elbo.differentiable_loss(wrapped, guide, x, y, t, first)
                opt = torch.optim.Adam(guide.parameters(), lr=LR)
                cheap = name != "delta-scores"
                svi_step = SVIStep(elbo, wrapped, guide, opt, point_mass_scores=cheap)

                def step(idx: torch.Tensor, svi_step: SVIStep = svi_step) -> None:
                    svi_step(x, y, t, idx)

        variants.append(Variant(f"{guide_cls.__name__} {name}", step, scope))
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=30, help="steps per timed block")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="cProfile the fit_svi steps")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)

    digits = load_digits()
    x, y = digits.x_train, digits.y_train
    n = x.shape[0]
    t = torch.randn(n, 10, generator=torch.Generator().manual_seed(1)) * 3
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randperm(n, generator=generator)[:BATCH] for _ in range(options.steps)]

    plain = _plain(x, y, t)
    variants = [plain]
    for guide_cls in GUIDES.values():
        variants += _svi_variants(guide_cls, x, y, t, batches[0])
    for variant in variants:  # warm-up
        variant.run(batches[:5], validate=variant.name.endswith("pyro-svi"))
        variant.times.clear()
    for _ in range(options.rounds):
        for variant in variants:
            variant.run(batches, validate=variant.name.endswith("pyro-svi"))

    base = statistics.median(plain.times)
    print(f"N = {n}, m = {BATCH}, MLP 64-256-256-10, threads = {options.threads}, ", end="")
    print(f"{options.rounds} rounds x {options.steps} steps, median thread CPU time per step")
    print(f"{'variant':30s} {'ms/step':>8s} {'ratio':>7s}")
    medians = {}
    for variant in variants:
        medians[variant.name] = median = statistics.median(variant.times)
        print(f"{variant.name:30s} {median * 1e3:8.3f} {median / base:7.2f}")
    print()
    savings = [
        ("Pyro validation (argument and support checks)", "pyro-svi", "pyro-svi-noval"),
        ("SVI.step + ClippedAdam -> differentiable_loss + Adam", "pyro-svi-noval", "delta-scores"),
        ("Delta.log_prob of the guide's point masses", "delta-scores", "fit_svi"),
        ("pyro.module(student) on each self.student [model.py]", "fit_svi", "+student"),
        ("check_data on every call [model.py]", "+student", "+checked"),
    ]
    for guide in GUIDES:
        m = {name.split(" ", 1)[1]: v for name, v in medians.items() if name.startswith(guide)}
        print(
            f"{guide}: {m['pyro-svi'] / base:.2f}x with Pyro's defaults -> "
            f"{m['fit_svi'] / base:.2f}x in fit_svi -> {m['+checked'] / base:.2f}x with the "
            f"proposed model.py changes; saved per step:"
        )
        for label, before, after in savings:
            print(f"  {label:55s} {(m[before] - m[after]) * 1e3:6.2f} ms")
    if options.profile:
        for variant in variants:
            if variant.name.endswith(" fit_svi"):
                profile = cProfile.Profile()
                profile.enable()
                variant.run(batches)
                profile.disable()
                print(f"\n--- cProfile of {variant.name} ({len(batches)} steps) ---")
                pstats.Stats(profile).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
