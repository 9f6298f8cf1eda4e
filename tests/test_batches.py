"""pyro_bkd.infer.batches.EpochBatches: every index once per pass, per chain, reproducibly."""

from __future__ import annotations

import pytest
import torch

from pyro_bkd._checks import InputError
from pyro_bkd.infer.batches import EpochBatches


def _generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_each_pass_covers_every_index_exactly_once_per_chain() -> None:
    batches = EpochBatches(12, 4, num_chains=3, generators=_generators([1, 2, 3]))
    for _ in range(3):  # three passes
        seen = torch.cat([batches.next() for _ in range(3)], dim=1)
        assert seen.shape == (3, 12)
        for row in seen:
            assert torch.equal(row.sort().values, torch.arange(12))


def test_a_partial_last_batch_is_dropped_and_a_new_permutation_starts() -> None:
    batches = EpochBatches(10, 4, generators=_generators([0]))
    first = torch.cat([batches.next(), batches.next()], dim=1)[0]
    assert first.unique().numel() == 8  # no repeat within a pass
    third = batches.next()[0]  # 2 left over: a fresh pass begins
    assert third.unique().numel() == 4


def test_full_batch_is_none_and_the_streams_decide_the_order() -> None:
    assert EpochBatches(5, None).next() is None
    assert EpochBatches(5, 5).next() is None
    a = EpochBatches(20, 5, 2, generators=_generators([7, 8]))
    b = EpochBatches(20, 5, 2, generators=_generators([7, 8]))
    assert torch.equal(a.next(), b.next())
    c = EpochBatches(20, 5, 2, generators=_generators([7, 9]))
    first, second = a.next(), c.next()
    assert not torch.equal(first[1], second[1])


def test_state_dict_resumes_the_same_sequence() -> None:
    a = EpochBatches(9, 2, generators=_generators([4]))
    a.next()
    state = a.state_dict()
    b = EpochBatches(9, 2, generators=_generators([4]))
    b.load_state_dict(state)
    assert torch.equal(a.next(), b.next())


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(InputError):
        EpochBatches(5, 6)
    with pytest.raises(InputError):
        EpochBatches(5, 0)
    with pytest.raises(InputError, match="one generator per chain"):
        EpochBatches(5, 2, 2, generators=_generators([1]))
