"""The `models` registry: shapes, parameter counts, functional transforms and bad input."""

from __future__ import annotations

from functools import cache

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from pyro_bkd import models

FEATURE_MODELS = {"mlp", "linear"}
GREY_CAPABLE = {"lenet", "small_cnn"}


@cache
def _net(name: str) -> nn.Module:
    """Each model once, 100 classes, colour input (or 3x32x32 flattened), in eval mode."""
    torch.manual_seed(0)
    if name in FEATURE_MODELS:
        return models.build(name, num_classes=100, in_features=3 * 32 * 32).eval()
    return models.build(name, num_classes=100, in_channels=3).eval()


def _n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_available_lists_every_family() -> None:
    names = models.available()
    assert len(names) == len(set(names)) == 15
    for name in ("mlp", "linear", "lenet", "small_cnn", "resnet8x4", "wrn_40_2", "vgg13"):
        assert name in names


@pytest.mark.parametrize("name", models.available())
def test_output_shape_and_finite(name: str) -> None:
    """Every model maps a batch of 2 colour images to finite [2, K] logits; convolutional
    models also accept 28x28 images (adaptive pooling)."""
    net = _net(name)
    sizes = [32] if name in FEATURE_MODELS else [32, 28]
    for size in sizes:
        with torch.no_grad():
            out = net(torch.randn(2, 3, size, size))
        assert out.shape == (2, 100)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(GREY_CAPABLE))
def test_grey_28x28(name: str) -> None:
    net = models.build(name, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)


def test_mlp_flattens_images_and_takes_hidden() -> None:
    net = models.build("mlp", num_classes=10, in_features=784, hidden=[32, 16, 8])
    widths = [m.out_features for m in net.modules() if isinstance(m, nn.Linear)]
    assert widths == [32, 16, 8, 10]
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    softmax_regression = models.build("linear", 10, in_features=784, in_channels=1)
    assert softmax_regression(torch.randn(2, 784)).shape == (2, 10)


# Counts commonly quoted for these CIFAR-100 nets in the KD literature (CRD / RepDistiller):
# resnet20 0.28M, resnet56 0.86M, resnet32x4 7.4M, wrn_40_2 2.2M, vgg13 9.5M.
@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("resnet20", 0.26e6, 0.29e6),
        ("resnet56", 0.84e6, 0.88e6),
        ("wrn_40_2", 2.1e6, 2.3e6),
        ("resnet32x4", 7.3e6, 7.5e6),
        ("vgg13", 9.3e6, 9.6e6),
    ],
)
def test_parameter_count_matches_published(name: str, low: float, high: float) -> None:
    assert low <= _n_params(_net(name)) <= high


def test_lenet5_has_the_classic_parameter_count() -> None:
    # conv 6@5x5, conv 16@5x5, fc 400-120-84-10: 61,706 parameters.
    assert _n_params(models.build("lenet", num_classes=10, in_channels=1)) == 61_706


def _vmap_matches_loop(base: nn.Module, copies: list[nn.Module], x: torch.Tensor) -> None:
    params, buffers = stack_module_state(copies)

    def call(p: dict, b: dict) -> torch.Tensor:
        return functional_call(base, (p, b), (x,))

    with torch.no_grad():
        batched = vmap(call)(params, buffers)
        looped = torch.stack([copy(x) for copy in copies])
    assert batched.shape == (len(copies), x.shape[0], 100)
    torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-5)


def test_vmap_over_stacked_mlp_parameters_matches_separate_calls() -> None:
    torch.manual_seed(1)
    copies = [models.build("mlp", 100, in_features=20, hidden=(16, 8)).eval() for _ in range(3)]
    x = torch.randn(5, 20)
    _vmap_matches_loop(copies[0], copies, x)
    # the three copies differ, so the check is not vacuous
    assert not torch.allclose(copies[0](x), copies[1](x))


@pytest.mark.parametrize("name", ["lenet", "small_cnn", "resnet8", "wrn_16_2", "vgg8"])
def test_vmap_over_stacked_conv_parameters_in_eval_mode(name: str) -> None:
    torch.manual_seed(2)
    copies = [models.build(name, 100, in_channels=3).eval() for _ in range(3)]
    _vmap_matches_loop(copies[0], copies, torch.randn(2, 3, 32, 32))


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet18'.*resnet20.*wrn_40_2"):
        models.build("resnet18", num_classes=10)


@pytest.mark.parametrize("name", sorted(FEATURE_MODELS))
def test_feature_models_need_in_features(name: str) -> None:
    with pytest.raises(ValueError, match="needs in_features"):
        models.build(name, num_classes=10, in_channels=1)


def test_lenet_needs_in_channels() -> None:
    with pytest.raises(ValueError, match="needs in_channels"):
        models.build("lenet", num_classes=10)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"num_classes": 0}, ValueError, "num_classes must be a positive int, got 0"),
        ({"num_classes": 2.0}, TypeError, "num_classes must be a positive int, got float"),
        ({"num_classes": True}, TypeError, "num_classes must be a positive int, got bool"),
        ({"num_classes": 3, "in_features": -4}, ValueError, "in_features must be a positive"),
        ({"num_classes": 3, "in_features": "784"}, TypeError, "in_features must be a positive"),
        ({"num_classes": 3, "in_features": 4, "hidden": 8}, TypeError, "hidden must be a seq"),
        ({"num_classes": 3, "in_features": 4, "hidden": (8, 0)}, ValueError, "hidden must hold"),
        ({"num_classes": 3, "in_features": 4, "width": 8}, TypeError, "accepted: hidden"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, error: type, pattern: str) -> None:
    kwargs.setdefault("in_features", 4)
    with pytest.raises(error, match=pattern):
        models.build("mlp", **kwargs)


def test_bad_conv_arguments() -> None:
    with pytest.raises(ValueError, match="in_channels must be a positive int, got 0"):
        models.build("resnet20", num_classes=10, in_channels=0)
    with pytest.raises(
        TypeError, match=r"resnet20 got unexpected keyword argument.*accepted: none"
    ):
        models.build("resnet20", num_classes=10, width=2)
    with pytest.raises(ValueError, match="width must be > 0"):
        models.build("small_cnn", num_classes=10, in_channels=1, width=0)
    with pytest.raises(TypeError, match="name must be a str"):
        models.build(None, num_classes=10)  # type: ignore[arg-type]
