"""pyro_bkd.batches.EpochBatches: every index once per pass, per chain, reproducibly; the
"fixed" cut of the samplers and the "even" cut of the optimisers (KD, SVI, teachers)."""

from __future__ import annotations

import pytest
import torch

from pyro_bkd._checks import InputError
from pyro_bkd.batches import EpochBatches


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
    with pytest.raises(InputError, match="split"):
        EpochBatches(5, 2, split="ragged")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="batch_size"):
        EpochBatches(5, 0, split="even")
    with pytest.raises(InputError, match="needs a batch_size"):
        EpochBatches(5, None, split="even").epoch()


def test_even_passes_cover_every_index_in_near_equal_batches() -> None:
    """N = 10, m = 4: ceil(10/4) = 3 batches of sizes 4, 3, 3 (no tiny last batch)."""
    batches = EpochBatches(10, 4, 2, generators=_generators([5, 6]), split="even")
    for _ in range(2):
        epoch = batches.epoch()
        assert [b.shape for b in epoch] == [(2, 4), (2, 3), (2, 3)]
        for row in torch.cat(epoch, dim=1):
            assert torch.equal(row.sort().values, torch.arange(10))
    # m >= N: one batch of all N, still reshuffled each pass
    (whole,) = EpochBatches(7, 50, generators=_generators([1]), split="even").epoch()
    assert whole.shape == (1, 7) and not torch.equal(whole[0], torch.arange(7))


def test_one_pass_is_torch_randperm_of_the_chains_generator() -> None:
    """The KD and teacher figures rest on this stream: a pass is ``torch.randperm(N)`` from the
    chain's generator (the global CPU RNG without one), cut by ``tensor_split`` (even) or in
    slices of m (fixed)."""
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(3))
    even = EpochBatches(11, 4, generators=_generators([3]), split="even").epoch()
    assert [b[0].tolist() for b in even] == [b.tolist() for b in perm.tensor_split(3)]
    fixed = EpochBatches(11, 4, generators=_generators([3]))
    assert [fixed.next()[0].tolist() for _ in range(2)] == [perm[:4].tolist(), perm[4:8].tolist()]
    torch.manual_seed(9)
    expected = torch.randperm(11)
    torch.manual_seed(9)
    (batch,) = EpochBatches(11, 11, split="even").epoch()
    assert torch.equal(batch[0], expected)


def test_next_walks_the_even_pass_then_starts_another() -> None:
    batches = EpochBatches(5, 2, generators=_generators([2]), split="even")
    sizes = [batches.next().shape[1] for _ in range(6)]
    assert sizes == [2, 2, 1, 2, 2, 1]
