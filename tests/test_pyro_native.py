"""The Pyro-native path: ``pyro.infer.MCMC`` with our kernels on a ``BKDModel``, then
``Predictive``, ``az.from_pyro`` and ``export.from_mcmc``; a user's own subsampling plate."""

from __future__ import annotations

import warnings

import arviz as az
import matplotlib
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, Predictive
from torch import nn

matplotlib.use("Agg")
from matplotlib import pyplot as plt

from pyro_bkd import (
    HMC,
    PSGLD,
    SGHMC,
    SGLD,
    BKDModel,
    DistillationData,
    export,
    predict_probs,
    sample,
)
from pyro_bkd.infer.kernels import SAMPLE_STATS

# ArviZ 0.23's matplotlib backend calls an API deprecated in matplotlib 3.11; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::matplotlib.MatplotlibDeprecationWarning")

NUM_TRAIN, NUM_TEST, NUM_CLASSES = 60, 7, 3
CHAINS, DRAWS = 2, 15


def _problem() -> tuple[BKDModel, DistillationData, torch.Tensor]:
    """A two-layer student (d = 2, K = 3) with a noisy teacher, and test inputs."""
    g = torch.Generator().manual_seed(0)
    w = 1.5 * torch.randn(2, NUM_CLASSES, generator=g)
    x = torch.randn(NUM_TRAIN, 2, generator=g)
    y = torch.multinomial((x @ w).softmax(-1), 1, generator=g).squeeze(-1)
    teacher = x @ w + 0.5 * torch.randn(NUM_TRAIN, NUM_CLASSES, generator=g)
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, NUM_CLASSES))
    model = BKDModel(student, temperature=2.0, strength=3.0)
    return model, DistillationData(x, y, teacher), torch.randn(NUM_TEST, 2, generator=g)


@pytest.fixture(scope="module")
def problem() -> tuple[BKDModel, DistillationData, torch.Tensor]:
    return _problem()


@pytest.fixture(scope="module")
def mcmc(problem) -> MCMC:
    model, data, _ = problem
    pyro.set_rng_seed(0)
    kernel = SGLD(model, 1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # num_chains > available CPUs
        run = MCMC(kernel, DRAWS, warmup_steps=5, num_chains=CHAINS, disable_progbar=True)
        run.run(data.x, data.y, data.teacher_logits)
    return run


def test_parallel_predictive_equals_the_sequential_one(problem) -> None:
    """Weights with a leading draw dimension go through ``torch.func.vmap``: the same logits
    and, from the same seed, the same label draws as one model call per draw."""
    model, data, x_test = problem
    draws = {
        name: p.detach() + 0.3 * torch.randn(5, *p.shape, generator=torch.Generator())
        for name, p in model.student.named_parameters()
    }
    sites = ["y", "_RETURN"]
    outputs = []
    for parallel in (True, False):
        pyro.set_rng_seed(1)
        predictive = Predictive(model, draws, parallel=parallel, return_sites=sites)
        outputs.append(predictive(x_test, None, data.teacher_logits[:NUM_TEST]))
    parallel_out, sequential_out = outputs
    assert parallel_out["_RETURN"].shape == (5, NUM_TEST, NUM_CLASSES)
    torch.testing.assert_close(parallel_out["_RETURN"], sequential_out["_RETURN"])
    torch.testing.assert_close(parallel_out["y"], sequential_out["y"])
    expected = predict_probs(model.student, {k: v[None] for k, v in draws.items()}, x_test)
    torch.testing.assert_close(parallel_out["_RETURN"].softmax(-1), expected[0])


def test_weights_with_mismatched_draw_dims_are_refused(problem) -> None:
    model, _, x_test = problem
    params = {name: p.detach().expand(3, *p.shape) for name, p in model.student.named_parameters()}
    params["0.bias"] = params["0.bias"][:2]
    with pytest.raises(ValueError, match="disagree on their leading"):
        model.student_logits(params, x_test)


def test_az_from_pyro_on_a_kernel_run(mcmc: MCMC) -> None:
    """ArviZ's own converter: the weights, a vectorised log-likelihood of ``y`` (no "Could
    not get vectorized trace" warning) and ``diverging``; the kernel's statistics are in
    ``mcmc.diagnostics()`` (ArviZ 0.23 reads only the divergences from there), which
    ``export.from_mcmc`` turns into sample stats."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        idata = az.from_pyro(mcmc)
    assert idata.posterior["0.weight"].shape == (CHAINS, DRAWS, 4, 2)
    assert idata.log_likelihood["y"].shape == (CHAINS, DRAWS, NUM_TRAIN)
    assert list(idata.sample_stats.data_vars) == ["diverging"]
    diagnostics = mcmc.diagnostics()
    for name in SAMPLE_STATS:
        assert diagnostics[name]["chain 1"].shape == (DRAWS,)


@pytest.mark.parametrize("kernel_class", [SGLD, PSGLD, SGHMC, HMC])
def test_kernel_statistics_reach_arviz_through_from_mcmc(problem, kernel_class) -> None:
    """On every kernel: ``export.from_mcmc`` has the kernel's ``lp``, ``step_size`` and
    ``grad_norm`` per draw as sample stats; ``az.from_pyro`` runs without warnings and lists
    real data only (``y`` and the teacher's probabilities ``p = softmax(t / tau)`` of the
    ``teacher_prior`` site, no empty array), but its sample stats are only ``diverging``:
    ArviZ 0.23's converter reads nothing else from ``mcmc.diagnostics()``."""
    model, data, x_test = problem
    pyro.set_rng_seed(0)
    run = MCMC(kernel_class(model), 4, warmup_steps=3, disable_progbar=True)
    run.run(data.x, data.y, data.teacher_logits)
    idata = export.from_mcmc(run, x_test)
    diagnostics = run.diagnostics()
    for name in ("lp", "step_size", "grad_norm"):
        assert idata.sample_stats[name].dims == ("chain", "draw"), name
        np.testing.assert_array_equal(
            idata.sample_stats[name].values[0], diagnostics[name]["chain 0"].numpy()
        )
    assert np.isfinite(idata.sample_stats["lp"]).all()
    assert (idata.sample_stats["step_size"] > 0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        native = az.from_pyro(run)
    observed = native.observed_data
    assert set(observed.data_vars) == {"y", "teacher_prior"}
    assert all(size > 0 for var in observed.data_vars.values() for size in var.shape)
    np.testing.assert_array_equal(observed["y"], data.y.numpy())
    teacher = (data.teacher_logits / model.temperature).softmax(-1).numpy()
    np.testing.assert_allclose(observed["teacher_prior"], teacher, rtol=1e-6)
    assert native.log_likelihood["y"].shape == (1, 4, NUM_TRAIN)
    assert list(native.sample_stats.data_vars) == ["diverging"]


def test_the_teacher_prior_site_is_the_tip_density(problem) -> None:
    """The ``teacher_prior`` site's log density is ``lam sum_k p_k log q^tau_k - log B(1 + lam
    p)``, the Dirichlet(1 + lam p) log density at ``q^tau = softmax(z / tau)``; it cannot be
    sampled (its value, the teacher's probabilities, is always observed)."""
    model, data, _ = problem
    trace = pyro.poutine.trace(model).get_trace(data.x, data.y, data.teacher_logits)
    site = trace.nodes["teacher_prior"]
    assert site["is_observed"]
    logits = trace.nodes["_RETURN"]["value"]
    p = (data.teacher_logits / model.temperature).softmax(-1)
    q_tau = (logits / model.temperature).softmax(-1)
    expected = dist.Dirichlet(1 + model.strength * p).log_prob(q_tau)
    torch.testing.assert_close(site["fn"].log_prob(site["value"]), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(NotImplementedError, match="cannot be sampled"):
        site["fn"].sample()


@pytest.mark.filterwarnings("ignore::pyro_bkd.ConvergenceWarning")  # 4 draws per chain
def test_from_mcmc_gives_the_layout_of_sample(problem, mcmc: MCMC) -> None:
    """``export.from_mcmc`` on the MCMC run and ``sample(...).to_inference_data()`` have the
    same groups and variables; the class probabilities are the student's at ``x_test`` under
    the kept weights, and the kernel's statistics are the sample stats."""
    model, data, x_test = problem
    idata = export.from_mcmc(mcmc, x_test, class_names=["a", "b", "c"])
    result = sample(
        model, data, method="sgld", num_samples=4, num_chains=2, warmup_steps=4,
        x_test=x_test, keep_weights=True, progress=False,
    )  # fmt: skip
    train_probs = predict_probs(model.student, result.weights, data.x)
    reference = result.to_inference_data(**export.fitted_labels(train_probs, data.y))
    assert set(idata.groups()) == set(reference.groups())
    for group in idata.groups():
        assert set(idata[group].data_vars) == set(reference[group].data_vars), group
    weights = mcmc.get_samples(group_by_chain=True)
    expected = predict_probs(model.student, weights, x_test).numpy()
    np.testing.assert_allclose(idata.predictions["probs"].sel(label="b"), expected[..., 1])
    lp = torch.stack([mcmc.diagnostics()["lp"][f"chain {c}"] for c in range(CHAINS)])
    np.testing.assert_array_equal(idata.sample_stats["lp"], lp.numpy())
    assert idata.attrs["method"] == "sgld" and idata.attrs["num_chains"] == CHAINS
    assert idata.observed_data["y"].shape == (NUM_TRAIN,)


def test_arviz_reads_from_mcmc_as_any_run(mcmc: MCMC, problem) -> None:
    _, _, x_test = problem
    idata = export.from_mcmc(mcmc, x_test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pareto k at 30 draws
        assert az.loo(idata).n_data_points == NUM_TRAIN
    assert az.plot_ppc(idata, num_pp_samples=5, random_seed=0).figure is not None
    plt.close("all")
    bare = export.from_mcmc(mcmc, x_test, keep_weights=False)
    assert set(bare.groups()) == {"predictions", "predictions_constant_data", "sample_stats"}
    with pytest.raises(ValueError, match="fitted=True needs"):
        export.from_mcmc(mcmc, x_test, keep_weights=False, fitted=True)


def test_from_mcmc_refuses_other_models() -> None:
    def gaussian(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", y.shape[0]) as idx:
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])

    run = MCMC(SGLD(gaussian, 1e-3), 3, warmup_steps=1, disable_progbar=True)
    run.run(torch.zeros(5))
    with pytest.raises(TypeError, match=r"az\.from_pyro"):
        export.from_mcmc(run, torch.zeros(2, 2))


def test_a_subsampling_plate_in_a_user_model_says_what_to_write() -> None:
    """Pyro's potential refuses subsample sites; the kernel names the model it can run."""

    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", y.shape[0], subsample_size=10) as idx:
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])

    run = MCMC(SGLD(model, 1e-3), 3, warmup_steps=1, disable_progbar=True)
    message = (
        r"pyro.plate\('data', 100, subsample_size=10\) .* Write `with pyro.plate\('data', 100\) "
        r"as idx:`.*`SGLD\(model, step_size, subsample_size=10\)`"
    )
    with pytest.raises(ValueError, match=message):
        run.run(torch.randn(100))
