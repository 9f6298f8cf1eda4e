"""pipeline.methods.REGISTRY: one MethodSpec per method, read by fit, compare and the CLI."""

from __future__ import annotations

import pytest

from pyro_bkd._checks import InputError
from pyro_bkd.cli import build_parser
from pyro_bkd.pipeline.compare import COMPARE_METHODS, POINT_METHODS
from pyro_bkd.pipeline.fit import FitOptions
from pyro_bkd.pipeline.methods import METHODS, NUTS_MAX_WEIGHTS, REGISTRY


def test_the_registry_names_every_method_once_in_the_comparisons_order() -> None:
    assert tuple(REGISTRY) == METHODS
    assert (*POINT_METHODS, *METHODS) == COMPARE_METHODS
    assert all(spec.name == name for name, spec in REGISTRY.items())
    chains = {m for m, spec in REGISTRY.items() if spec.markov_chain}
    assert chains == {"hmc", "sghmc", "sgld", "psgld", "nuts"}
    own = {m for m, spec in REGISTRY.items() if spec.trains_own_student}
    assert own == {"mc-dropout", "ensemble"}


@pytest.mark.parametrize("method", METHODS)
def test_fit_defaults_come_from_the_registry(method: str, tmp_path) -> None:
    opts = FitOptions(data="d.npz", out=str(tmp_path / "o"), method=method).resolved()
    spec = REGISTRY[method].default_budget
    assert opts.num_samples == spec.num_samples
    assert (opts.warmup, opts.thin) == (spec.warmup, spec.thin)
    assert opts.chains == spec.chains


def test_the_size_guard_is_nuts_only_and_names_the_limit() -> None:
    REGISTRY["nuts"].check_size(NUTS_MAX_WEIGHTS)
    with pytest.raises(InputError, match=f"nuts is for small students .at most {NUTS_MAX_WEIGHTS}"):
        REGISTRY["nuts"].check_size(NUTS_MAX_WEIGHTS + 1)
    for name in set(METHODS) - {"nuts"}:
        REGISTRY[name].check_size(10**9)


def test_cli_help_lists_the_registrys_defaults() -> None:
    fit = build_parser()._subparsers._group_actions[0].choices["fit"]  # type: ignore[union-attr]
    helps = {a.dest: a.help for a in fit._actions}
    assert "map: 1" in helps["num_samples"] and "ensemble: 5" in helps["num_samples"]
    assert "sghmc: 16000" in helps["warmup"] and "nuts: 2" in helps["chains"]
