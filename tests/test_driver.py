"""The driver :func:`pyro_bkd.sample`: agreement with NUTS, calibration, repeatability,
resume, continuation, blow-ups and the convergence verdict."""

from __future__ import annotations

import math
import warnings

import pyro
import pytest
import torch
from pyro.infer import MCMC, NUTS
from scipy import stats
from test_kernels import softmax_problem
from torch import nn
from torch.func import grad_and_value, vmap

import pyro_bkd.infer.driver as driver_module
from pyro_bkd import BKDModel, ConvergenceWarning, CyclicalStep, NonFiniteError, sample
from pyro_bkd.infer.base import ChainState
from pyro_bkd.infer.driver import MAX_BACKOFFS
from pyro_bkd.infer.langevin import SGLDStep
from pyro_bkd.infer.monitor import FiniteMonitor, RunawayError, runaway_floor
from pyro_bkd.infer.potential import BKDPotential
from pyro_bkd.infer.verdict import diagnose
from pyro_bkd.metrics import max_rhat
from pyro_bkd.predictive import predict_probs


# ---------------------------------------------------------------------------------------------
# Against NUTS on a small BKD model.
@pytest.fixture(scope="module")
def nuts_reference():
    """NUTS on the full-data model: 600 draws after 300 warm-up steps."""
    model, data, x_test = softmax_problem()
    pyro.set_rng_seed(0)
    mcmc = MCMC(NUTS(model), 600, warmup_steps=300, disable_progbar=True)
    mcmc.run(data.x, data.y, data.teacher_logits)
    draws = {k: v.unsqueeze(0) for k, v in mcmc.get_samples().items()}
    return predict_probs(model.student, draws, x_test)


@pytest.fixture(scope="module")
def default_result():
    model, data, x_test = softmax_problem()
    return sample(model, data, num_samples=400, x_test=x_test, seed=0, progress=False)


def test_default_sampler_agrees_with_nuts_on_small_bkd_model(nuts_reference, default_result):
    """The defaults of ``sample()`` against NUTS at 20 test inputs.

    Posterior sds of the class probabilities are about 0.02-0.08; with several hundred
    effective draws on each side the MC error of a mean is < 0.004 and of an sd about 5%, so
    |mean difference| < 0.01 on average and sds within 20% on average (35% per entry) leave
    room for MC error only: the default sampler is exact. The per-entry bound is applied where
    ``min(p, 1 - p) >= 0.01`` (the verdict's rule for negligible classes): near 0 or 1 a class
    probability is log-normal-like with a kurtosis of ~100, so the relative MC error of its
    sd from 600 NUTS draws is ``sqrt((kurtosis - 1) / (4 n)) ~ 0.2-0.3`` (measured: ratios
    of 0.85-1.24 at ``p ~ 1e-7-1e-3`` with our ESS > 1,200).
    """
    probs = default_result.probs
    nuts_mean, nuts_sd = nuts_reference.mean((0, 1)), nuts_reference.flatten(0, 1).std(0)
    mean, sd = probs.mean((0, 1)), probs.flatten(0, 1).std(0)
    assert (mean - nuts_mean).abs().mean() < 0.01
    ratio = sd / nuts_sd
    assert 0.8 < ratio.mean() < 1.2
    clear = torch.minimum(nuts_mean, 1 - nuts_mean) >= 0.01
    assert clear.sum() >= 20
    assert ((ratio - 1).abs() < 0.35)[clear].all()


def test_default_sampler_converges_and_says_so(default_result):
    assert max_rhat(default_result.probs) < 1.05
    assert default_result.convergence.status == "converged"
    assert "converged" in default_result.convergence.message


# ---------------------------------------------------------------------------------------------
# Simulation-based calibration (Talts et al. 2018) of the SGLD update rule.
def _sbc_ranks(step_factor: float, thin: int, replicates: int, seed: int = 0) -> torch.Tensor:
    """Ranks of the true class probabilities among ``L = 19`` thinned SGLD draws.

    Softmax regression without teacher (``lam = 0``), ``N = 50``, ``d = 2``, ``K = 3``: for
    each replicate draw ``theta* ~ N(0, I)``, labels ``y ~ Categorical(q(x; theta*))``, run
    full-batch SGLD (:class:`SGLDStep`, the driver's update rule) from ``theta = 0`` for
    1000 warm-up steps with ``eps = step_factor / lambda_max``, keep every ``thin``-th
    iterate. Ranks of ``q_k(x_test; theta*)`` for the first K-1 classes at 4 fixed inputs.
    Replicates are vectorised as chains, each with its own labels.
    """
    g = torch.Generator().manual_seed(seed)
    n, d, k, draws_kept, warmup = 50, 2, 3, 19, 1000
    x = torch.randn(n, d, generator=g)
    x_test = torch.randn(4, d, generator=g)
    model = BKDModel(nn.Linear(d, k), temperature=1.0, strength=0.0, prior_scale=1.0)
    potential = BKDPotential(model, x, torch.zeros(n, dtype=torch.long))

    def probs(theta, inputs):
        return model.student_logits(potential.layout.unflatten(theta), inputs).softmax(-1)

    theta_true = torch.randn(replicates, potential.layout.dim, generator=g)
    p_true = vmap(probs, in_dims=(0, None))(theta_true, x)
    labels = torch.multinomial(p_true.reshape(-1, k), 1, generator=g).reshape(replicates, n)
    q_true = vmap(probs, in_dims=(0, None))(theta_true, x_test)
    grad_fn = vmap(grad_and_value(lambda th, yy: -potential._log_joint(th, x, yy)))

    def value_and_grad(theta):
        grad, value = grad_fn(theta, labels)
        return value, grad

    # Without a teacher the Hessian of U does not depend on the labels: one step for all.
    eps = step_factor / potential.max_curvature(torch.zeros(potential.layout.dim))
    algorithm = SGLDStep()
    state = algorithm.init(torch.zeros(replicates, potential.layout.dim), value_and_grad)
    metric = torch.ones_like(state.theta)
    kept = []
    for j in range(warmup + draws_kept * thin):
        state, _ = algorithm.step(state, value_and_grad, eps, metric, g)
        if j >= warmup and (j - warmup + 1) % thin == 0:
            kept.append(vmap(probs, in_dims=(0, None))(state.theta, x_test))
    q = torch.stack(kept, 1)  # [replicates, L, 4, K]
    return (q < q_true[:, None]).sum(1)[..., : k - 1].reshape(-1)


def _uniformity_p_value(ranks: torch.Tensor, num_ranks: int = 20, bins: int = 5) -> float:
    counts = torch.bincount(ranks * bins // num_ranks, minlength=bins)
    return float(stats.chisquare(counts.numpy()).pvalue)


def test_sbc_sgld_curvature_step_is_calibrated():
    """``eps = 1 / lambda_max`` with thinning 100: uniform ranks (chi-square over 5 bins of
    1,200 ranks, p > 0.001). Deterministic given the seed; the threshold only has to
    separate calibrated from miscalibrated, see the next test."""
    assert _uniformity_p_value(_sbc_ranks(1.0, thin=100, replicates=200)) > 1e-3


def test_sbc_detects_a_too_small_step():
    """Power check: a 10x smaller step with little thinning leaves the draws autocorrelated
    and under-dispersed, and the same chi-square rejects it."""
    assert _uniformity_p_value(_sbc_ranks(0.1, thin=20, replicates=200)) < 1e-6


@pytest.mark.slow
def test_sbc_sgld_curvature_step_is_calibrated_long():
    """The long version: 1,000 replicates (6,000 ranks)."""
    assert _uniformity_p_value(_sbc_ranks(1.0, thin=100, replicates=1000, seed=1)) > 1e-3


# ---------------------------------------------------------------------------------------------
# Repeatability, resume, continuation.
def _run(**kwargs):
    model, data, x_test = softmax_problem(100)
    options = dict(
        method="sghmc",
        num_samples=20,
        warmup_steps=30,
        thin=3,
        num_chains=2,
        batch_size=25,
        x_test=x_test,
        seed=5,
        progress=False,
        checkpoint_every=5,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return sample(model, data, **{**options, **kwargs})


@pytest.mark.parametrize("method", ["sghmc", "hmc"])
def test_driver_is_repeatable_and_resumes_exactly(tmp_path, monkeypatch, method):
    batch = None if method == "hmc" else 25
    reference = _run(method=method, batch_size=batch)
    again = _run(method=method, batch_size=batch)
    assert torch.equal(reference.probs, again.probs)

    checkpoint = tmp_path / "run.ckpt"
    calls = {"n": 0}
    real_predict = driver_module.predict_probs

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(driver_module, "predict_probs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(method=method, batch_size=batch, checkpoint=checkpoint)
    monkeypatch.setattr(driver_module, "predict_probs", real_predict)
    assert checkpoint.exists()
    resumed = _run(method=method, batch_size=batch, checkpoint=checkpoint)
    assert torch.equal(resumed.probs, reference.probs)
    assert torch.equal(resumed.sample_stats["lp"], reference.sample_stats["lp"])
    with pytest.raises(ValueError, match="other settings"):
        _run(method=method, batch_size=batch, checkpoint=checkpoint, seed=6)


@pytest.mark.parametrize("method", ["sghmc", "hmc"])
def test_a_finished_run_extended_from_its_checkpoint_equals_one_long_run(tmp_path, method):
    """10 draws with a checkpoint, then the same call with 20: the checkpoint holds every
    chain's state and random streams, so the 10 new draws continue the chains exactly and the
    result is bit-identical to one uninterrupted 20-draw run; asking for fewer draws than the
    checkpoint holds is refused."""
    batch = None if method == "hmc" else 25
    checkpoint = tmp_path / "run.ckpt"
    short = _run(method=method, batch_size=batch, num_samples=10, checkpoint=checkpoint)
    extended = _run(method=method, batch_size=batch, num_samples=20, checkpoint=checkpoint)
    long = _run(method=method, batch_size=batch, num_samples=20)
    assert torch.equal(extended.probs[:, :10], short.probs)
    assert torch.equal(extended.probs, long.probs)
    for name, values in long.sample_stats.items():
        assert torch.equal(extended.sample_stats[name], values), name
    with pytest.raises(ValueError, match="num_samples may only grow"):
        _run(method=method, batch_size=batch, num_samples=15, checkpoint=checkpoint)


def test_a_chain_draws_the_same_whatever_chains_run_beside_it():
    """Each chain's noise and minibatches come from its own stream seeded by ``(seed,
    chain)``: with a common start (no dispersion) and a fixed step, chains 0 and 1 of a
    4-chain run equal the 2-chain run's bit for bit."""
    options = dict(init_spread=0.0, step_size=1e-3, warmup_steps=0, warm_start=None)
    two = _run(num_chains=2, **options)
    four = _run(num_chains=4, **options)
    assert torch.equal(four.probs[:2], two.probs)
    assert not torch.equal(four.probs[2], four.probs[0])


def test_resuming_with_other_data_is_refused(tmp_path):
    """The checkpoint's identity includes a fingerprint of the data, teacher logits, test
    inputs, student and start: resuming with another ``x_test`` of the same shape cannot
    mix two runs' draws."""
    checkpoint = tmp_path / "run.ckpt"
    _run(checkpoint=checkpoint, num_samples=10)
    _, _, x_test = softmax_problem(100)
    with pytest.raises(ValueError, match="fingerprint"):
        _run(checkpoint=checkpoint, num_samples=10, x_test=x_test + 1.0)


def test_a_flipped_bit_in_a_checkpoint_and_stale_temporaries(tmp_path):
    """A checkpoint whose stored draws were altered is refused (checksum), and temporary
    files of an interrupted checkpoint write are removed on the next start."""
    checkpoint = tmp_path / "run.ckpt"
    _run(checkpoint=checkpoint, num_samples=10)
    payload = torch.load(checkpoint, weights_only=True)
    payload["buffers"]["lp"][0, 0] += 1.0
    torch.save(payload, checkpoint)
    stale = tmp_path / ".run.ckpt.0123abcd.tmp"
    stale.write_bytes(b"half a checkpoint")
    with pytest.raises(ValueError, match="checksum"):
        _run(checkpoint=checkpoint, num_samples=10)
    assert not stale.exists()


def test_test_inputs_of_the_wrong_shape_fail_before_sampling():
    model, data, x_test = softmax_problem(100)
    with pytest.raises(ValueError, match="x_test must have rows like x's"):
        sample(model, data, x_test=x_test[:, :1], progress=False)
    with pytest.raises(ValueError, match="x_test must be finite"):
        sample(model, data, x_test=x_test * float("nan"), progress=False)


def test_a_corrupt_checkpoint_is_named_in_one_error(tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"run\.ckpt"):
        _run(checkpoint=checkpoint)


def test_continuing_from_a_result_starts_each_chain_at_its_last_draw():
    first = _run(keep_weights=True)
    more = _run(keep_weights=True, warm_start=first, warmup_steps=0, step_size=1e-9)
    # A vanishing step: the continued chains stay where each chain ended.
    last = {k: v[:, -1] for k, v in first.weights.items()}
    for name, value in more.weights.items():
        assert torch.allclose(value[:, 0], last[name], atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Blow-ups.
def test_driver_reports_the_step_of_a_blow_up():
    with pytest.raises(NonFiniteError, match=r"step \d+") as error:
        _run(method="sgld", step_size=50.0, warmup_steps=0)
    assert error.value.step >= 1


def test_driver_backoff_recovers_from_a_blow_up():
    result = _run(
        method="sgld", step_size=10.0, warmup_steps=0, on_nonfinite="backoff", batch_size=None
    )
    assert result.backoffs
    assert torch.isfinite(result.probs).all()


def test_backoff_gives_up_when_the_fault_does_not_depend_on_the_step():
    """A student that returns NaN whatever the weights: every back-off fails again; after
    ``MAX_BACKOFFS`` halvings the run stops with a message naming the likely cause."""

    class Broken(nn.Linear):
        def forward(self, x):
            return super().forward(x) * float("nan")

    model, data, x_test = softmax_problem(100)
    model = BKDModel(Broken(2, 3), temperature=2.0, strength=3.0)
    with pytest.raises(NonFiniteError, match=f"after {MAX_BACKOFFS}"):
        sample(
            model,
            data,
            method="sgld",
            step_size=1e-3,
            warmup_steps=0,
            num_samples=5,
            thin=1,
            num_chains=1,
            on_nonfinite="backoff",
            x_test=x_test,
            progress=False,
        )


def test_driver_stops_a_runaway_chain_before_it_overflows():
    """Full-batch steps of 5.0 on a softmax regression whose curvature is ~N = 100: the first
    step overshoots and the log joint falls far below the floor (start - max(10 D,
    |start|)); the driver stops there instead of running on until it overflows."""
    model, data, _ = softmax_problem(100)
    potential = BKDPotential(model, data.x, data.y, data.teacher_logits)
    start = float(potential.log_joint(potential.initial_theta()))
    with pytest.raises(RunawayError, match=r"runaway potential at step \d+") as error:
        sample(
            model,
            data,
            method="sgld",
            step_size=5.0,
            warmup_steps=0,
            num_samples=5,
            thin=1,
            num_chains=1,
            warm_start=None,
            progress=False,
        )
    assert error.value.step <= 2
    assert math.isfinite(error.value.last_finite_log_joint)
    assert error.value.last_finite_log_joint < runaway_floor(start, potential.layout.dim)


def test_monitor_floor_names_the_first_step_and_chain_below_it():
    monitor = FiniteMonitor(block=10, first_step=7, floor=-100.0)
    for lp in ([-1.0, -2.0], [-3.0, -150.0], [-500.0, -1.0]):
        monitor.record(torch.tensor(lp), torch.ones(2))
    with pytest.raises(RunawayError) as error:
        monitor.check()
    assert (error.value.step, error.value.chain) == (8, 1)
    assert isinstance(error.value, NonFiniteError)  # handled like a NaN blow-up
    assert runaway_floor(-10.0, dim=3) == -40.0  # 10 T D = 30 > |start| = 10
    assert runaway_floor(5000.0, dim=3, posterior_temperature=2.0) == 0.0  # |start| wins


# ---------------------------------------------------------------------------------------------
# Arguments, outputs, verdict.
def test_driver_rejects_bad_arguments():
    model, data, _ = softmax_problem(30)
    with pytest.raises(ValueError, match="method"):
        sample(model, data, method="nuts")
    with pytest.raises(ValueError, match="batch_size"):
        sample(model, data, batch_size=31, progress=False)
    with pytest.raises(ValueError, match="full-batch"):
        sample(model, data, method="hmc", batch_size=10, progress=False)
    with pytest.raises(ValueError, match="step_size"):
        sample(model, data, step_size=-1.0, progress=False)
    with pytest.raises(TypeError, match="DistillationData"):
        sample(model, (data.x, data.y))
    with pytest.raises(TypeError, match="unexpected"):
        sample(model, data, warmpu=3)


def test_old_argument_names_still_work_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="warmup_steps"):
        result = _run(warmup=10, warmup_steps=None)
    assert result.config["warmup_steps"] == 10
    with pytest.warns(DeprecationWarning, match="posterior_temperature"):
        result = _run(temperature=0.5)
    assert result.config["posterior_temperature"] == 0.5


def test_driver_keeps_weights_and_exports():
    result = _run(keep_weights=True)
    assert result.weights["weight"].shape == (2, 20, 3, 2)
    model, _, x_test = softmax_problem(100)
    recomputed = predict_probs(model.student, result.weights, x_test)
    assert torch.allclose(recomputed, result.probs, atol=1e-6)
    idata = result.to_inference_data(y_test=torch.zeros(20, dtype=torch.long))
    assert set(idata.sample_stats.data_vars) >= {"lp", "step_size", "grad_norm", "accept_prob"}
    assert "convergence" in idata.predictions.attrs


def test_an_unconverged_run_is_warned_about():
    """Two chains started far apart that barely move: R-hat is large, the verdict says
    "not converged" with what to do, and ``sample`` warns."""
    model, data, x_test = softmax_problem(100)
    with pytest.warns(ConvergenceWarning, match="not converged.*run longer"):
        result = sample(
            model,
            data,
            method="sgld",
            step_size=1e-7,
            warmup_steps=0,
            num_samples=20,
            thin=1,
            num_chains=2,
            init_spread=5.0,
            x_test=x_test,
            progress=False,
        )
    assert result.convergence.status == "not converged"


def test_diagnose_leaves_out_negligible_classes_and_counts_shares():
    g = torch.Generator().manual_seed(0)
    good = torch.rand(4, 200, 3, 1, generator=g) * 0.5 + 0.25
    negligible = torch.rand(4, 200, 3, 1, generator=g) * 1e-4
    negligible[0] += 1e-3  # chain 0 apart: R-hat huge, but the class has no mass
    probs = torch.cat([good, negligible], dim=-1)
    summary = diagnose(probs)
    assert summary.counted == 3 and summary.entries == 6
    assert summary.status == "converged"
    shifted = probs.clone()
    shifted[0, :, 0, 0] += 0.3
    assert diagnose(shifted).status == "not converged"


def test_chain_state_select_picks_per_chain():
    a = ChainState(torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, 3))
    b = ChainState(torch.ones(2, 3), torch.ones(2), torch.ones(2, 3))
    picked = a.select(torch.tensor([True, False]), b)
    assert picked.theta[0].eq(0).all() and picked.theta[1].eq(1).all()
    assert picked.potential.tolist() == [0.0, 1.0]


def test_a_cyclical_schedule_drives_the_step_over_warmup_and_sampling():
    """``step_size=CyclicalStep(a, cycle)``: no adaptation, the recorded step of draw ``j``
    (iteration ``warmup + (j + 1) thin - 1``) is the schedule's value there."""
    schedule = CyclicalStep(1e-4, cycle=8)
    result = _run(method="sgld", step_size=schedule, warmup_steps=4, thin=3, batch_size=None)
    steps = result.sample_stats["step_size"][0]
    expected = torch.tensor([schedule(4 + 3 * (j + 1) - 1) for j in range(20)])
    assert torch.allclose(steps, expected.to(steps.dtype))
    assert schedule(0) == pytest.approx(1e-4) and schedule(4) == pytest.approx(0.5e-4)
