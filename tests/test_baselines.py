"""MC dropout and deep ensembles (outputs of docs/spec.md §5): layer surgery, the exact law of
the dropout draws, member independence, and ``pyro-bkd fit --method mc-dropout|ensemble``
end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pyro_bkd import cli, export, models
from pyro_bkd.baselines import add_dropout, ensemble_probs, mc_dropout_probs, train_kd_ensemble
from pyro_bkd.distill import train_student_kd
from pyro_bkd.predictive import predict_probs


def test_add_dropout_skips_layers_that_read_the_input() -> None:
    mlp = models.build("mlp", 3, in_features=4, hidden=(5, 6))
    dropped = add_dropout(mlp, 0.3, torch.randn(2, 4))
    assert isinstance(dropped.fc1, nn.Linear)  # reads the (flattened) input: left alone
    for name in ("fc2", "out"):
        layer = getattr(dropped, name)
        assert isinstance(layer[0], nn.Dropout) and layer[0].p == 0.3
        assert isinstance(layer[1], nn.Linear)
    assert "fc2.1.weight" in dict(dropped.named_parameters())
    # The original is untouched and the copy computes the same function in eval mode.
    assert isinstance(mlp.fc2, nn.Linear)
    x = torch.randn(7, 4)
    torch.testing.assert_close(dropped.eval()(x), mlp.eval()(x))


def test_add_dropout_on_a_cnn_and_on_softmax_regression() -> None:
    cnn = models.build("small_cnn", 10, in_channels=1, width=2)
    dropped = add_dropout(cnn, 0.5, torch.randn(2, 1, 28, 28))
    # Both classifier layers read hidden features (the first one a flattened feature map).
    assert [type(m[0]) for m in (dropped.classifier[1], dropped.classifier[3])] == [
        nn.Dropout,
        nn.Dropout,
    ]
    linear = models.build("linear", 3, in_features=4)
    assert isinstance(add_dropout(linear, 0.5, torch.randn(2, 4)).out[0], nn.Dropout)


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 1.5])
def test_add_dropout_rejects_a_rate_outside_0_1(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        add_dropout(models.build("mlp", 3, in_features=4, hidden=(5,)), rate, torch.randn(2, 4))


def test_add_dropout_needs_linear_layers() -> None:
    with pytest.raises(ValueError, match=r"nn\.Linear"):
        add_dropout(nn.Sequential(nn.Conv2d(1, 2, 3)), 0.5, torch.randn(2, 1, 5, 5))


def test_mc_dropout_draws_follow_the_exact_bernoulli_law() -> None:
    """Softmax regression with input dropout on one input whose only non-zero feature is 1:
    the logits are ``b`` (feature dropped, probability p) or ``W[:, 0] / (1 - p) + b``, so the
    number of draws equal to ``softmax(b)`` is Binomial(S, p) exactly. With S = 4000 and
    p = 0.3 its sd is sqrt(S p (1 - p)) = 29; we allow 4 sd (two-sided p ~ 6e-5)."""
    torch.manual_seed(0)
    student = add_dropout(models.build("linear", 3, in_features=2), 0.3, torch.randn(2, 2))
    x = torch.tensor([[1.0, 0.0]])
    draws = mc_dropout_probs(student, x, 4000, seed=1)
    assert draws.shape == (1, 4000, 1, 3)
    torch.testing.assert_close(draws.sum(-1), torch.ones(1, 4000, 1))
    bias = student.out[1].bias.detach()
    dropped = torch.isclose(draws[0, :, 0], bias.softmax(-1)[None], atol=1e-6).all(-1)
    kept = student.out[1].weight.detach()[:, 0] / 0.7 + bias
    assert torch.isclose(draws[0, ~dropped, 0], kept.softmax(-1)[None], atol=1e-6).all()
    sd = math.sqrt(4000 * 0.3 * 0.7)
    assert abs(int(dropped.sum()) - 1200) < 4 * sd


def test_mc_dropout_is_seeded_keeps_batch_norm_in_eval_and_restores_modes() -> None:
    net = models.build("resnet8", 4, in_channels=1)
    student = add_dropout(net, 0.5, torch.randn(2, 1, 8, 8))
    student.train()
    running = {k: v.clone() for k, v in student.state_dict().items() if "running" in k}
    x = torch.randn(5, 1, 8, 8)
    state = torch.random.get_rng_state()
    first = mc_dropout_probs(student, x, 6, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    torch.testing.assert_close(first, mc_dropout_probs(student, x, 6, seed=3), rtol=0, atol=0)
    assert not torch.equal(first[0, 0], first[0, 1])  # different masks, different draws
    for key, value in running.items():  # batch norm read, never updated
        assert torch.equal(student.state_dict()[key], value)
    assert all(m.training for m in student.modules())


def test_mc_dropout_needs_dropout_layers() -> None:
    with pytest.raises(ValueError, match="add_dropout"):
        mc_dropout_probs(models.build("linear", 3, in_features=2), torch.randn(4, 2), 3)


def test_ensemble_members_are_seeded_kd_students() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(60, 4), torch.randint(0, 3, (60,))
    teacher = torch.randn(60, 3)

    def new_student(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return models.build("mlp", 3, in_features=4, hidden=(8,))

    options = {"epochs": 2, "lr": 1e-2, "progress": False, "batch_size": 16}
    members = train_kd_ensemble(new_student, x, y, teacher, size=3, seed=5, **options)
    # Member m is exactly the KD student of seed 5 + m.
    alone = train_student_kd(new_student(6), x, y, teacher, seed=6, **options).student
    x_test = torch.randn(9, 4)
    probs = ensemble_probs(members, x_test)
    assert probs.shape == (1, 3, 9, 3)
    torch.testing.assert_close(probs[0, 1], alone(x_test).softmax(-1), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(probs[0, 0], probs[0, 2])


def test_ensemble_input_errors() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ensemble_probs([], torch.randn(2, 3))
    with pytest.raises(ValueError, match="size"):
        train_kd_ensemble(lambda s: nn.Linear(2, 2), torch.randn(4, 2), None, None, size=0)
    with pytest.raises(TypeError, match="new_student"):
        train_kd_ensemble(
            lambda s: "net", torch.randn(4, 2), torch.zeros(4).long(), None, size=1, epochs=1, lr=1
        )


@pytest.fixture(scope="module")
def fit_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    logits = np.stack([np.zeros(240), 3 * x[:, 0]], axis=1).astype(np.float32)
    path = tmp_path_factory.mktemp("fit") / "data.npz"
    np.savez(
        path,
        x_train=x[:200],
        y_train=y[:200],
        teacher_logits_train=logits[:200],
        x_test=x[200:],
        y_test=y[200:],
    )
    return path


@pytest.mark.parametrize(("method", "draws"), [("mc-dropout", 200), ("ensemble", 5)])
def test_fit_cli_runs_the_baselines_end_to_end(
    method: str, draws: int, fit_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / method
    argv = ["fit", "--data", str(fit_file), "--out", str(out), "--method", method]
    assert cli.main([*argv, "--student", "mlp:16", "--warm-epochs", "80", "-q"]) == 0
    values = json.loads((out / "metrics.json").read_text())
    assert values["method"] == method and values["draws"] == draws
    assert values["accuracy"] > 0.85  # y = 1{x_0 > 0}: an easy problem
    idata = export.load(out / "posterior.nc")
    assert idata.predictions["probs"].shape == (1, draws, 40, 2)
    assert idata.predictions_constant_data["y_test"].shape == (40,)


def test_fit_cli_baselines_need_training_epochs(
    fit_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fit", "--data", str(fit_file), "--out", str(tmp_path / "x"), "-q"]
    with pytest.raises(SystemExit) as raised:
        cli.main([*argv, "--method", "ensemble", "--warm-epochs", "0"])
    assert raised.value.code == 2
    assert "--warm-epochs must be >= 1 with --method ensemble" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([*argv, "--method", "mc-dropout", "--dropout", "1.5"])
    assert "--dropout must be a probability in (0, 1)" in capsys.readouterr().err


def test_fit_cli_ensemble_keeps_member_weights(fit_file: Path, tmp_path: Path) -> None:
    """With --keep-weights the members are the draws of one chain: running the student on
    them reproduces the stored probabilities."""
    out = tmp_path / "ensemble"
    argv = ["fit", "--data", str(fit_file), "--out", str(out), "--method", "ensemble"]
    assert (
        cli.main([*argv, "--student", "mlp:4", "--warm-epochs", "2", "--keep-weights", "-q"]) == 0
    )
    idata = export.load(out / "posterior.nc")
    student = models.build("mlp", 2, in_features=5, hidden=(4,))
    names = [name for name, _ in student.named_parameters()]
    weights = {name: torch.as_tensor(idata.posterior[name].values) for name in names}
    assert weights["out.weight"].shape == (1, 5, 2, 4)
    x_test = torch.as_tensor(np.load(fit_file)["x_test"])
    recomputed = predict_probs(student, weights, x_test)
    stored = torch.as_tensor(idata.predictions["probs"].values)
    torch.testing.assert_close(recomputed, stored, rtol=0, atol=1e-6)
