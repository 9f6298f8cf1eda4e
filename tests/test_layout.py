"""pyro_bkd.infer.layout.FlatLayout: flatten and unflatten are inverse, batch dims kept."""

from __future__ import annotations

import pytest
import torch

from pyro_bkd._checks import InputError
from pyro_bkd.infer.layout import FlatLayout


def _params(*batch: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(*batch, 3, 2, generator=g),
        "b": torch.randn(*batch, 2, generator=g),
        "s": torch.randn(size=batch, generator=g),  # a scalar site
    }


def test_layout_reads_names_shapes_and_dim_in_order() -> None:
    layout = FlatLayout.of(_params())
    assert layout.names == ("w", "b", "s")
    assert layout.sizes == (6, 2, 1)
    assert layout.dim == 9


@pytest.mark.parametrize("batch", [(), (4,), (2, 3)])
def test_flatten_then_unflatten_is_the_identity(batch: tuple[int, ...]) -> None:
    layout = FlatLayout.of(_params())
    params = _params(*batch)
    theta = layout.flatten(params)
    assert theta.shape == (*batch, 9)
    back = layout.unflatten(theta)
    assert list(back) == list(layout.names)
    for name, value in params.items():
        assert torch.equal(back[name], value)
    assert torch.equal(layout.flatten(back), theta)
    # the order is the names' order: w's entries first, row-major
    assert torch.equal(theta[..., :6], params["w"].reshape(*batch, 6))


def test_missing_sites_are_named() -> None:
    layout = FlatLayout.of(_params())
    with pytest.raises(InputError, match="'s'"):
        layout.flatten({"w": torch.zeros(3, 2), "b": torch.zeros(2)})
