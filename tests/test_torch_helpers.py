"""pyro_bkd._torch: devices, RNG forking, eval mode and batched logits, one home for all."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pyro_bkd._torch import (
    default_device,
    device_of,
    eval_mode,
    network_logits,
    rng_devices,
    run_device,
    seeded,
)


def test_device_of_reads_parameters_then_buffers_then_defaults_to_cpu() -> None:
    assert device_of(nn.Linear(2, 2)) == torch.device("cpu")
    assert device_of(nn.BatchNorm1d(2, affine=False)) == torch.device("cpu")  # buffers only
    assert device_of(nn.ReLU()) == torch.device("cpu")
    meta = nn.Linear(2, 2, device="meta")
    assert device_of(meta) == torch.device("meta")
    assert run_device(meta, None) == torch.device("meta")
    assert default_device("cpu") == torch.device("cpu")


def test_rng_devices_forks_no_cuda_device_on_cpu_and_the_given_index_on_cuda() -> None:
    assert rng_devices(torch.device("cpu")) == []
    assert rng_devices(torch.device("cuda", 3)) == [3]


def test_seeded_gives_the_seeds_stream_and_restores_the_global_state() -> None:
    torch.manual_seed(123)
    expected_after = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7):
        inside = torch.rand(3)
    assert torch.equal(torch.rand(3), expected_after)  # global stream untouched
    torch.manual_seed(7)
    assert torch.equal(inside, torch.rand(3))


def test_eval_mode_restores_each_submodules_own_mode_and_keeps_chosen_layers_training() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.BatchNorm1d(2))
    net.train()
    net[2].eval()  # a mixed state that module.train(flag) could not restore
    before = [m.training for m in net.modules()]
    with eval_mode(net, keep_training=[net[1]]) as same:
        assert same is net
        assert [m.training for m in net.modules()] == [False, False, True, False]
    assert [m.training for m in net.modules()] == before
    with pytest.raises(RuntimeError), eval_mode(net):
        raise RuntimeError
    assert [m.training for m in net.modules()] == before


def test_network_logits_equal_one_pass_in_eval_mode_whatever_the_batch_size() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)).train()
    x = torch.randn(10, 3)
    with torch.no_grad():
        expected = net.eval()(x)
    net.train()
    for batch_size in (1, 3, 10, 512):
        got = network_logits(net, x, batch_size=batch_size)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        assert not got.requires_grad and got.device.type == "cpu"
    assert net.training
