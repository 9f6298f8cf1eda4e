"""SVI baselines on the BKD model: each guide end to end, minibatch scaling, isolation."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pyro
import pytest
import torch
from pyro import poutine
from torch import nn

from pyro_bkd.batches import EpochBatches
from pyro_bkd.data.record import DistillationData
from pyro_bkd.infer.svi import GUIDES, PointMass, SVIResult, fit_svi, map_estimate
from pyro_bkd.model import BKDModel

NUM_CLASSES = 3


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny networks on two shared cores: one thread is faster and stable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data(n: int = 64, seed: int = 0) -> DistillationData:
    """Linear 3-class problem in 4 dimensions; the teacher knows the true logits, noisily."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    true_logits = 2.0 * x[:, :NUM_CLASSES]
    y = true_logits.argmax(-1)
    t = true_logits + 0.3 * torch.randn(n, NUM_CLASSES, generator=gen)
    return DistillationData(x, y, t)


def _model(seed: int = 0) -> BKDModel:
    torch.manual_seed(seed)
    student = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, NUM_CLASSES))
    return BKDModel(student, temperature=2.0, strength=2.0, prior_scale=1.0)


def _num_weights(model: BKDModel) -> int:
    return sum(p.numel() for p in model.student.parameters())


def _neg_log_joint(
    model: BKDModel, data: DistillationData, idx: torch.Tensor | None = None
) -> float:
    """``-log p(D_B, theta)`` at the student's weights, the plate conditioned on ``idx``."""
    conditioned = model.initial_values() | ({} if idx is None else {"data": idx})
    with torch.no_grad():
        trace = poutine.trace(poutine.condition(model, data=conditioned)).get_trace(
            data.x, data.y, data.teacher_logits
        )
        return -trace.log_prob_sum().item()


@pytest.mark.parametrize("guide", GUIDES)
def test_each_guide_end_to_end(guide: str) -> None:
    data, model = _data(), _model()
    steps = 200
    result = fit_svi(
        model, data, guide=guide, num_steps=steps, batch_size=16, lr=0.02, rank=3,
        progress=False,
    )  # fmt: skip
    assert isinstance(result, SVIResult)
    assert (
        result.method == {"delta": "map", "normal": "svi-normal", "lowrank": "svi-lowrank"}[guide]
    )
    assert len(result.elbo) == steps and all(math.isfinite(v) for v in result.elbo)
    assert sum(result.elbo[-30:]) < sum(result.elbo[:30])
    assert result.wall_seconds > 0

    draws = result.draws(5)
    shapes = {name: p.shape for name, p in model.student.named_parameters()}
    assert {name: d.shape[2:] for name, d in draws.items()} == shapes
    assert all(d.shape[:2] == (1, 5) for d in draws.values())
    spread = torch.stack([d.std(1).max() for d in draws.values()]).max()
    assert (spread == 0) if guide == "delta" else (spread > 0)

    x_test = torch.randn(10, 4)
    probs = result.probs(x_test, 6)
    assert probs.shape == (1, 6, 10, NUM_CLASSES)
    assert torch.allclose(probs.sum(-1), torch.ones(1, 6, 10), atol=1e-5)
    # the fit learned something: training accuracy of the mean probabilities
    train_probs = result.probs(data.x, 8).mean((0, 1))
    assert (train_probs.argmax(-1) == data.y).float().mean() > 0.85


def test_lowrank_rank_is_respected() -> None:
    model = _model()
    result = fit_svi(model, _data(), guide="lowrank", rank=2, num_steps=3, progress=False)
    assert result.guide.cov_factor.shape == (_num_weights(model), 2)
    with pytest.raises(ValueError, match="rank"):
        fit_svi(model, _data(), guide="lowrank", rank=0, num_steps=3, progress=False)


def test_unknown_guide_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"delta.*normal.*lowrank"):
        fit_svi(_model(), _data(), guide="flow", num_steps=3, progress=False)  # type: ignore[arg-type]


def test_fits_do_not_share_parameters_or_touch_the_store_and_rng() -> None:
    store = pyro.get_param_store()
    with store.scope():
        sentinel = pyro.param("user_param", torch.tensor(3.0))
        data, model_a, model_b = _data(), _model(0), _model(1)
        rng = torch.get_rng_state()
        first = fit_svi(model_a, data, guide="normal", num_steps=200, lr=0.05, progress=False)
        locs_first = _locs(first)
        second = fit_svi(model_b, data, guide="normal", num_steps=1, lr=1e-6, progress=False)
        assert list(store.keys()) == ["user_param"]
        assert store["user_param"] is sentinel
        assert torch.equal(torch.get_rng_state(), rng)
    # the second fit started from its own student, not from the first fit's parameters
    start = _model(1).initial_values()
    locs_second = _locs(second)
    for name, value in start.items():
        assert torch.allclose(locs_second[name], value, atol=1e-4)
        assert not torch.allclose(locs_first[name], value, atol=1e-2)
    # the first fit still answers with its own parameters after the second one
    assert all(torch.equal(v, locs_first[k]) for k, v in _locs(first).items())
    num_draws = 400
    draws = first.draws(num_draws)
    for name in start:
        error = (draws[name].mean((0, 1)) - locs_first[name]).abs()
        assert (error <= 5 * draws[name].std((0, 1)) / num_draws**0.5).all()


def _locs(result: SVIResult) -> dict[str, torch.Tensor]:
    """``name -> loc`` of an AutoNormal fit (real support: unconstrained = constrained)."""
    prefix, suffix = "locs.", "_unconstrained"
    return {
        key[len(prefix) : -len(suffix)]: value.detach().clone()
        for key, value in result.guide.named_parameters()
        if key.startswith(prefix)
    }


def test_fits_are_reproducible_by_seed() -> None:
    data, options = _data(), {"guide": "normal", "num_steps": 20, "batch_size": 16}
    a = fit_svi(_model(), data, seed=3, progress=False, **options)
    b = fit_svi(_model(), data, seed=3, progress=False, **options)
    c = fit_svi(_model(), data, seed=4, progress=False, **options)
    assert a.elbo == b.elbo != c.elbo


def test_minibatch_loss_is_the_n_over_m_scaled_log_joint() -> None:
    """First step of a delta fit: loss = -log p(D_B, theta_0) with the data rescaled by N/m."""
    data, model = _data(), _model()
    n, m, seed = len(data), 10, 7
    result = fit_svi(
        model, data, guide="delta", num_steps=1, batch_size=m, seed=seed, progress=False
    )
    generator = torch.Generator().manual_seed(seed)
    idx = EpochBatches(n, m, generators=[generator], split="even").next()[0]
    expected = _neg_log_joint(model, data, idx)
    assert result.elbo[0] * n == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(_neg_log_joint(model, data), rel=1e-3)
    # with the full data (batch_size None or >= N) the loss is the full -log joint
    for batch_size in (None, n, 2 * n):
        full = fit_svi(model, data, num_steps=1, batch_size=batch_size, progress=False)
        assert full.elbo[0] * n == pytest.approx(_neg_log_joint(model, data), rel=1e-5)


def test_map_estimate_and_warm_start() -> None:
    data, model = _data(), _model()
    start = model.initial_values()
    result = fit_svi(model, data, guide="delta", num_steps=1, lr=1e-8, progress=False)
    estimate = map_estimate(result)
    assert set(estimate) == set(start)
    for name, value in start.items():
        assert torch.allclose(estimate[name], value, atol=1e-6)  # started at the student
    for name, value in model.initial_values().items():
        assert torch.equal(value, start[name])  # the model's student is not trained
    normal = fit_svi(model, data, guide="normal", num_steps=1, progress=False)
    with pytest.raises(ValueError, match="delta"):
        map_estimate(normal)


def test_point_mass_scores_like_delta_at_its_location() -> None:
    v = torch.randn(4, 3)
    log_density = torch.randn(4)
    delta = pyro.distributions.Delta(v, log_density=log_density, event_dim=1)
    point = PointMass(v, log_density=log_density, event_dim=1)
    assert torch.equal(point.log_prob(v), delta.log_prob(v))
    expanded = v.expand(5, 4, 3)
    assert torch.equal(point.log_prob(expanded), delta.log_prob(expanded))


def test_bad_arguments_are_named() -> None:
    data, model = _data(), _model()
    for options, argument in [
        ({"num_steps": 0}, "num_steps"),
        ({"num_steps": 2, "lr": -1.0}, "lr"),
        ({"num_steps": 2, "batch_size": 0}, "batch_size"),
        ({"num_steps": 2, "init_scale": 0.0}, "init_scale"),
    ]:
        with pytest.raises(ValueError, match=argument):
            fit_svi(model, data, progress=False, **options)
    with pytest.raises(ValueError, match="y"):
        fit_svi(model, DistillationData(data.x), num_steps=2, progress=False)
