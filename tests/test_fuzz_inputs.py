"""Property-based test of bad input: generated bad arguments, data files and output paths to
``pyro-bkd fit`` (through :func:`pyro_bkd.cli.main`) and bad arguments to the main API calls.

The property: every bad case is refused before any work with exit status 2 and one line
``pyro-bkd: error: ...`` naming the flag, array or file (the API: an ``InputError``, or the
``ValueError``/``TypeError`` the sampler documents, naming the argument), with no traceback and
no file left behind. The generator is a seeded :class:`random.Random` (no ``hypothesis``), so a
failure reproduces; the counts are printed (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import random
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

import pyro_bkd
from pyro_bkd import BKDModel, DistillationData, InputError, cli
from pyro_bkd.distill import train_student_kd
from pyro_bkd.infer.svi import fit_svi
from pyro_bkd.kd import alpha_from_strength
from pyro_bkd.pipeline.common import LIMITS

SEED = 20261129
N, D, K, M = 40, 3, 3, 12
#: Integer-valued options of ``fit`` (the others are numbers).
COUNTS = ("--num-samples", "--chains", "--warmup", "--thin", "--batch-size", "--warm-epochs",
          "--steps", "--seed", "--threads")  # fmt: skip
NUMBERS = ("--temperature", "--strength", "--prior-scale", "--step-size", "--lr")
BAD_TEXT = ("0", "-1", "-0.5", "nan", "inf", "-inf", "1e300", "1e-300", "abc", "", "1.5",
            "1e12", "99999999999999", "0x10", "1_0000000000", "--", " ")  # fmt: skip
#: A budget that ends in a second should a bad case be accepted by mistake.
QUICK = {"--method": "map", "--steps": "3", "--warm-epochs": "1"}


@dataclass
class Tally:
    """What the bad cases gave."""

    cases: int = 0
    clean: int = 0
    tracebacks: int = 0
    partial_writes: int = 0
    failures: list[str] = field(default_factory=list)

    def report(self) -> str:
        return (
            f"cases {self.cases}, clean errors {self.clean}, tracebacks {self.tracebacks}, "
            f"partial writes {self.partial_writes}"
        )


def _arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A valid tiny ``fit`` input: N=40 examples, 3 features, 3 classes, 12 test inputs."""
    return {
        "x_train": rng.normal(size=(N, D)).astype(np.float32),
        "y_train": rng.integers(0, K, size=N),
        "teacher_logits_train": rng.normal(size=(N, K)).astype(np.float32),
        "x_test": rng.normal(size=(M, D)).astype(np.float32),
        "y_test": rng.integers(0, K, size=M),
    }


def _in_range(flag: str, text: str) -> bool:
    """Whether ``text`` parses as ``flag`` and lies in its limits (a valid value)."""
    try:
        value = int(text) if flag in COUNTS else float(text)
    except ValueError:
        return False
    low, high = LIMITS[flag]
    return math.isfinite(value) and low <= value <= high


def _option_cases(rng: random.Random) -> list[tuple[dict[str, str], str]]:
    """Out-of-range or unparsable values of the numeric options, and bad names."""
    cases = []
    for flag in (*COUNTS, *NUMBERS):
        for text in BAD_TEXT:
            if not _in_range(flag, text):
                cases.append(({flag: text}, flag))
        beyond = LIMITS[flag][1] * rng.uniform(1.5, 1e6)
        cases.append(({flag: str(int(beyond) if flag in COUNTS else beyond)}, flag))
    for text in ("mlp:0", "mlp:-3", "mlp:100000000", "mlp:8,x", "small_cnn:x", "lenet", "mlp:",
                 "transformer", "linear:4", ":", "mlp:1e3"):  # fmt: skip
        cases.append(({"--student": text}, "student"))
    for text in ("cpu:5", "tpu", "cuda:99", "meta", "cpu:-1", "gpu"):
        cases.append(({"--device": text}, "device"))
    for text in ("mcmc", "HMC", "", "sgld2"):
        cases.append(({"--method": text}, "--method"))
    cases.append(({"--dropout": "1.5", "--method": "mc-dropout"}, "--dropout"))
    cases.append(({"--num-samples": "1000", "--method": "ensemble"}, "--num-samples"))
    cases.append(({"--num-samples": "1000000", "--chains": "1024", "--method": "sgld"}, "GiB"))
    rng.shuffle(cases)
    return cases


def _data_cases(rng: random.Random, arrays: dict[str, np.ndarray]) -> list[tuple[dict, str]]:
    """``(changed arrays, expected word)``: NaN/inf/overflow, wrong shapes and labels."""
    cases: list[tuple[dict, str]] = []
    for name in ("x_train", "x_test", "teacher_logits_train"):
        for bad in (np.nan, np.inf, -np.inf, 1e39):
            array = arrays[name].astype(np.float64)
            array[rng.randrange(array.shape[0]), rng.randrange(array.shape[1])] = bad
            cases.append(({name: array}, name))
        cases.append(({name: None}, name))
        cases.append(({name: arrays[name][:, :1] if name != "x_test" else arrays[name][:, :2]},
                      name if name != "x_train" else "shape"))  # fmt: skip
        cases.append(({name: np.array(["a"] * arrays[name].shape[0])}, name))
    cases += [
        ({"y_train": np.full(N, K)}, "y_train"),
        ({"y_train": np.full(N, -1)}, "y_train"),
        ({"y_train": np.full(N, 0.5)}, "y_train"),
        ({"y_train": np.zeros(N - 1, dtype=np.int64)}, "y_train"),
        ({"y_test": np.full(M, 7)}, "y_test"),
        ({"teacher_logits_train": np.zeros((N, 1), dtype=np.float32)}, "teacher_logits_train"),
        ({"x_train": np.zeros((0, D), dtype=np.float32)}, "x_train"),
        ({"x_train": np.zeros(N, dtype=np.float32)}, "x_train"),
        ({"p_test": np.full((M, K), 0.5)}, "p_test"),
        ({"teacher_logits_test": np.zeros((M, K + 1))}, "teacher_logits_test"),
    ]
    return cases


def _file_damages(rng: random.Random) -> list[Callable[[bytes], bytes]]:
    """Ways to break the bytes of a valid (compressed) ``.npz`` file."""

    def truncate(data: bytes) -> bytes:
        return data[: rng.randrange(1, len(data) - 1)]

    def flip(data: bytes) -> bytes:
        raw = bytearray(data)
        for _ in range(8):
            position = rng.randrange(40, len(raw) - 40)
            raw[position] ^= 0xFF
        return bytes(raw)

    def garbage(data: bytes) -> bytes:
        return bytes(rng.randrange(256) for _ in range(len(data)))

    return [truncate, flip, garbage, lambda _: b"", lambda _: b"not an npz\n"]


def _out_cases(tmp: Path) -> list[tuple[str, str]]:
    """``(--out, expected word)``: paths that cannot become an output folder."""
    a_file = tmp / "a_file"
    a_file.write_text("x")
    dangling = tmp / "dangling"
    if not dangling.is_symlink():
        dangling.symlink_to(tmp / "missing-target")
    return [
        ("", "--out"),
        ("/", "--out"),
        (str(a_file), "--out"),
        (str(a_file / "below"), "--out"),
        (str(dangling), "--out"),
        (str(tmp / ("n" * 300)), "--out"),
        (str(tmp / "ok" / ("m" * 300) / "x"), "--out"),
    ]


def _run_cli(argv: list[str]) -> tuple[int | None, str, str | None]:
    """``(exit status, stderr, traceback or None)`` of ``cli.main(argv)``."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = cli.main(argv)
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else None
        except Exception:  # a bug: the traceback is the finding
            return None, err.getvalue(), traceback.format_exc()
    return status, err.getvalue(), None


def _leftovers(folder: Path, before: set[str]) -> list[str]:
    return sorted({p.name for p in folder.iterdir()} - before)


def _check_case(tally: Tally, argv: list[str], expected: str, out: Path, scratch: Path) -> None:
    """Run one bad case and count what it gave."""
    tally.cases += 1
    before = {p.name for p in scratch.iterdir()}
    status, err, trace = _run_cli(argv)
    lines = err.strip().splitlines()
    left = _leftovers(scratch, before) + ([out.name] if out.exists() and out != scratch else [])
    if trace is not None or "Traceback" in err:
        tally.tracebacks += 1
        tally.failures.append(f"traceback {argv}: {trace or err}")
    elif left:
        tally.partial_writes += 1
        tally.failures.append(f"left {left}: {argv}")
    elif (
        status == 2
        and len(lines) == 1
        and lines[0].startswith("pyro-bkd: error: ")
        and expected in lines[0]
    ):
        tally.clean += 1
    else:
        tally.failures.append(f"status {status}, stderr {err!r}, expected {expected!r}: {argv}")


def _fit_argv(data: Path, out: str, options: dict[str, str]) -> list[str]:
    merged = {"--data": str(data), "--out": out, **QUICK, **options}
    return ["fit", *(item for pair in merged.items() for item in pair), "-q"]


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    return _arrays(np.random.default_rng(SEED))


def test_fit_refuses_generated_bad_input(arrays: dict, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    valid = tmp_path / "valid.npz"
    np.savez_compressed(valid, **arrays)
    tally = Tally()
    out = scratch / "out"

    for options, expected in _option_cases(rng):
        _check_case(tally, _fit_argv(valid, str(out), options), expected, out, scratch)

    for i, (change, expected) in enumerate(_data_cases(rng, arrays)):
        path = tmp_path / f"data{i}.npz"
        np.savez(path, **{k: v for k, v in {**arrays, **change}.items() if v is not None})
        _check_case(tally, _fit_argv(path, str(out), {}), expected, out, scratch)

    data = valid.read_bytes()
    for i in range(30):
        damage = _file_damages(rng)[i % 5]
        path = tmp_path / f"damaged{i}.npz"
        path.write_bytes(damage(data))
        _check_case(tally, _fit_argv(path, str(out), {}), path.name, out, scratch)
    for missing in (tmp_path / "missing.npz", tmp_path, scratch / "a_dir"):
        _check_case(tally, _fit_argv(missing, str(out), {}), missing.name, out, scratch)

    for target, expected in _out_cases(tmp_path):
        _check_case(tally, _fit_argv(valid, target, {}), expected, scratch, scratch)

    print(f"\nfuzz fit: {tally.report()}")
    assert not tally.failures, "\n".join(tally.failures[:10])
    assert tally.cases >= 200 and tally.clean == tally.cases


# --------------------------------------------------------------------------- API


def _api_setup() -> tuple[BKDModel, DistillationData]:
    torch.manual_seed(0)
    data = DistillationData(torch.randn(N, D), torch.randint(0, K, (N,)), torch.randn(N, K))
    return BKDModel(torch.nn.Linear(D, K), 4.0, 1.0, 1.0), data


def _bad_values(rng: random.Random) -> list[object]:
    values: list[object] = [0, -1, -0.5, math.nan, math.inf, -math.inf, "1", None, True, 1.5]
    return values + [rng.uniform(-1e6, -1e-6) for _ in range(3)]


#: Arguments that take an int; those where 0 is valid; those where ``None`` means a default.
INTEGER_ARGS = {"epochs", "batch_size", "num_steps", "num_samples", "num_chains", "thin", "seed"}
ZERO_VALID = {"strength", "alpha", "seed"}
NONE_VALID = {"prior_scale", "thin", "step_size"}


def _valid(name: str, value: object) -> bool:
    """Whether ``value`` is a valid ``name`` after all (the bad pool is shared)."""
    if value is None:
        return name in NONE_VALID
    if value == 0 and not isinstance(value, bool):
        return name in ZERO_VALID
    return value == 1.5 and name not in INTEGER_ARGS and name != "alpha"


def _api_cases(rng: random.Random) -> list[tuple[str, Callable[[], object]]]:
    """``(argument name, call)`` pairs, each call given one bad argument."""
    model, data = _api_setup()
    x, y, t = data.x, data.y, data.teacher_logits

    def bkd(options: dict) -> object:
        return BKDModel(torch.nn.Linear(D, K), **options)

    def kd(options: dict) -> object:
        defaults = {"epochs": 1, "lr": 0.01, "progress": False}
        return train_student_kd(torch.nn.Linear(D, K), x, y, t, **{**defaults, **options})

    def svi(options: dict) -> object:
        return fit_svi(model, data, **{"num_steps": 2, "progress": False, **options})

    def mcmc(options: dict) -> object:
        defaults = {"num_samples": 2, "warmup_steps": 2, "progress": False}
        return pyro_bkd.sample(model, data, **{**defaults, **options})

    calls = {
        bkd: ("temperature", "prior_scale", "strength"),
        kd: ("epochs", "batch_size", "lr", "temperature", "alpha"),
        svi: ("num_steps", "lr"),
        mcmc: ("num_samples", "num_chains", "thin", "step_size", "seed"),
    }
    cases: list[tuple[str, Callable[[], object]]] = []
    for value in _bad_values(rng):
        for call, names in calls.items():
            for name in names:
                if not _valid(name, value):
                    cases.append((name, lambda c=call, o={name: value}: c(o)))
    for bad in (math.nan, math.inf, 1e39):
        broken = x.double().clone()
        broken[rng.randrange(N), rng.randrange(D)] = bad
        cases.append(("x", lambda b=broken: DistillationData(b, y, t)))
        cases.append(
            (
                "x",
                lambda b=broken: train_student_kd(
                    torch.nn.Linear(D, K).double(),
                    b,
                    y,
                    t.double(),
                    epochs=1,
                    lr=0.01,
                    progress=False,
                ),
            )
        )
        logits = t.double().clone()
        logits[rng.randrange(N), rng.randrange(K)] = bad
        cases.append(("teacher_logits", lambda b=logits: DistillationData(x, y, b)))
        cases.append(("x", lambda b=broken: model.check_data(b.float(), y, t)))
    cases += [
        ("y", lambda: DistillationData(x, y.float(), t)),
        ("y", lambda: DistillationData(x, torch.full((N,), K), t)),
        ("teacher_logits", lambda: DistillationData(x, y, t[:, :1])),
        ("x", lambda: DistillationData(torch.zeros(0, D))),
        ("x", lambda: DistillationData(np.zeros((N, D)))),  # type: ignore[arg-type]
        ("student", lambda: BKDModel("linear")),  # type: ignore[arg-type]
        ("strength", lambda: alpha_from_strength(1e300, 4.0)),
        ("strength", lambda: alpha_from_strength(1e20, 0.01)),
    ]
    return cases


def test_api_refuses_generated_bad_arguments() -> None:
    tally = Tally()
    for name, call in _api_cases(random.Random(SEED)):
        tally.cases += 1
        try:
            call()
        except (ValueError, TypeError) as error:
            if name in str(error):
                tally.clean += 1
            else:
                tally.failures.append(f"{name}: {type(error).__name__}: {error}")
        except Exception:
            tally.tracebacks += 1
            tally.failures.append(f"{name}: {traceback.format_exc()}")
        else:
            tally.failures.append(f"{name}: accepted")
    print(f"\nfuzz API: {tally.report()}")
    assert not tally.failures, "\n".join(tally.failures[:10])
    assert tally.cases >= 200


def test_input_error_is_the_one_type_of_the_boundary() -> None:
    with pytest.raises(InputError, match="temperature"):
        BKDModel(torch.nn.Linear(2, 2), temperature=-1.0)
    with pytest.raises(InputError, match="x must be finite"):
        DistillationData(torch.tensor([[math.nan]]))
    with pytest.raises(TypeError):  # InputTypeError: both an InputError and a TypeError
        BKDModel(torch.nn.Linear(2, 2), temperature="4")


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize(
    ("options", "expected"),
    [({"--out": ""}, "--out"), ({"--num-samples": "1000000000000"}, "--num-samples")],
)
def test_executable_refuses_bad_input(
    options: dict[str, str], expected: str, arrays: dict, tmp_path: Path
) -> None:
    valid = tmp_path / "valid.npz"
    np.savez(valid, **arrays)
    argv = _fit_argv(valid, str(tmp_path / "out"), options)
    done = subprocess.run(
        [sys.executable, "-m", "pyro_bkd.cli", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and expected in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["valid.npz"]
