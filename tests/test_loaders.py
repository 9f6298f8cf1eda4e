"""Tests of the local data loaders: real files under SHARED_DATA_DIR (the checkout's
../shared/data), and small fakes."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_bkd.data import loaders
from pyro_bkd.data.loaders import (
    DATA_ENV_VAR,
    SHARED_DATA_DIR,
    Dataset,
    add_input_noise,
    load_cifar10_subset,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    read_idx,
    standardize,
)

# class counts and mean pixel values from ../shared/data/*/PROVENANCE.md
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
CIFAR_TRAIN_COUNTS = [396, 366, 420, 384, 422, 393, 414, 385, 407, 413]
CIFAR_TEST_COUNTS = [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]


def needs(*relative: str):
    """Skip unless every file exists under the shared data folder."""
    missing = [name for name in relative if not (SHARED_DATA_DIR / name).is_file()]
    return pytest.mark.skipif(bool(missing), reason=f"not in {SHARED_DATA_DIR}: {missing}")


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests choose the folders themselves, whatever the caller's environment says."""
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)


def counts(y: torch.Tensor) -> list[int]:
    return torch.bincount(y, minlength=10).tolist()


def assert_images(x: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert x.shape == shape
    assert x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1


# --- real files --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return load_mnist()


@needs(
    "mnist/train-images-idx3-ubyte.gz",
    "mnist/train-labels-idx1-ubyte.gz",
    "mnist/t10k-images-idx3-ubyte.gz",
    "mnist/t10k-labels-idx1-ubyte.gz",
)
def test_mnist_shapes_ranges_counts_and_mean(mnist: Dataset) -> None:
    assert_images(mnist.x_train, (60000, 1, 28, 28))
    assert_images(mnist.x_test, (10000, 1, 28, 28))
    assert mnist.y_train.dtype == mnist.y_test.dtype == torch.int64
    assert counts(mnist.y_train) == MNIST_TRAIN_COUNTS
    assert counts(mnist.y_test) == MNIST_TEST_COUNTS
    assert mnist.x_train.mean().item() == pytest.approx(0.13066, abs=1e-5)
    assert mnist.x_test.mean().item() == pytest.approx(0.13251, abs=1e-5)
    assert (mnist.name, mnist.num_classes, mnist.class_names[3]) == ("mnist", 10, "3")


@needs("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz")
def test_mnist_flatten_and_test_only() -> None:
    data = load_mnist(flatten=True, test_only=True, test_fraction=0.2)
    assert data.name == "mnist-test-only"
    assert_images(data.x_train, (8000, 784))
    assert_images(data.x_test, (2000, 784))
    assert [a + b for a, b in zip(counts(data.y_train), counts(data.y_test), strict=True)] == (
        MNIST_TEST_COUNTS
    )


@needs("fashion-mnist/t10k-images-idx3-ubyte.gz", "fashion-mnist/t10k-labels-idx1-ubyte.gz")
def test_fashion_mnist_test_only_is_a_stratified_split_of_the_official_test_set() -> None:
    data = load_fashion_mnist(test_only=True)
    assert data.name == "fashion-mnist-test-only"
    assert_images(data.x_train, (7500, 1, 28, 28))
    assert_images(data.x_test, (2500, 1, 28, 28))
    assert counts(data.y_train) == [750] * 10 and counts(data.y_test) == [250] * 10
    mean = (data.x_train.sum() + data.x_test.sum()) / (10000 * 784)
    assert mean.item() == pytest.approx(0.2869, abs=1e-4)
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    again = load_fashion_mnist(test_only=True)
    assert torch.equal(again.y_train, data.y_train)


def test_fashion_mnist_train_split_is_found_or_the_error_says_how_to_get_it(tmp_path) -> None:
    """With only the test split present (as in ../shared/data), the error says how to get
    the train split; with the train split present, it loads."""
    shared = SHARED_DATA_DIR / "fashion-mnist"
    names = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    if not all((shared / name).exists() for name in names):
        pytest.skip(f"the Fashion-MNIST test split is not in {shared}")
    test_split = tmp_path / "fashion-mnist"
    test_split.mkdir()
    for name in names:
        shutil.copyfile(shared / name, test_split / name)
    try:
        data = load_fashion_mnist(tmp_path, flatten=True)
    except FileNotFoundError as error:
        assert "apt-get install dataset-fashion-mnist" in str(error)
        assert "test_only=True" in str(error)
    else:
        assert_images(data.x_train, (60000, 784))
        assert counts(data.y_train) == [6000] * 10


@needs("cifar10/cifar10_subset_convnetjs.npz")
def test_cifar10_subset_shapes_counts_and_channel_means() -> None:
    data = load_cifar10_subset()
    assert_images(data.x_train, (4000, 3, 32, 32))
    assert_images(data.x_test, (1000, 3, 32, 32))
    assert counts(data.y_train) == CIFAR_TRAIN_COUNTS
    assert counts(data.y_test) == CIFAR_TEST_COUNTS
    channel_means = data.x_train.mean(dim=(0, 2, 3))
    torch.testing.assert_close(
        channel_means, torch.tensor([0.4916, 0.4818, 0.4447]), atol=1e-4, rtol=0
    )
    assert data.class_names[data.y_train[0]] == "frog"  # first train labels: 6, 9, 9, 4


def test_digits_are_scaled_stratified_and_deterministic() -> None:
    data = load_digits(test_fraction=0.25, seed=0)
    assert_images(data.x_train, (1347, 64))
    assert data.x_test.shape == (450, 64) and data.x_train.max() == 1
    total = torch.tensor(counts(data.y_train)) + torch.tensor(counts(data.y_test))
    # stratified: every class's test share is its rounded 25%
    assert (torch.tensor(counts(data.y_test)) - 0.25 * total).abs().max() <= 1
    same = load_digits(seed=0)
    assert torch.equal(same.x_train, data.x_train) and torch.equal(same.y_test, data.y_test)
    assert not torch.equal(load_digits(seed=1).y_test, data.y_test)


def test_load_dataset_dispatches_and_rejects_unknown_names() -> None:
    assert load_dataset("digits", seed=0).x_train.shape == (1347, 64)
    with pytest.raises(
        ValueError, match="valid names: digits, mnist, fashion-mnist, cifar10-subset"
    ):
        load_dataset("cifar100")
    with pytest.raises(ValueError, match="takes no root"):
        load_dataset("digits", root="/tmp")


# --- folder search, with small fake IDX files ----------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


def write_split(folder: Path, split: str, n: int, value: int) -> None:
    prefix = "train" if split == "train" else "t10k"
    write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.full((n, 28, 28), value))
    write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Shared and system folders moved into ``tmp_path``, so the machine's files do not count."""
    monkeypatch.setattr(loaders, "SHARED_DATA_DIR", tmp_path / "shared")
    monkeypatch.setattr(loaders, "SYSTEM_DATA_DIRS", {"fashion-mnist": (tmp_path / "debian",)})
    return tmp_path


def test_the_shared_folder_is_searched_only_from_a_source_checkout(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = loaders.SHARED_DATA_DIR / "mnist"
    assert shared in loaders._search_dirs("mnist", None)  # this checkout has pyproject.toml
    monkeypatch.setattr(loaders, "REPOSITORY_ROOT", isolated / "site-packages")
    assert shared not in loaders._search_dirs("mnist", None)


def test_read_idx_parses_the_header_and_payload(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)


def test_read_idx_rejects_bad_headers_and_truncated_payloads(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "bad.gz", "wb") as file:
        file.write(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + b"\x00" * 4)  # float32 type code
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        read_idx(tmp_path / "bad.gz")
    with gzip.open(tmp_path / "short.gz", "wb") as file:
        file.write(bytes([0, 0, 0x08, 1, 0, 0, 0, 5]) + b"\x00" * 4)
    with pytest.raises(ValueError, match=r"shape \(5,\) but holds 4 bytes"):
        read_idx(tmp_path / "short.gz")


def test_each_split_comes_from_the_first_folder_that_holds_it(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_split(isolated / "shared" / "fashion-mnist", "test", 20, 255)
    write_split(isolated / "debian", "train", 30, 0)
    data = load_fashion_mnist()
    assert data.x_train.shape == (30, 1, 28, 28) and data.x_train.max() == 0
    assert data.x_test.shape == (20, 1, 28, 28) and data.x_test.min() == 1
    # root comes first, then $PYRO_BKD_DATA, then the shared folder
    write_split(isolated / "env" / "fashion-mnist", "test", 40, 255)
    monkeypatch.setenv(DATA_ENV_VAR, str(isolated / "env"))
    assert load_fashion_mnist().x_test.shape[0] == 40
    write_split(isolated / "mine" / "fashion-mnist", "test", 50, 255)
    assert load_fashion_mnist(isolated / "mine").x_test.shape[0] == 50
    flat = load_dataset("fashion-mnist", str(isolated / "mine"), flatten=True)
    assert flat.x_test.shape == (50, 784)


def test_missing_fashion_train_split_says_how_to_get_it(isolated: Path) -> None:
    write_split(isolated / "shared" / "fashion-mnist", "test", 20, 255)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist()
    assert load_fashion_mnist(test_only=True, test_fraction=0.5).x_train.shape[0] == 10


def test_missing_files_and_bad_roots_are_reported(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte\.gz.*not found"):
        load_mnist()
    with pytest.raises(FileNotFoundError, match=r"cifar10_subset_convnetjs\.npz"):
        load_cifar10_subset()
    with pytest.raises(FileNotFoundError, match="root '/no/such/folder' is not a folder"):
        load_mnist("/no/such/folder")
    monkeypatch.setenv(DATA_ENV_VAR, "/no/such/folder")
    with pytest.raises(FileNotFoundError, match=f"{DATA_ENV_VAR} '/no/such/folder'"):
        load_mnist()


# --- records and transforms ------------------------------------------------------------------


def small_dataset(x_train: torch.Tensor, x_test: torch.Tensor) -> Dataset:
    return Dataset(
        x_train,
        torch.zeros(len(x_train), dtype=torch.int64),
        x_test,
        torch.zeros(len(x_test), dtype=torch.int64),
        num_classes=1,
        name="small",
        class_names=("a",),
    )


def test_dataset_checks_shapes_and_dtypes() -> None:
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="leading dimension"):
        Dataset(x, y[:3], x, y, 1, "d", ("a",))
    with pytest.raises(TypeError, match="float32"):
        Dataset(x.double(), y, x, y, 1, "d", ("a",))
    with pytest.raises(ValueError, match="class_names"):
        Dataset(x, y, x, y, 2, "d", ("a",))


def test_standardize_uses_per_channel_train_statistics() -> None:
    generator = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1, 1)
    x_train = 2.0 + scale * torch.randn(50, 3, 4, 4, generator=generator)
    x_test = 2.0 + scale * torch.randn(20, 3, 4, 4, generator=generator)
    data = standardize(small_dataset(x_train, x_test))
    torch.testing.assert_close(data.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(data.x_train.std(dim=(0, 2, 3)), torch.ones(3))
    mean, std = x_train.mean(dim=(0, 2, 3), keepdim=True), x_train.std(dim=(0, 2, 3), keepdim=True)
    torch.testing.assert_close(data.x_test, (x_test - mean) / std)
    flat = standardize(small_dataset(x_train.flatten(1), x_test.flatten(1)))
    assert flat.x_train.mean().abs() < 1e-5 and (flat.x_train.std() - 1).abs() < 1e-5


def test_input_noise_is_seeded_gaussian_of_the_given_sd() -> None:
    x = torch.rand(200, 50)
    noisy = add_input_noise(x, 0.3, seed=4)
    assert torch.equal(noisy, add_input_noise(x, 0.3, seed=4))
    assert not torch.equal(noisy, add_input_noise(x, 0.3, seed=5))
    residual = noisy - x
    # 10,000 draws: the sample sd is within 1% of 0.3 with overwhelming probability
    assert residual.std().item() == pytest.approx(0.3, rel=0.03)
    assert residual.mean().abs() < 4 * 0.3 / 100
    assert torch.equal(add_input_noise(x, 0.0), x)
    with pytest.raises(ValueError, match="level must be >= 0"):
        add_input_noise(x, -0.1)
    with pytest.raises(TypeError, match="floating"):
        add_input_noise(torch.zeros(3, dtype=torch.int64), 0.1)
