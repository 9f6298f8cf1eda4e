"""Statistical and contract tests of the SGLD/pSGLD kernels and the sampling driver.

References: exact answers (a conjugate Gaussian, where the discretised SGLD chain has a known
stationary law), Pyro's NUTS on the same BKD model, and simulation-based calibration.
"""

from __future__ import annotations

import math

import arviz as az
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import MCMC, NUTS
from scipy import stats
from torch import nn
from torch.func import grad_and_value, vmap

import pyro_bkd.infer.run as run_module
from pyro_bkd import PSGLD, SGLD, BKDModel, DistillationData, NonFiniteError, sample
from pyro_bkd.infer.integrators import sgld_step
from pyro_bkd.infer.monitor import FiniteMonitor, RunawayError, runaway_floor
from pyro_bkd.infer.potential import BKDPotential, TracePotential
from pyro_bkd.infer.run import default_step_size
from pyro_bkd.metrics import max_rhat
from pyro_bkd.predictive import predict_probs

# ---------------------------------------------------------------------------------------------
# Conjugate Gaussian: mu ~ N(0, 1), y_i ~ N(mu, 1). Posterior precision P = N + 1.
N_GAUSS = 100


def gaussian_model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", y.shape[0]) as idx:
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])


@pytest.fixture(scope="module")
def gaussian_data():
    return torch.randn(N_GAUSS, generator=torch.Generator().manual_seed(1)) + 1.5


def _ar1_standard_error(draws: torch.Tensor) -> tuple[float, float]:
    """Standard errors of the mean and variance of correlated draws (ESS from ArviZ)."""
    ess = float(az.ess(draws.numpy()))
    var = float(draws.var())
    return math.sqrt(var / ess), var * math.sqrt(2.0 / ess)


def test_sgld_full_batch_matches_exact_discretised_gaussian(gaussian_data):
    """Full-batch SGLD on a Gaussian target with precision ``P`` is the AR(1) chain
    ``mu' = mu - (eps/2) P (mu - m) + sqrt(eps) xi``, whose stationary law is exactly
    ``N(m, 1 / (P (1 - eps P / 4)))``. With ``eps P = 1`` the variance is 33% above the
    posterior's, so the test sees the discretisation bias and the sampler reproduces it.
    Tolerance: 4 Monte Carlo standard errors (ESS-based) for the mean and the variance.
    """
    y = gaussian_data
    precision = N_GAUSS + 1.0
    post_mean = float(y.sum() / precision)
    eps = 1.0 / precision
    exact_var = 1.0 / (precision * (1 - eps * precision / 4))
    pyro.set_rng_seed(0)
    mcmc = MCMC(SGLD(gaussian_model, eps, thin=4), 2000, warmup_steps=50, disable_progbar=True)
    mcmc.run(y)
    draws = mcmc.get_samples()["mu"]
    se_mean, se_var = _ar1_standard_error(draws)
    assert abs(float(draws.mean()) - post_mean) < 4 * se_mean
    assert abs(float(draws.var()) - exact_var) < 4 * se_var
    assert abs(exact_var - 1 / precision) > 4 * se_var  # the bias is visible at this eps


def test_sgld_minibatch_small_step_matches_exact_posterior(gaussian_data):
    """Minibatch SGLD with a small step: mean and variance near the exact posterior
    ``N(sum y / P, 1 / P)``. The bias is O(eps P) + minibatch noise ~ (N/m) eps (gradient
    variance): with ``eps P = 0.1`` and ``m = 20`` both are a few percent of the variance,
    so the variance tolerance is 4 MC standard errors plus 10%.
    """
    y = gaussian_data
    precision = N_GAUSS + 1.0
    pyro.set_rng_seed(1)
    kernel = SGLD(gaussian_model, 0.1 / precision, subsample_size=20, thin=10)
    mcmc = MCMC(kernel, 1000, warmup_steps=20, disable_progbar=True)
    mcmc.run(y)
    draws = mcmc.get_samples()["mu"]
    se_mean, se_var = _ar1_standard_error(draws)
    assert abs(float(draws.mean()) - float(y.sum()) / precision) < 4 * se_mean
    assert abs(float(draws.var()) - 1 / precision) < 4 * se_var + 0.1 / precision


def test_psgld_frozen_preconditioner_matches_exact_discretised_gaussian(gaussian_data):
    """After warm-up the pSGLD gain ``G`` is frozen, so the chain is SGLD with step
    ``h = eps G``: stationary law ``N(m, 1 / (P (1 - h P / 4)))`` exactly."""
    y = gaussian_data
    precision = N_GAUSS + 1.0
    pyro.set_rng_seed(2)
    kernel = PSGLD(gaussian_model, 0.05, thin=4)
    mcmc = MCMC(kernel, 1500, warmup_steps=200, disable_progbar=True)
    mcmc.run(y)
    draws = mcmc.get_samples()["mu"]
    h = 0.05 * float(mcmc.diagnostics()["preconditioner"]["chain 0"])
    assert 0 < h * precision < 2, "the frozen gain should give a stable step"
    exact_var = 1.0 / (precision * (1 - h * precision / 4))
    se_mean, se_var = _ar1_standard_error(draws)
    assert abs(float(draws.mean()) - float(y.sum()) / precision) < 4 * se_mean
    assert abs(float(draws.var()) - exact_var) < 4 * se_var


# ---------------------------------------------------------------------------------------------
# Pyro's MCMCKernel contract.
@pytest.mark.filterwarnings("ignore:num_chains=2 is more than available_cpu")
@pytest.mark.parametrize("kernel_class", [SGLD, PSGLD])
def test_kernel_contract_under_pyro_mcmc(kernel_class, gaussian_data):
    """What ``pyro.infer.MCMC`` and ArviZ need: warm start respected for every chain,
    cleanup resets the start, draws of fixed shape, diagnostics with divergences and lp,
    ``summary``, ``az.from_pyro``."""
    y = gaussian_data
    pyro.set_rng_seed(3)
    kernel = kernel_class(gaussian_model, 1e-5, subsample_size=10)
    start = {"mu": torch.tensor(-7.0)}
    kernel.initial_params = start
    mcmc = MCMC(kernel, 30, warmup_steps=5, num_chains=2, disable_progbar=True)
    mcmc.run(y)  # on 2 cores Pyro draws the chains one after another
    draws = mcmc.get_samples(group_by_chain=True)["mu"]
    assert draws.shape == (2, 30)
    # With a tiny step both chains stay near the warm start: chain 2 did not continue chain 1.
    assert torch.allclose(draws[:, 0], torch.full((2,), -7.0), atol=0.5)
    diagnostics = mcmc.diagnostics()
    assert diagnostics["divergences"] == {"chain 0": [], "chain 1": []}
    assert diagnostics["lp"]["chain 1"].shape == (30,)
    assert diagnostics["step_size"]["chain 0"].shape == (30,)
    idata = az.from_pyro(mcmc, log_likelihood=False)
    assert idata.posterior["mu"].shape == (2, 30)


def test_kernel_rejects_bad_arguments(gaussian_data):
    with pytest.raises(ValueError, match="step_size"):
        SGLD(gaussian_model, 0.0)
    with pytest.raises(ValueError, match="subsample_size"):
        SGLD(gaussian_model, 1e-3, subsample_size=0)
    kernel = SGLD(gaussian_model, 1e-3, subsample_size=N_GAUSS + 1)
    with pytest.raises(ValueError, match="subsample_size must be <= N"):
        kernel.setup(0, gaussian_data)

    def no_latents(y):
        with pyro.plate("data", y.shape[0]):
            pyro.sample("obs", dist.Normal(0.0, 1.0), obs=y)

    with pytest.raises(ValueError, match="no latent"):
        SGLD(no_latents, 1e-3).setup(0, gaussian_data)


def test_data_on_another_device_is_rejected():
    model = BKDModel(nn.Linear(2, 3))
    x = torch.zeros(4, 2, device="meta")
    with pytest.raises(ValueError, match="device"):
        BKDPotential(model, x, torch.zeros(4, dtype=torch.long, device="meta"))


# ---------------------------------------------------------------------------------------------
# A small BKD model: softmax regression student, K = 3, against NUTS.
def _softmax_problem(n: int = 200, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d, k = 2, 3
    w = 1.5 * torch.randn(d, k, generator=g)
    x = torch.randn(n, d, generator=g)
    y = torch.multinomial((x @ w).softmax(-1), 1, generator=g).squeeze(-1)
    teacher = x @ w + 0.5 * torch.randn(n, k, generator=g)
    x_test = torch.randn(20, d, generator=g)
    torch.manual_seed(seed)
    model = BKDModel(nn.Linear(d, k), temperature=2.0, strength=3.0, prior_scale=1.0)
    return model, DistillationData(x, y, teacher), x_test


def test_bkd_potential_equals_pyro_trace_log_joint():
    """The trace-free potential is the Pyro model's log joint, on full data and on a
    conditioned minibatch (N/m rescaling), to float64 precision."""
    model, data, _ = _softmax_problem(50)
    model.student.double()
    x, t = data.x.double(), data.teacher_logits.double()
    potential = BKDPotential(model, x, data.y, t)
    theta = potential.initial_theta() + 0.3
    params = potential.layout.unflatten(theta)
    for idx in (None, torch.tensor([3, 7, 11, 40])):
        conditioned = poutine.condition(model, {**params, **({} if idx is None else {"data": idx})})
        trace = poutine.trace(conditioned).get_trace(x, data.y, t)
        assert torch.allclose(potential.log_joint(theta, idx), trace.log_prob_sum(), rtol=1e-12)
    trace_potential = TracePotential(model, (x, data.y, t), {})
    u_fast, g_fast = potential.value_and_grad(theta, None)
    u_trace, g_trace = trace_potential.value_and_grad(theta, None)
    assert torch.allclose(u_fast, u_trace, rtol=1e-12)
    assert torch.allclose(g_fast, g_trace, rtol=1e-10)


@pytest.fixture(scope="module")
def nuts_reference():
    """NUTS on the full-data model: 300 draws after 200 warm-up steps."""
    model, data, x_test = _softmax_problem()
    pyro.set_rng_seed(0)
    mcmc = MCMC(NUTS(model), 300, warmup_steps=200, disable_progbar=True)
    mcmc.run(data.x, data.y, data.teacher_logits)
    draws = {k: v.unsqueeze(0) for k, v in mcmc.get_samples().items()}
    return predict_probs(model.student, draws, x_test)


@pytest.fixture(scope="module")
def sgld_probs():
    model, data, x_test = _softmax_problem()
    result = sample(
        model,
        data,
        num_samples=400,
        warmup=2000,
        thin=10,
        chains=4,
        x_test=x_test,
        seed=0,
        progress=False,
    )
    return result.probs


def test_sgld_agrees_with_nuts_on_small_bkd_model(nuts_reference, sgld_probs):
    """SGLD (library defaults, full batch, 4 chains) against NUTS at 20 test inputs.

    Posterior sds of the class probabilities are about 0.02-0.08; with ~300 effective NUTS
    draws the MC error of a mean is < 0.004 and of an sd about 4%, so |mean difference| <
    0.01 on average and sds within 20% (the issue's targets) leave room for MC error plus the
    O(eps) discretisation bias of SGLD (measured: 0.0005 and 3%).
    """
    nuts_mean = nuts_reference.mean((0, 1))
    nuts_sd = nuts_reference.flatten(0, 1).std(0)
    sgld_mean = sgld_probs.mean((0, 1))
    sgld_sd = sgld_probs.flatten(0, 1).std(0)
    assert (sgld_mean - nuts_mean).abs().mean() < 0.01
    ratio = sgld_sd / nuts_sd
    assert 0.8 < ratio.mean() < 1.2
    assert ((ratio - 1).abs() < 0.35).all()
    lo_n, hi_n = nuts_reference.flatten(0, 1).quantile(torch.tensor([0.025, 0.975]), dim=0)
    lo_s, hi_s = sgld_probs.flatten(0, 1).quantile(torch.tensor([0.025, 0.975]), dim=0)
    assert (lo_s - lo_n).abs().mean() < 0.02
    assert (hi_s - hi_n).abs().mean() < 0.02


def test_sgld_chains_converge_rhat(sgld_probs):
    """Rank-normalised split R-hat of every class probability across 4 chains < 1.05."""
    assert max_rhat(sgld_probs) < 1.05


# ---------------------------------------------------------------------------------------------
# Simulation-based calibration (Talts et al. 2018).
def _sbc_ranks(step_factor: float, thin: int, replicates: int, seed: int = 0) -> torch.Tensor:
    """Ranks of the true class probabilities among ``L = 19`` thinned SGLD draws.

    Softmax regression without teacher (``lam = 0``), ``N = 50``, ``d = 2``, ``K = 3``: for
    each replicate draw ``theta* ~ N(0, I)``, labels ``y ~ Categorical(q(x; theta*))``, run
    full-batch SGLD with the library potential and update rule from ``theta = 0`` for 1000
    warm-up steps, keep every ``thin``-th iterate. Ranks of ``q_k(x_test; theta*)`` for the
    first K-1 classes at 4 fixed inputs (class probabilities are identified; weights are
    not). Replicates are vectorised with ``vmap``, each with its own labels.
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
    theta = torch.zeros(replicates, potential.layout.dim)
    # Without a teacher the Hessian of U does not depend on the labels: one default for all.
    eps = step_factor * default_step_size("sgld", potential, torch.zeros(potential.layout.dim))
    kept = []
    for j in range(warmup + draws_kept * thin):
        grad, _ = grad_fn(theta, labels)
        theta = sgld_step(theta, grad, torch.randn(theta.shape, generator=g), eps)
        if j >= warmup and (j - warmup + 1) % thin == 0:
            kept.append(vmap(probs, in_dims=(0, None))(theta, x_test))
    q = torch.stack(kept, 1)  # [replicates, L, 4, K]
    return (q < q_true[:, None]).sum(1)[..., : k - 1].reshape(-1)


def _uniformity_p_value(ranks: torch.Tensor, num_ranks: int = 20, bins: int = 5) -> float:
    counts = torch.bincount(ranks * bins // num_ranks, minlength=bins)
    return float(stats.chisquare(counts.numpy()).pvalue)


def test_sbc_default_step_is_calibrated():
    """With the default step size and thinning 100 the ranks are uniform (chi-square over 5
    bins of 1,200 ranks, p > 0.001; measured p = 0.39). Deterministic given the seed; the
    threshold only has to separate calibrated from miscalibrated, see the next test."""
    assert _uniformity_p_value(_sbc_ranks(1.0, thin=100, replicates=200)) > 1e-3


def test_sbc_detects_a_too_small_step():
    """Power check of the SBC test: a 10x smaller step with little thinning leaves the draws
    autocorrelated and under-dispersed, and the same chi-square rejects it (measured
    p ~ 1e-19)."""
    assert _uniformity_p_value(_sbc_ranks(0.1, thin=20, replicates=200)) < 1e-6


@pytest.mark.slow
def test_sbc_default_step_is_calibrated_long():
    """The long version: 1,000 replicates (6,000 ranks)."""
    assert _uniformity_p_value(_sbc_ranks(1.0, thin=100, replicates=1000, seed=1)) > 1e-3


# ---------------------------------------------------------------------------------------------
# Driver: repeatability, resume, blow-ups.
def _driver_run(**kwargs):
    model, data, x_test = _softmax_problem(100)
    options = dict(
        num_samples=20,
        warmup=30,
        thin=3,
        chains=2,
        batch_size=25,
        x_test=x_test,
        seed=5,
        progress=False,
        checkpoint_every=5,
    )
    return sample(model, data, **{**options, **kwargs})


def test_driver_is_repeatable_and_resumes_exactly(tmp_path, monkeypatch):
    reference = _driver_run()
    again = _driver_run()
    assert torch.equal(reference.probs, again.probs)

    checkpoint = tmp_path / "run.ckpt"
    calls = {"n": 0}
    real_predict = run_module.predict_probs

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(run_module, "predict_probs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _driver_run(checkpoint=checkpoint)
    monkeypatch.setattr(run_module, "predict_probs", real_predict)
    assert checkpoint.exists()
    resumed = _driver_run(checkpoint=checkpoint)
    assert torch.equal(resumed.probs, reference.probs)
    assert torch.equal(resumed.sample_stats["lp"], reference.sample_stats["lp"])
    with pytest.raises(ValueError, match="other settings"):
        _driver_run(checkpoint=checkpoint, seed=6)


def test_driver_reports_the_step_of_a_blow_up(tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    with pytest.raises(NonFiniteError, match=r"step \d+") as error:
        _driver_run(step_size=50.0, checkpoint=checkpoint)
    assert error.value.step >= 1
    assert checkpoint.exists() or error.value.step < 30  # what was saved is intact
    if checkpoint.exists():
        torch.load(checkpoint, weights_only=False)


def test_driver_backoff_recovers_from_a_blow_up():
    result = _driver_run(step_size=10.0, on_nonfinite="backoff", batch_size=None)
    assert result.backoffs
    assert torch.isfinite(result.probs).all()


def test_driver_stops_a_runaway_chain_before_it_overflows():
    """Full-batch steps of 5.0 on a softmax regression whose curvature is ~N = 100: the first
    step overshoots by two orders of magnitude and the log joint falls to about -7e4, finite
    but far below the floor (start - max(10 D, |start|)); the driver stops there instead of
    running on until the potential overflows (which a step of 10 reaches at step 29)."""
    model, data, _ = _softmax_problem(100)
    potential = BKDPotential(model, data.x, data.y, data.teacher_logits)
    start = float(potential.log_joint(potential.initial_theta()))
    with pytest.raises(RunawayError, match=r"runaway potential at step \d+") as error:
        sample(
            model,
            data,
            step_size=5.0,
            warmup=30,
            num_samples=5,
            thin=1,
            chains=1,
            batch_size=None,
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
    assert runaway_floor(5000.0, dim=3, temperature=2.0) == 0.0  # |start| wins


def test_driver_rejects_bad_arguments():
    model, data, _ = _softmax_problem(30)
    with pytest.raises(ValueError, match="method"):
        sample(model, data, method="hmc")
    with pytest.raises(ValueError, match="batch_size"):
        sample(model, data, batch_size=31, progress=False)
    with pytest.raises(ValueError, match="step_size"):
        sample(model, data, step_size=-1.0, progress=False)
    with pytest.raises(TypeError, match="DistillationData"):
        sample(model, (data.x, data.y))


def test_driver_keeps_weights_and_exports(tmp_path):
    result = _driver_run(keep_weights=True)
    assert result.weights["weight"].shape == (2, 20, 3, 2)
    model, _, x_test = _softmax_problem(100)
    recomputed = predict_probs(model.student, result.weights, x_test)
    assert torch.allclose(recomputed, result.probs, atol=1e-6)
    idata = result.to_inference_data(y=torch.zeros(20, dtype=torch.long))
    assert idata.posterior_predictive["probs"].dims == ("chain", "draw", "obs", "class")
    assert set(idata.sample_stats.data_vars) >= {"lp", "step_size", "grad_norm"}
