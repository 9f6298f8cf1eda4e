"""Tests of the few-shot and zero-shot student subsets (SPEC §6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyro_bkd.data.splits import few_shot_indices, zero_shot_indices

# class sizes 40, 25, 1, 7 in a shuffled order
SIZES = [40, 25, 1, 7]
LABELS = np.random.default_rng(0).permutation(np.repeat([0, 1, 2, 3], SIZES))


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [(0.1, [4, 3, 1, 1]), (0.25, [10, 6, 1, 2]), (0.5, [20, 13, 1, 4]), (1.0, SIZES)],
)
def test_few_shot_keeps_the_rounded_fraction_of_every_class(
    fraction: float, expected: list[int]
) -> None:
    """``max(1, floor(fraction * n_c + 1/2))`` per class, halves rounded up (2.5 -> 3)."""
    indices = few_shot_indices(LABELS, fraction, seed=1)
    assert indices.dtype == torch.int64
    assert torch.equal(indices, indices.sort().values)
    assert len(set(indices.tolist())) == len(indices)
    assert np.bincount(LABELS[indices.numpy()], minlength=4).tolist() == expected


def test_few_shot_is_deterministic_given_the_seed_and_accepts_tensors() -> None:
    first = few_shot_indices(LABELS, 0.3, seed=7)
    assert torch.equal(first, few_shot_indices(torch.from_numpy(LABELS), 0.3, seed=7))
    assert not torch.equal(first, few_shot_indices(LABELS, 0.3, seed=8))
    assert torch.equal(few_shot_indices(LABELS, 1.0), torch.arange(len(LABELS)))


@pytest.mark.parametrize("fraction", [0, -0.1, 1.01, float("nan")])
def test_few_shot_rejects_fraction_outside_zero_one(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        few_shot_indices(LABELS, fraction, seed=0)


def test_zero_shot_removes_exactly_the_omitted_classes() -> None:
    indices = zero_shot_indices(torch.from_numpy(LABELS), [1, 3])
    assert indices.dtype == torch.int64
    expected = np.flatnonzero((LABELS != 1) & (LABELS != 3))
    np.testing.assert_array_equal(indices.numpy(), expected)
    np.testing.assert_array_equal(zero_shot_indices(LABELS, 2).numpy(), np.flatnonzero(LABELS != 2))
    assert torch.equal(zero_shot_indices(LABELS, []), torch.arange(len(LABELS)))
    assert torch.equal(zero_shot_indices(LABELS, torch.tensor([1, 3])), indices)


def test_zero_shot_rejects_bad_classes() -> None:
    with pytest.raises(ValueError, match="removes every example"):
        zero_shot_indices(LABELS, range(4))
    with pytest.raises(ValueError, match=r"must be in \[0, 4\).*\[-1, 4\]"):
        zero_shot_indices(LABELS, [4, 0, -1])
    with pytest.raises(TypeError, match="integer classes"):
        zero_shot_indices(LABELS, [1.5])


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        (np.array([0.0, 1.0]), TypeError, "integer class labels"),
        (np.zeros((2, 2), dtype=int), ValueError, "1-D"),
        (np.array([], dtype=int), ValueError, "non-empty"),
        (np.array([0, -1]), ValueError, ">= 0"),
        ([0, 1], TypeError, "torch.Tensor or numpy array"),
    ],
)
def test_splits_reject_bad_labels(labels: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        few_shot_indices(labels, 0.5, seed=0)
    with pytest.raises(error, match=match):
        zero_shot_indices(labels, [0])
