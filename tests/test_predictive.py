"""Tests of the vectorised predictive ``q^(s)(x) = softmax(f(x; theta_s) / T)`` (SPEC §5)."""

from __future__ import annotations

import copy
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoDelta, AutoNormal
from torch import nn

from pyro_bkd.predictive import guide_draws, predict_probs, probs_from_guide

NUM_CHAINS, NUM_DRAWS, NUM_INPUTS, NUM_CLASSES = 2, 5, 7, 4


def make_student() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, NUM_CLASSES)).double()


def random_draws(student: nn.Module, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        name: torch.randn(NUM_CHAINS, NUM_DRAWS, *p.shape, generator=generator, dtype=p.dtype)
        for name, p in student.named_parameters()
        if names is None or name in names
    }


def loop_probs(
    student: nn.Module, draws: dict[str, torch.Tensor], x: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """The reference: set the module's parameters to each draw in turn and run it."""
    net = copy.deepcopy(student).eval()
    params = dict(net.named_parameters())
    out = torch.empty(NUM_CHAINS, NUM_DRAWS, x.shape[0], NUM_CLASSES, dtype=torch.float64)
    with torch.no_grad():
        for c in range(NUM_CHAINS):
            for d in range(NUM_DRAWS):
                for name, value in draws.items():
                    params[name].copy_(value[c, d])
                out[c, d] = torch.softmax(net(x) / temperature, dim=-1)
    return out


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(
        NUM_INPUTS, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_vectorised_equals_a_loop_over_draws(x: torch.Tensor, temperature: float) -> None:
    student = make_student()
    draws = random_draws(student)
    probs = predict_probs(student, draws, x, temperature=temperature, dtype=torch.float64)
    assert probs.shape == (NUM_CHAINS, NUM_DRAWS, NUM_INPUTS, NUM_CLASSES)
    torch.testing.assert_close(
        probs, loop_probs(student, draws, x, temperature), rtol=0, atol=1e-10
    )


def test_chunk_sizes_do_not_change_the_result(x: torch.Tensor) -> None:
    student = make_student()
    draws = random_draws(student)
    whole = predict_probs(student, draws, x, dtype=torch.float64)
    for draw_chunk, input_chunk in [(1, None), (3, 2), (64, 1), (4, 100)]:
        chunked = predict_probs(
            student, draws, x, draw_chunk=draw_chunk, input_chunk=input_chunk, dtype=torch.float64
        )
        torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-12)


def test_result_is_float32_on_cpu_by_default_and_rows_sum_to_one(x: torch.Tensor) -> None:
    student = make_student()
    probs = predict_probs(student, random_draws(student), x)
    assert probs.dtype == torch.float32 and probs.device.type == "cpu"
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))


def test_missing_names_keep_the_modules_current_values(x: torch.Tensor) -> None:
    student = make_student()
    draws = random_draws(student, names=["2.weight"])
    probs = predict_probs(student, draws, x, dtype=torch.float64)
    torch.testing.assert_close(probs, loop_probs(student, draws, x), rtol=0, atol=1e-10)
    # the draws vary only the last layer's weight, so the draws' probabilities differ
    assert not torch.allclose(probs[0, 0], probs[0, 1])


def test_draws_are_cast_to_the_parameters_dtype(x: torch.Tensor) -> None:
    student = make_student()
    draws = random_draws(student)
    as_float32 = {name: value.float() for name, value in draws.items()}
    probs = predict_probs(student, as_float32, x, dtype=torch.float64)
    expected = loop_probs(student, {n: v.double() for n, v in as_float32.items()}, x)
    torch.testing.assert_close(probs, expected, rtol=0, atol=1e-10)


def test_runs_in_eval_mode_and_restores_every_submodules_mode() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(
        nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, NUM_CLASSES)
    ).double()
    student[1].running_mean.fill_(0.3)
    student[1].running_var.fill_(2.0)
    student.train()
    student[2].eval()  # a mixed state must come back as it was
    modes = [m.training for m in student.modules()]
    x = torch.randn(NUM_INPUTS, 3, dtype=torch.float64)
    draws = random_draws(student, names=["0.weight", "3.weight"])
    probs = predict_probs(student, draws, x, dtype=torch.float64)
    assert [m.training for m in student.modules()] == modes
    # loop_probs runs in eval mode: running statistics, no dropout
    torch.testing.assert_close(probs, loop_probs(student, draws, x), rtol=0, atol=1e-10)


def test_parameters_are_left_untouched(x: torch.Tensor) -> None:
    student = make_student()
    before = copy.deepcopy(student.state_dict())
    predict_probs(student, random_draws(student), x)
    for name, value in student.state_dict().items():
        assert torch.equal(value, before[name])


def test_unknown_names_are_rejected_with_the_valid_names(x: torch.Tensor) -> None:
    student = make_student()
    draws = {**random_draws(student), "student.0.weight": torch.zeros(NUM_CHAINS, NUM_DRAWS, 6, 3)}
    with pytest.raises(ValueError, match=r"student\.0\.weight.*valid names.*'0\.weight'"):
        predict_probs(student, draws, x)


@pytest.mark.parametrize(
    ("draws", "message"),
    [
        ({}, "draws is empty"),
        ({"0.bias": torch.zeros(NUM_CHAINS, NUM_DRAWS, 5)}, r"must have shape \[chain, draw, 6\]"),
        ({"0.bias": torch.zeros(6)}, r"must have shape \[chain, draw, 6\]"),
        (
            {"0.bias": torch.zeros(2, 3, 6), "2.bias": torch.zeros(2, 4, NUM_CLASSES)},
            "disagree on",
        ),
        ({"0.bias": torch.zeros(0, 3, 6)}, "hold no draws"),
    ],
)
def test_bad_draws_are_rejected(x: torch.Tensor, draws: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        predict_probs(make_student(), draws, x)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"draw_chunk": 0}, "draw_chunk must be > 0"),
        ({"input_chunk": 0}, "input_chunk must be > 0"),
        ({"temperature": 0.0}, "temperature must be > 0"),
    ],
)
def test_bad_options_are_rejected(x: torch.Tensor, options: dict, message: str) -> None:
    student = make_student()
    with pytest.raises(ValueError, match=message):
        predict_probs(student, random_draws(student), x, **options)


def test_empty_inputs_are_rejected() -> None:
    student = make_student()
    with pytest.raises(ValueError, match="N >= 1"):
        predict_probs(student, random_draws(student), torch.zeros(0, 3, dtype=torch.float64))


# --- draws from a Pyro guide ----------------------------------------------------------------


def bkd_style_model(student: nn.Module):
    """A model whose latent sites are the student's parameter names, as in BKDModel."""

    def model(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        params = {
            name: pyro.sample(name, dist.Normal(0.0, 1.0).expand(p.shape).to_event(p.dim()))
            for name, p in student.named_parameters()
        }
        logits = torch.func.functional_call(student, params, (x,))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Categorical(logits=logits), obs=y)

    return model


@pytest.fixture
def training_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(30, 3, generator=generator)
    return x, torch.randint(0, NUM_CLASSES, (30,), generator=generator)


@pytest.fixture
def student32() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, NUM_CLASSES))


def test_auto_delta_gives_identical_draws_at_its_point(student32, training_data) -> None:
    pyro.clear_param_store()
    guide = AutoDelta(bkd_style_model(student32))
    draws = guide_draws(guide, 6, *training_data)
    median = guide.median(*training_data)
    assert set(draws) == {name for name, _ in student32.named_parameters()}
    for name, value in draws.items():
        assert value.shape == (1, 6, *median[name].shape)
        assert torch.equal(value, median[name].expand_as(value))


def test_probs_from_guide_shape_and_agreement_with_predict_probs(student32, training_data) -> None:
    pyro.clear_param_store()
    guide = AutoDelta(bkd_style_model(student32))
    x_test = torch.randn(9, 3)
    probs = probs_from_guide(student32, guide, x_test, 6, *training_data, draw_chunk=4)
    assert probs.shape == (1, 6, 9, NUM_CLASSES)
    point = {name: v.reshape(1, 1, *v.shape) for name, v in guide.median(*training_data).items()}
    torch.testing.assert_close(probs, predict_probs(student32, point, x_test).expand_as(probs))


def test_auto_normal_is_sampled_vectorised_with_its_mean_and_scale(
    student32, training_data
) -> None:
    """4,000 draws: the mean is within 5 standard errors of the loc, the sd near init_scale."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(bkd_style_model(student32), init_scale=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to the loop
        draws = guide_draws(guide, 4000, *training_data)
    median = guide.median(*training_data)
    for name, value in draws.items():
        assert value.shape == (1, 4000, *median[name].shape)
        sample = value[0]
        assert (sample.mean(0) - median[name]).abs().max() < 5 * 0.1 / 4000**0.5
        torch.testing.assert_close(
            sample.std(0), torch.full_like(median[name], 0.1), atol=0.01, rtol=0
        )


def one_particle_guide(student: nn.Module):
    """A guide written for one draw at a time: its ``reshape`` breaks under a particle plate."""

    def guide(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        for name, p in student.named_parameters():
            flat = pyro.sample(
                f"{name}_flat", dist.Normal(0.0, 1.0).expand([p.numel()]).to_event(1)
            )
            pyro.sample(name, dist.Delta(flat.reshape(p.shape), event_dim=p.dim()))

    return guide


def test_a_guide_that_cannot_be_vectorised_is_sampled_in_a_loop(student32, training_data) -> None:
    guide = one_particle_guide(student32)
    with pytest.warns(UserWarning, match="sampling in a loop"):
        draws = guide_draws(guide, 5, *training_data)
    looped = guide_draws(guide, 5, *training_data, vectorize=False)
    for name, p in student32.named_parameters():
        for sample in (draws, looped):
            assert sample[name].shape == (1, 5, *p.shape)
            assert not torch.equal(sample[name][0, 0], sample[name][0, 1])
        assert draws[f"{name}_flat"].shape == (1, 5, p.numel())


def test_probs_from_guide_ignores_sites_that_are_not_parameters(student32, training_data) -> None:
    guide = one_particle_guide(student32)
    with pytest.warns(UserWarning, match="sampling in a loop"):
        probs = probs_from_guide(student32, guide, training_data[0], 5, *training_data)
    assert probs.shape == (1, 5, 30, NUM_CLASSES)


def test_probs_from_guide_rejects_a_guide_without_parameter_sites(training_data) -> None:
    pyro.clear_param_store()
    student = nn.Sequential(nn.Linear(3, NUM_CLASSES))
    guide = AutoDelta(bkd_style_model(nn.Sequential(nn.Sequential(nn.Linear(3, NUM_CLASSES)))))
    with pytest.raises(ValueError, match=r"no site of the guide.*'0\.0\.weight'.*'0\.weight'"):
        probs_from_guide(student, guide, training_data[0], 2, *training_data)
