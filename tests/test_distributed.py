"""Chains and data split over processes with torch.distributed, launched the way users launch
it: ``torchrun --nproc_per_node=2 -m pyro_bkd fit ...`` (gloo, loopback, one thread each).

- chain-parallel draws are bit-identical to one process running all chains with the same
  seed (every chain has its own random stream, the pooled warm-up statistics are gathered);
- a distributed run resumed from its per-rank checkpoints and extended to more draws equals
  one uninterrupted run of that length;
- data-parallel draws equal a one-process run with the same global minibatches up to the
  order of the float sums (tolerance below);
- a rank that raises stops the launcher with a non-zero status and its message, and no output
  folder is left.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from pyro_bkd.data.synthetic import oracle_teacher_logits, synthetic

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch built without torch.distributed"
)
WORKER = Path(__file__).with_name("distributed_worker.py")
#: A small run: KD warm start, then 4 SGHMC chains (full batch: N = 300 < 5000).
FIT = [
    "--student", "mlp:8", "--chains", "4", "--warmup", "60", "--num-samples", "12",
    "--thin", "3", "--warm-epochs", "3", "--seed", "5", "--quiet",
]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _run(args: list[str], processes: int = 0) -> subprocess.CompletedProcess[str]:
    """``python -m pyro_bkd ...`` in one process, or under torchrun with ``processes``."""
    launcher = [sys.executable]
    if processes:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return subprocess.run(
        [*launcher, *args], capture_output=True, text=True, timeout=240, env=_env()
    )


def _fit(npz: Path, out: Path, *extra: str, processes: int = 0) -> None:
    done = _run(["-m", "pyro_bkd", "fit", "--data", str(npz), "--out", str(out), *FIT, *extra],
                processes)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def _draws(out: Path) -> dict[str, np.ndarray]:
    """Class-probability draws and sample stats of a fit's ``posterior.nc``."""
    groups = {}
    for group in ("predictions", "sample_stats"):
        with xr.open_dataset(out / "posterior.nc", group=group) as dataset:
            groups.update({f"{group}/{k}": v.values for k, v in dataset.data_vars.items()})
    return groups


@pytest.fixture(scope="module")
def npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = synthetic("linear-5class", n=400, seed=0, dim=3)
    path = tmp_path_factory.mktemp("data") / "problem.npz"
    np.savez(
        path,
        x_train=data.x_train.numpy(),
        y_train=data.y_train.numpy(),
        teacher_logits_train=oracle_teacher_logits(data.p_train, 0.3, seed=1).numpy(),
        x_test=data.x_test.numpy()[:20],
        y_test=data.y_test.numpy()[:20],
    )
    return path


@pytest.fixture(scope="module")
def one_process(npz: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("single") / "fit"
    _fit(npz, out, "--distributed", "off")
    return _draws(out)


def test_chain_parallel_draws_equal_one_process_bit_for_bit(npz, one_process, tmp_path):
    _fit(npz, tmp_path / "split", processes=2)
    split = _draws(tmp_path / "split")
    assert split.keys() == one_process.keys()
    for name, values in one_process.items():
        np.testing.assert_array_equal(split[name], values, err_msg=name)


def test_resumed_and_extended_distributed_run_equals_one_long_run(npz, one_process, tmp_path):
    """6 draws with per-rank checkpoints, then the same command with 12: the checkpoints are
    extended and the result is the uninterrupted 12-draw run's (which equals one process's)."""
    checkpoint = tmp_path / "chains.ckpt"
    short = [*FIT, "--checkpoint", str(checkpoint)]
    short[short.index("--num-samples") + 1] = "6"
    first = _run(["-m", "pyro_bkd", "fit", "--data", str(npz), "--out", str(tmp_path / "a"),
                  *short], 2)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("chains.ckpt*")) == [
        "chains.ckpt.rank0-of-2",
        "chains.ckpt.rank1-of-2",
    ]
    _fit(npz, tmp_path / "b", "--checkpoint", str(checkpoint), processes=2)
    extended = _draws(tmp_path / "b")
    for name, values in one_process.items():
        np.testing.assert_array_equal(extended[name], values, err_msg=name)


def test_data_parallel_fit_equals_one_process_to_float_tolerance(npz, one_process, tmp_path):
    """Full-batch SGHMC with the data split: each rank sums its half of the log likelihood
    and the halves are all-reduced, so ``U`` and its gradient differ from one process's by
    float rounding (~1e-7 relative) only. Over the 96 steps the rounding grows (measured:
    4.9e-6 on class probabilities, 2.3e-6 relative on lp), so the bounds 1e-4 and 1e-5 leave
    a 20x and 4x margin; a wrong shard sum or a prior added twice moves lp by >= 1e-3."""
    _fit(npz, tmp_path / "data", "--distributed", "data", processes=2)
    split = _draws(tmp_path / "data")
    probs = "predictions/probs"
    np.testing.assert_allclose(split[probs], one_process[probs], atol=1e-4)
    np.testing.assert_allclose(split["sample_stats/lp"], one_process["sample_stats/lp"], rtol=1e-5)


def test_data_parallel_minibatches_equal_one_process(tmp_path):
    """SGLD on minibatches of 32 with the data split: every rank draws the same global
    minibatch from the chains' streams and sums the rows it holds (padded with weight-0
    rows), so the draws are a one-process run's with the same minibatches, up to rounding
    (1e-4 on class probabilities after 120 steps, where MC noise between runs with different
    minibatches would be ~1e-1)."""
    single, split = tmp_path / "single.pt", tmp_path / "split.pt"
    for out, processes, mode in ((single, 0, "off"), (split, 2, "data")):
        done = _run([str(WORKER), mode, str(out)], processes)
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = torch.load(single), torch.load(split)
    torch.testing.assert_close(b["probs"], a["probs"], atol=1e-4, rtol=0)
    assert a["split"] == {"mode": "single", "world_size": 1}
    assert b["split"] == {  # N = 301 over 2 ranks; each holds about m n_r / N of a minibatch
        "mode": "data",
        "world_size": 2,
        "rows_per_rank": [151, 150],
        "global_batch_size": 32,
        "batch_size_per_rank": [16.05, 15.95],
    }


def test_a_failing_rank_stops_the_run_with_its_message_and_no_output(npz, tmp_path):
    """Rank 1's checkpoint is corrupt: rank 1 stops with its input error, torchrun stops
    rank 0 (waiting in a collective) and exits non-zero; the output folder is never made."""
    checkpoint = tmp_path / "chains.ckpt"
    Path(f"{checkpoint}.rank1-of-2").write_bytes(b"not a checkpoint")
    out = tmp_path / "out"
    done = _run(["-m", "pyro_bkd", "fit", "--data", str(npz), "--out", str(out), *FIT,
                 "--checkpoint", str(checkpoint)], 2)  # fmt: skip
    assert done.returncode != 0
    assert "cannot be read as a pyro-bkd checkpoint" in done.stderr + done.stdout
    assert not out.exists()
    assert not list(tmp_path.glob(".out*"))
