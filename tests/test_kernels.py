"""The Pyro ``MCMCKernel`` adapters: one conformance test every kernel passes, exact laws
through ``pyro.infer.MCMC``, and the potential they evaluate equals Pyro's trace."""

from __future__ import annotations

import arviz as az
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import MCMC
from torch import nn

from pyro_bkd import HMC, PSGLD, SGHMC, SGLD, BKDModel, DistillationData
from pyro_bkd.convergence import ess_bulk
from pyro_bkd.infer.potential import BKDPotential, TracePotential

N_GAUSS = 100
KERNELS = [SGLD, PSGLD, SGHMC, HMC]


def gaussian_model(y):
    """``mu ~ N(0, 1)``, ``y_i ~ N(mu, 1)``: posterior ``N(sum y / (N + 1), 1 / (N + 1))``."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", y.shape[0]) as idx:
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])


@pytest.fixture(scope="module")
def gaussian_data():
    return torch.randn(N_GAUSS, generator=torch.Generator().manual_seed(1)) + 1.5


@pytest.mark.filterwarnings("ignore:num_chains=2 is more than available_cpu")
@pytest.mark.parametrize("kernel_class", KERNELS)
def test_kernel_contract_under_pyro_mcmc(kernel_class, gaussian_data):
    """What ``pyro.infer.MCMC`` and ArviZ need: warm start respected for every chain,
    cleanup resets the start, draws of fixed shape, diagnostics with divergences, lp,
    step_size, accept_prob, and ``az.from_pyro``."""
    pyro.set_rng_seed(3)
    kernel = kernel_class(gaussian_model, 1e-6)
    kernel.initial_params = {"mu": torch.tensor(-7.0)}
    mcmc = MCMC(kernel, 30, warmup_steps=5, num_chains=2, disable_progbar=True)
    mcmc.run(gaussian_data)
    draws = mcmc.get_samples(group_by_chain=True)["mu"]
    assert draws.shape == (2, 30)
    # With a tiny step both chains stay near the warm start: chain 2 did not continue chain 1.
    assert torch.allclose(draws[:, 0], torch.full((2,), -7.0), atol=0.5)
    diagnostics = mcmc.diagnostics()
    assert diagnostics["divergences"] == {"chain 0": [], "chain 1": []}
    for name in ("lp", "step_size", "accept_prob", "grad_norm"):
        assert diagnostics[name]["chain 1"].shape == (30,)
    idata = az.from_pyro(mcmc, log_likelihood=False)
    assert idata.posterior["mu"].shape == (2, 30)


@pytest.mark.parametrize("kernel_class", [HMC, SGHMC])
def test_adaptive_kernels_sample_the_posterior_under_pyro_mcmc(kernel_class, gaussian_data):
    """With the step size and metric adapted in warm-up (``step_size=None``), the draws'
    mean and variance are within 4 ESS-based standard errors of the exact posterior (HMC:
    exact; SGHMC full batch: its O(h^2) bias at the tuned step, ``h^2 P ~ 1/4``, shrinks the
    variance by about 6%, inside the tolerance at this ESS)."""
    precision = N_GAUSS + 1.0
    pyro.set_rng_seed(4)
    mcmc = MCMC(kernel_class(gaussian_model, thin=2), 1000, warmup_steps=300, disable_progbar=True)
    mcmc.run(gaussian_data)
    draws = mcmc.get_samples()["mu"].double()
    ess = float(ess_bulk(draws[None].numpy()))
    var = float(draws.var())
    assert (
        abs(float(draws.mean()) - float(gaussian_data.sum()) / precision) < 4 * (var / ess) ** 0.5
    )
    assert abs(var - 1 / precision) < 4 * var * (2 / ess) ** 0.5 + 0.06 / precision


def test_kernel_rejects_bad_arguments(gaussian_data):
    with pytest.raises(ValueError, match="step_size"):
        SGLD(gaussian_model, 0.0)
    with pytest.raises(ValueError, match="subsample_size"):
        SGLD(gaussian_model, 1e-3, subsample_size=0)
    with pytest.raises(ValueError, match="full-batch"):
        HMC(gaussian_model, subsample_size=10)
    kernel = SGLD(gaussian_model, 1e-3, subsample_size=N_GAUSS + 1)
    with pytest.raises(ValueError, match="subsample_size must be <= N"):
        kernel.setup(0, gaussian_data)

    def no_latents(y):
        with pyro.plate("data", y.shape[0]):
            pyro.sample("obs", dist.Normal(0.0, 1.0), obs=y)

    with pytest.raises(ValueError, match="no latent"):
        SGLD(no_latents, 1e-3).setup(0, gaussian_data)


def test_old_temperature_keyword_still_works_with_a_deprecation_warning(gaussian_data):
    """``temperature=`` (the old name of ``posterior_temperature=``) sets the posterior
    temperature with a DeprecationWarning naming the new keyword, attributed to the caller;
    the draws equal those of the new keyword."""
    with pytest.warns(DeprecationWarning, match="posterior_temperature") as record:
        old = SGLD(gaussian_model, 1e-3, temperature=0.5)
    assert [w.filename for w in record] == [__file__]
    assert old.posterior_temperature == 0.5
    new = SGLD(gaussian_model, 1e-3, posterior_temperature=0.5)
    draws = []
    for kernel in (old, new):
        pyro.set_rng_seed(5)
        mcmc = MCMC(kernel, 10, warmup_steps=2, disable_progbar=True)
        mcmc.run(gaussian_data)
        draws.append(mcmc.get_samples()["mu"])
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="posterior_temperature"):
        SGLD(gaussian_model, 1e-3, posterior_temperature=0.0)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="posterior_temperature"):
        HMC(gaussian_model, temperature=-1.0)


def test_data_on_another_device_is_rejected():
    model = BKDModel(nn.Linear(2, 3))
    x = torch.zeros(4, 2, device="meta")
    with pytest.raises(ValueError, match="device"):
        BKDPotential(model, x, torch.zeros(4, dtype=torch.long, device="meta"))


def softmax_problem(n: int = 200, seed: int = 0):
    """Softmax regression student (d = 2, K = 3) with a noisy teacher; 20 test inputs."""
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
    model, data, _ = softmax_problem(50)
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
    batched_u, batched_g = potential.batched_value_and_grad(theta.expand(2, -1), None)
    assert torch.allclose(batched_u, u_fast.expand(2), rtol=1e-12)
    assert torch.allclose(batched_g, g_fast.expand(2, -1), rtol=1e-10)
