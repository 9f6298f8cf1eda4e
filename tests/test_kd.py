"""KD is the posterior mode of BKD (SPEC §3): gradients, the lam <-> alpha mapping, the model's
input checks and Pyro compatibility, and MAP = KD in practice on scikit-learn digits."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.infer.mcmc.util import initialize_model
from torch import nn
from torch.func import functional_call

from pyro_bkd import models
from pyro_bkd._checks import InputError
from pyro_bkd.data.loaders import load_digits
from pyro_bkd.data.record import DistillationData
from pyro_bkd.distill import accuracy, fit_map, train_student_kd, weight_decay_for_prior
from pyro_bkd.infer.svi import fit_svi, map_estimate
from pyro_bkd.kd import alpha_from_strength, kd_loss, kl_scale, strength_from_alpha
from pyro_bkd.model import (
    LIKELIHOOD_SITE,
    TEACHER_PRIOR_SITE,
    BKDModel,
    log_dirichlet_normaliser,
    teacher_log_probs,
)
from pyro_bkd.teachers import teacher_logits, train_teacher


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Small networks on two shared cores: one thread is faster and stable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _fresh_param_store() -> Iterator[None]:
    """Every test runs in its own scope of Pyro's global parameter store."""
    with pyro.get_param_store().scope():
        yield


def _problem(
    seed: int = 0, n: int = 40, k: int = 3, dtype: torch.dtype = torch.float64
) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A non-linear student 5-16-3 and random data with random teacher logits."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    student = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, k)).to(dtype)
    x = torch.randn(n, 5, generator=gen, dtype=dtype)
    y = torch.randint(0, k, (n,), generator=gen)
    t = 2.0 * torch.randn(n, k, generator=gen, dtype=dtype)
    return student, x, y, t


def _neg_log_joint(
    model: BKDModel, params: dict[str, torch.Tensor], *args: torch.Tensor | None
) -> torch.Tensor:
    """``-log p(D, theta)`` from a Pyro trace of the model with the weights conditioned."""
    trace = poutine.trace(poutine.condition(model, data=params)).get_trace(*args)
    return -trace.log_prob_sum()


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


# --- (a) the KD loss is the negative log posterior ------------------------------------------


@pytest.mark.parametrize("convention", ["tau2", "one"])
@pytest.mark.parametrize("alpha", [0.3, 0.9])
def test_gradient_of_log_joint_is_scaled_kd_gradient_plus_prior(
    convention: str, alpha: float
) -> None:
    """grad(-log p(D, theta)) = N/(1-alpha) grad(mean kd_loss) + theta / sigma^2, to 1e-10."""
    student, x, y, t = _problem()
    tau, sigma, n = 2.5, 0.8, x.shape[0]
    strength = strength_from_alpha(alpha, tau, convention)
    model = BKDModel(student, tau, strength, sigma)
    params = {name: p.detach().clone().requires_grad_() for name, p in student.named_parameters()}

    nlj = _neg_log_joint(model, params, x, y, t)
    grads_model = torch.autograd.grad(nlj, list(params.values()))

    logits = functional_call(student, params, (x,))
    loss = kd_loss(logits, t, y, temperature=tau, alpha=alpha, convention=convention)
    grads_kd = torch.autograd.grad(loss, list(params.values()))
    wd = weight_decay_for_prior(sigma, n, alpha)
    assert wd == pytest.approx((1 - alpha) / (n * sigma**2), rel=1e-15)
    for g_model, g_kd, theta in zip(grads_model, grads_kd, params.values(), strict=True):
        expected = n / (1 - alpha) * g_kd + theta.detach() / sigma**2
        assert _rel_err(g_model, expected) < 1e-10
        # the same through the weight decay that matches the prior on the KD mean loss
        via_decay = n / (1 - alpha) * (g_kd + wd * theta.detach())
        assert _rel_err(g_model, via_decay) < 1e-10

    # the values differ by the constant lam sum_i H(p_i) + sum_i log B(1 + lam p_i) + prior
    log_p = teacher_log_probs(t, tau)
    entropy = -(log_p.exp() * log_p).sum(-1)
    dim = sum(p.numel() for p in params.values())
    square_norm = sum(p.detach().square().sum() for p in params.values())
    constant = (strength * entropy + log_dirichlet_normaliser(log_p, strength)).sum()
    constant = constant + square_norm / (2 * sigma**2) + dim / 2 * math.log(2 * math.pi * sigma**2)
    assert nlj.item() == pytest.approx((n * loss / (1 - alpha) + constant).item(), rel=1e-12)


def test_weight_decay_matches_prior_for_cross_entropy_alone() -> None:
    """alpha = 0, lam = 0: N (grad mean CE + theta / (N sigma^2)) = grad(-log p(D, theta))."""
    student, x, y, _ = _problem(seed=1)
    sigma, n = 1.7, x.shape[0]
    model = BKDModel(student, temperature=1.0, strength=0.0, prior_scale=sigma)
    params = {name: p.detach().clone().requires_grad_() for name, p in student.named_parameters()}
    grads_model = torch.autograd.grad(_neg_log_joint(model, params, x, y), list(params.values()))
    ce = nn.functional.cross_entropy(functional_call(student, params, (x,)), y)
    grads_ce = torch.autograd.grad(ce, list(params.values()))
    wd = weight_decay_for_prior(sigma, n)
    assert wd == pytest.approx(1 / (n * sigma**2), rel=1e-15)
    for g_model, g_ce, theta in zip(grads_model, grads_ce, params.values(), strict=True):
        assert _rel_err(g_model, n * (g_ce + wd * theta.detach())) < 1e-10
    assert weight_decay_for_prior(None, n, 0.5) == 0.0


@pytest.mark.parametrize("convention", ["tau2", "one"])
def test_alpha_strength_round_trip(convention: str) -> None:
    for tau in (0.5, 1.0, 4.0):
        c = kl_scale(tau, convention)
        for alpha in (0.0, 0.1, 0.5, 0.9, 0.999):
            lam = strength_from_alpha(alpha, tau, convention)
            assert lam == pytest.approx(alpha * c / (1 - alpha), rel=1e-14)
            assert alpha_from_strength(lam, tau, convention) == pytest.approx(alpha, abs=1e-14)
        for lam in (0.0, 0.3, 7.0, 1e4):
            alpha = alpha_from_strength(lam, tau, convention)
            assert strength_from_alpha(alpha, tau, convention) == pytest.approx(lam, rel=1e-9)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: strength_from_alpha(1.0, 4.0), "alpha"),
        (lambda: strength_from_alpha(1.5, 4.0), "alpha"),
        (lambda: strength_from_alpha(-0.1, 4.0), "alpha"),
        (lambda: strength_from_alpha(0.5, 0.0), "temperature"),
        (lambda: strength_from_alpha(0.5, -2.0), "temperature"),
        (lambda: alpha_from_strength(-1.0, 4.0), "strength"),
        (lambda: alpha_from_strength(1.0, 0.0), "temperature"),
        (lambda: strength_from_alpha(0.5, 4.0, "cube"), "convention"),
        (lambda: weight_decay_for_prior(0.0, 10), "prior_scale"),
        (lambda: weight_decay_for_prior(1.0, 10, alpha=1.0), "alpha"),
        (lambda: weight_decay_for_prior(1.0, 0), "num_examples"),
    ],
)
def test_mapping_rejects_bad_input(call, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        call()


# --- (b) BKDModel: input checks and Pyro compatibility --------------------------------------


def _call(model: BKDModel, *args: torch.Tensor | None) -> poutine.Trace:
    return poutine.trace(model).get_trace(*args)


@pytest.mark.parametrize(
    ("mutate", "argument"),
    [
        (lambda x, y, t: (x, y[:-1], t), "y"),
        (lambda x, y, t: (x, y, t[:-1]), "teacher_logits"),
        (lambda x, y, t: (x[:-1], y, t), "y|teacher_logits"),
        (lambda x, y, t: (x, torch.full_like(y, 3), t), "y"),
        (lambda x, y, t: (x, torch.full_like(y, -1), t), "y"),
        (lambda x, y, t: (x, torch.full_like(y, 3), None), "y"),
        (lambda x, y, t: (x, y, torch.where(t > 1, torch.nan, t)), "teacher_logits"),
        (lambda x, y, t: (x, y, torch.where(t > 1, torch.inf, t)), "teacher_logits"),
    ],
)
def test_model_rejects_bad_data(mutate, argument: str) -> None:
    student, x, y, t = _problem()
    model = BKDModel(student, 2.0, 1.0, 1.0)
    with pytest.raises(ValueError, match=argument):
        _call(model, *mutate(x, y, t))


def test_model_rejects_teacher_with_other_number_of_classes() -> None:
    student, x, y, _ = _problem()
    t4 = torch.randn(x.shape[0], 4, dtype=x.dtype)
    with pytest.raises(ValueError, match="teacher_logits"):
        _call(BKDModel(student, 2.0, 1.0, 1.0), x, y, t4)


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"strength": -0.5}, "strength"),
        ({"prior_scale": 0.0}, "prior_scale"),
        ({"prior_scale": -2.0}, "prior_scale"),
    ],
)
def test_model_rejects_bad_hyperparameters(options: dict, argument: str) -> None:
    student, *_ = _problem()
    settings = {"temperature": 2.0, "strength": 1.0, "prior_scale": 1.0} | options
    with pytest.raises(ValueError, match=argument):
        BKDModel(student, **settings)


def test_initialize_model_and_nuts_accept_the_model() -> None:
    torch.manual_seed(0)
    student = nn.Linear(2, 2).double()
    x = torch.randn(20, 2, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    t = torch.stack([-x[:, 0], x[:, 0]], -1) * 2
    model = BKDModel(student, 2.0, 3.0, 1.0)
    init_params, potential_fn, _, _ = initialize_model(model, model_args=(x, y, t))
    assert set(init_params) == set(model.site_names)
    assert torch.isfinite(potential_fn(init_params))
    values = model.initial_values()
    expected = _neg_log_joint(model, values, x, y, t)
    assert potential_fn(values).item() == pytest.approx(expected.item(), rel=1e-12)

    pyro.set_rng_seed(0)
    mcmc = MCMC(NUTS(model, max_tree_depth=3), num_samples=6, warmup_steps=6, disable_progbar=True)
    mcmc.run(x, y, t)
    samples = mcmc.get_samples()
    assert samples["weight"].shape == (6, 2, 2)
    assert samples["bias"].shape == (6, 2)
    assert torch.isfinite(samples["weight"]).all()


def test_svi_accepts_the_model_and_prediction_without_labels_or_teacher() -> None:
    student, x, y, t = _problem(dtype=torch.float32)
    model = BKDModel(student, 2.0, 1.0, 1.0)
    guide = AutoNormal(model, init_scale=0.01)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    losses = [svi.step(x, y, t) for _ in range(5)]
    assert all(math.isfinite(v) for v in losses)

    predictive = Predictive(model, guide=guide, num_samples=4, return_sites=[LIKELIHOOD_SITE])
    y_pred = predictive(x)[LIKELIHOOD_SITE]
    assert y_pred.shape == (4, x.shape[0])
    assert ((y_pred >= 0) & (y_pred < 3)).all()

    no_teacher = _call(model, x, y)
    assert TEACHER_PRIOR_SITE not in no_teacher.nodes
    assert torch.isfinite(no_teacher.log_prob_sum())
    with_teacher = _call(model, x, y, t)
    assert TEACHER_PRIOR_SITE in with_teacher.nodes


def test_minibatch_by_conditioning_the_data_site_scales_by_n_over_m() -> None:
    student, x, y, t = _problem()
    n, m = x.shape[0], 7
    model = BKDModel(student, 2.0, 5.0, 0.9)
    params = model.initial_values()
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(3))[:m]

    full = poutine.trace(poutine.condition(model, data=params)).get_trace(x, y, t)
    full.compute_log_prob()
    batch = poutine.trace(poutine.condition(model, data={**params, "data": idx})).get_trace(x, y, t)
    batch.compute_log_prob()
    prior = sum(full.nodes[name]["log_prob_sum"] for name in params)
    per_example = (
        full.nodes[LIKELIHOOD_SITE]["log_prob"] + full.nodes[TEACHER_PRIOR_SITE]["log_prob"]
    )
    assert per_example.shape == (n,)
    expected = prior + n / m * per_example[idx].sum()
    assert batch.log_prob_sum().item() == pytest.approx(expected.item(), rel=1e-12)
    for site in (LIKELIHOOD_SITE, TEACHER_PRIOR_SITE):
        assert batch.nodes[site]["scale"] == pytest.approx(n / m)
        assert batch.nodes[site]["log_prob"].shape == (m,)


# --- train_student_kd ------------------------------------------------------------------------


def test_train_student_kd_records_history_and_leaves_global_rng_alone() -> None:
    student, x, y, t = _problem(dtype=torch.float32, n=60)
    state = torch.get_rng_state()
    result = train_student_kd(
        student, x, y, t, temperature=2.0, alpha=0.5, epochs=3, batch_size=16, lr=0.01,
        device="cpu", progress=False, x_val=x[:10], y_val=y[:10],
    )  # fmt: skip
    assert torch.equal(torch.get_rng_state(), state)
    assert result.student is student and not student.training
    assert set(result.history) == {"loss", "ce", "kl", "train_acc", "val_acc"}
    assert all(len(v) == 3 for v in result.history.values())
    assert result.history["val_acc"][-1] == accuracy(student, x[:10], y[:10])


def test_train_student_kd_alone_is_cross_entropy_training() -> None:
    """No teacher and alpha = 0 (teacher given) train the same student the same way."""
    student, x, y, t = _problem(dtype=torch.float32, n=60)
    options = {"epochs": 2, "batch_size": 16, "lr": 0.01, "device": "cpu", "progress": False}
    alone = train_student_kd(copy.deepcopy(student), x, y, **options)
    zero = train_student_kd(copy.deepcopy(student), x, y, t, alpha=0.0, **options)
    assert "kl" not in alone.history and "kl" in zero.history
    assert alone.history["loss"] == zero.history["loss"] == alone.history["ce"]
    for a, b in zip(alone.student.parameters(), zero.student.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"alpha": 1.0}, "alpha"),
        ({"temperature": 0.0}, "temperature"),
        ({"convention": "x"}, "convention"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"lr": 0.0}, "lr"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"momentum": 1.0}, "momentum"),
    ],
)
def test_train_student_kd_rejects_bad_settings(options: dict, argument: str) -> None:
    student, x, y, t = _problem(dtype=torch.float32)
    settings = {"epochs": 1, "lr": 0.01, "progress": False} | options
    with pytest.raises(ValueError, match=argument):
        train_student_kd(student, x, y, t, **settings)
    with pytest.raises(ValueError, match="teacher_logits"):
        train_student_kd(student, x, y, t[:-1], epochs=1, lr=0.01, progress=False)


# --- (c) MAP = KD in practice on digits ------------------------------------------------------


def test_map_by_svi_equals_kd_on_digits() -> None:
    """KD with the prior's weight decay and AutoDelta SVI on BKD follow the same path.

    Both use Adam with the same learning rate, batches, epochs and start; their gradients
    differ by the factor N / (1 - alpha) only, to which Adam is invariant (up to eps).
    """
    digits = load_digits()
    x, y, x_test, y_test = digits.x_train, digits.y_train, digits.x_test, digits.y_test
    n = x.shape[0]
    torch.manual_seed(0)
    teacher = models.build("mlp", 10, in_features=64, hidden=(256, 256))
    train_teacher(teacher, x, y, epochs=15, lr=0.1, progress=False, device="cpu")
    t = teacher_logits(teacher, x)

    torch.manual_seed(1)
    start = models.build("mlp", 10, in_features=64, hidden=(32,))
    tau, alpha, sigma, lr, epochs, m = 4.0, 0.9, 1.0, 5e-3, 30, 128
    kd = train_student_kd(
        copy.deepcopy(start), x, y, t, temperature=tau, alpha=alpha, epochs=epochs,
        batch_size=m, lr=lr, weight_decay=weight_decay_for_prior(sigma, n, alpha),
        device="cpu", progress=False,
    )  # fmt: skip
    strength = strength_from_alpha(alpha, tau)
    model = BKDModel(copy.deepcopy(start), tau, strength, sigma)
    steps_per_epoch = math.ceil(n / m)
    result = fit_svi(
        model, DistillationData(x, y, t), guide="delta", num_steps=epochs * steps_per_epoch,
        batch_size=m, lr=lr, seed=0, progress=False,
    )  # fmt: skip
    map_student = copy.deepcopy(start)
    map_student.load_state_dict(map_estimate(result))

    acc_kd, acc_map = accuracy(kd.student, x_test, y_test), accuracy(map_student, x_test, y_test)
    print(f"digits test accuracy: KD {acc_kd:.4f}, MAP (AutoDelta SVI) {acc_map:.4f}")
    assert acc_kd > 0.9
    assert abs(acc_kd - acc_map) <= 0.01

    # SVI's loss/N per step -> KD mean-loss scale: subtract the constant
    # mean_i [lam H(p_i) + log B(1 + lam p_i)] + (D / 2N) log(2 pi sigma^2), times (1 - alpha).
    # What remains of the prior, (1 - alpha) ||theta||^2 / (2 N sigma^2), is below 0.01 here.
    log_p = teacher_log_probs(t, tau)
    entropy = -(log_p.exp() * log_p).sum(-1)
    dim = sum(p.numel() for p in start.parameters())
    constant = (strength * entropy + log_dirichlet_normaliser(log_p, strength)).mean().item()
    constant += dim / (2 * n) * math.log(2 * math.pi * sigma**2)
    svi_epochs = np.asarray(result.elbo).reshape(epochs, steps_per_epoch).mean(1)
    svi_curve = (1 - alpha) * (svi_epochs - constant)
    kd_curve = np.asarray(kd.history["loss"])
    assert np.corrcoef(kd_curve, svi_curve)[0, 1] > 0.95
    assert np.abs(kd_curve - svi_curve).max() < 0.01
    for curve in (kd_curve, svi_curve):
        assert curve[-1] < 0.1 * curve[0]
        assert curve[-5:].mean() < curve[5:10].mean()


def test_fit_map_is_train_student_kd_with_the_models_alpha_and_prior_decay() -> None:
    """KD = MAP of BKD: fit_map derives alpha and weight decay from (tau, lam, sigma) and
    gives bit-identical weights to the four steps written out by hand."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)
    t = torch.randn(40, 3, generator=g)
    tau, alpha, sigma = 2.0, 0.75, 0.5

    def student() -> nn.Module:
        torch.manual_seed(11)
        return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))

    by_hand = student()
    train_student_kd(
        by_hand, x, y, t, temperature=tau, alpha=alpha, epochs=3, batch_size=16, lr=1e-2,
        weight_decay=weight_decay_for_prior(sigma, 40, alpha), seed=5, device="cpu",
        progress=False,
    )  # fmt: skip
    model = BKDModel(student(), tau, strength_from_alpha(alpha, tau), sigma)
    result = fit_map(
        model, DistillationData(x, y, t), epochs=3, batch_size=16, lr=1e-2, seed=5,
        device="cpu", progress=False,
    )  # fmt: skip
    assert result.student is model.student
    for a, b in zip(by_hand.parameters(), model.student.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(InputError, match="does not match strength"):
        fit_map(model, DistillationData(x, y, t), alpha=0.5, epochs=1, lr=1e-2, progress=False)
    with pytest.raises(TypeError, match="BKDModel"):
        fit_map(by_hand, DistillationData(x, y, t), epochs=1, lr=1e-2)  # type: ignore[arg-type]
