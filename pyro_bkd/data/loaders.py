"""Image classification data sets from local files; nothing is ever downloaded.

Every loader returns a :class:`Dataset`: inputs ``x`` as ``float32`` in ``[0, 1]`` and
labels ``y`` as ``int64`` in ``[0, K)``.

Where the files are looked for (each split is read from the first folder, in this
order, that holds both its files):

1. ``root/<subdir>`` when ``root`` is given;
2. ``$PYRO_BKD_DATA/<subdir>`` when the environment variable ``PYRO_BKD_DATA`` is set;
3. :data:`SHARED_DATA_DIR` ``/<subdir>``, i.e. ``<checkout>/../shared/data/<subdir>``: the
   project's shared data folder beside a source checkout (README, "Data"). Searched only
   when the package is imported from a checkout (:data:`REPOSITORY_ROOT` holds
   ``pyproject.toml``), never beside an installed package's folder;
4. system folders of Debian packages: ``/usr/share/datasets/fashion-mnist`` (package
   ``dataset-fashion-mnist``, the full Fashion-MNIST set).

``<subdir>`` is ``mnist``, ``fashion-mnist`` or ``cifar10``. A ``root`` or ``PYRO_BKD_DATA``
that is not a folder is an error (a typo must not silently fall back to another copy).
"""

from __future__ import annotations

import gzip
import os
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits as _sklearn_digits
from sklearn.model_selection import train_test_split

from pyro_bkd._checks import InputError, InputTypeError

DATA_ENV_VAR = "PYRO_BKD_DATA"
#: The source checkout this package is imported from (``<checkout>/pyro_bkd/data/loaders.py``).
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
#: The shared data folder beside the checkout, the documented data root of the repository.
SHARED_DATA_DIR = REPOSITORY_ROOT.parent / "shared" / "data"
SYSTEM_DATA_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}
DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10-subset")

DIGIT_NAMES: tuple[str, ...] = tuple(str(k) for k in range(10))
FASHION_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_NAMES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_UBYTE = 0x08  # IDX type code of unsigned bytes
_CIFAR10_FILE = "cifar10_subset_convnetjs.npz"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled train/test split of ``K`` classes.

    Attributes:
        x_train: ``[N, ...]`` float32 inputs, ``y_train``: ``[N]`` int64 labels in ``[0, K)``.
        x_test: ``[M, ...]`` float32 inputs, ``y_test``: ``[M]`` int64 labels in ``[0, K)``.
        num_classes: ``K``.
        name: the data set's name (as accepted by :func:`load_dataset`, plus a suffix
            such as ``-test-only`` when the split is not the standard one).
        class_names: ``K`` human-readable class names, index ``k`` for label ``k``.

    Equality is identity (tensors have no single truth value).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    name: str
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise InputError(
                f"class_names has {len(self.class_names)} names for {self.num_classes} classes"
            )
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != torch.float32 or y.dtype != torch.int64:
                raise InputTypeError(
                    f"x_{split} must be float32 and y_{split} int64, got {x.dtype}, {y.dtype}"
                )
            if y.dim() != 1 or x.shape[0] != y.shape[0]:
                raise InputError(
                    f"x_{split} {tuple(x.shape)} and y_{split} {tuple(y.shape)} "
                    f"must share the leading dimension N"
                )


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes) as ``[N, 64]`` in ``[0, 1]``.

    Pixels (``0..16``) are divided by 16. The split is stratified by class and
    deterministic given ``seed``; ``test_fraction`` of the images form the test set.
    """
    bunch = _sklearn_digits()
    x = torch.from_numpy(bunch.data / 16.0).float()
    y = torch.from_numpy(bunch.target).long()
    return _stratified_dataset(x, y, test_fraction, seed, name="digits", class_names=DIGIT_NAMES)


def load_mnist(
    root: str | Path | None = None,
    *,
    flatten: bool = False,
    test_only: bool = False,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> Dataset:
    """MNIST (60,000 train + 10,000 test handwritten digits) from its gzip'd IDX files.

    ``x`` is ``[N, 1, 28, 28]`` (``[N, 784]`` when ``flatten``), pixels divided by 255.
    ``test_only`` is as in :func:`load_fashion_mnist`.
    """
    return _load_idx_dataset(
        "mnist",
        DIGIT_NAMES,
        root,
        flatten=flatten,
        test_only=test_only,
        test_fraction=test_fraction,
        seed=seed,
    )


def load_fashion_mnist(
    root: str | Path | None = None,
    *,
    flatten: bool = False,
    test_only: bool = False,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> Dataset:
    """Fashion-MNIST (60,000 train + 10,000 test clothing images) from its gzip'd IDX files.

    ``x`` is ``[N, 1, 28, 28]`` (``[N, 784]`` when ``flatten``), pixels divided by 255.

    The project's shared folder holds only the official *test* split; the train split comes
    from another folder of the search order, e.g. Debian's ``dataset-fashion-mnist``
    (``apt-get install dataset-fashion-mnist``). Without it, ``test_only=True`` builds the
    data set from the 10,000 official test images alone: a stratified split, deterministic
    given ``seed``, with ``test_fraction`` of them as test set. Its name is then
    ``"fashion-mnist-test-only"``, so its numbers are not mistaken for the standard split's.

    Raises:
        FileNotFoundError: a needed split is in none of the folders searched (the message
            lists them and says how to get the files).
    """
    return _load_idx_dataset(
        "fashion-mnist",
        FASHION_NAMES,
        root,
        flatten=flatten,
        test_only=test_only,
        test_fraction=test_fraction,
        seed=seed,
    )


def load_cifar10_subset(root: str | Path | None = None) -> Dataset:
    """The CIFAR-10 subset (4,000 train + 1,000 test 32x32 RGB images) as ``[N, 3, 32, 32]``.

    The npz stores ``HWC`` ``uint8`` arrays; they become ``CHW`` float32, divided by 255.
    """
    folder = _find_folder(
        (_CIFAR10_FILE,), _search_dirs("cifar10", root), _missing_hint("cifar10", "train")
    )
    arrays = read_npz(folder / _CIFAR10_FILE)
    missing = {"x_train", "y_train", "x_test", "y_test"} - arrays.keys()
    if missing:
        raise InputError(f"{folder / _CIFAR10_FILE} lacks array(s) {', '.join(sorted(missing))}")
    splits = {
        split: (_images_to_tensor(arrays[f"x_{split}"]), _labels_to_tensor(arrays[f"y_{split}"]))
        for split in ("train", "test")
    }
    return Dataset(
        *splits["train"],
        *splits["test"],
        num_classes=10,
        name="cifar10-subset",
        class_names=CIFAR10_NAMES,
    )


def load_dataset(name: str, root: str | Path | None = None, **options: object) -> Dataset:
    """Load ``digits``, ``mnist``, ``fashion-mnist`` or ``cifar10-subset`` by name.

    ``options`` go to the loader (e.g. ``flatten=True``, ``test_only=True``, ``seed=1``).
    ``digits`` ships with scikit-learn, so it takes no ``root``.
    """
    loaders: dict[str, Callable[..., Dataset]] = {
        "mnist": load_mnist,
        "fashion-mnist": load_fashion_mnist,
        "cifar10-subset": load_cifar10_subset,
    }
    if name == "digits":
        if root is not None:
            raise InputError("digits ships with scikit-learn; it takes no root")
        return load_digits(**options)
    if name not in loaders:
        raise InputError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    return loaders[name](root, **options)


def standardize(dataset: Dataset) -> Dataset:
    """Per-channel standardisation ``(x - m_c) / s_c`` with train-set mean and sd.

    Channels are dimension 1 of image inputs ``[N, C, H, W]``; flat inputs ``[N, D]`` are one
    channel (a per-feature sd would be 0 on the constant border pixels).
    """
    dims = (
        [d for d in range(dataset.x_train.dim()) if d != 1] if dataset.x_train.dim() == 4 else None
    )
    mean = dataset.x_train.mean(dim=dims, keepdim=dims is not None)
    std = dataset.x_train.std(dim=dims, keepdim=dims is not None)
    return replace(
        dataset,
        x_train=(dataset.x_train - mean) / std,
        x_test=(dataset.x_test - mean) / std,
    )


def add_input_noise(x: torch.Tensor, level: float, seed: int = 0) -> torch.Tensor:
    """``x + level * eps``, ``eps ~ N(0, I)``: inputs corrupted for the robustness test (SPEC §5).

    The noise is drawn from a generator seeded with ``seed`` (the global RNG is untouched);
    values are not clipped back to ``[0, 1]``. ``level = 0`` returns a copy of ``x``.
    """
    if not x.dtype.is_floating_point:
        raise InputTypeError(f"x must be a floating tensor, got dtype {x.dtype}")
    if not level >= 0:
        raise InputError(f"level must be >= 0, got {level!r}")
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x + level * noise.to(x.device)


def read_npz(file: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (no pickles); a file that is not one is an InputError.

    Permission and other OS errors on the file propagate as they are.
    """
    try:
        archive = np.load(file, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise InputError("it holds a single array (.npy), not an archive of named arrays")
        with archive:
            return {name: archive[name] for name in archive.files}
    except (PermissionError, IsADirectoryError):
        raise
    except (
        OSError,
        ValueError,
        EOFError,
        NotImplementedError,  # zipfile: an unsupported version or compression
        zipfile.BadZipFile,
        zlib.error,
    ) as error:
        raise InputError(f"cannot read {os.fspath(file)} as an .npz archive: {error}") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Parse a gzip'd IDX file of unsigned bytes (MNIST format) into a ``uint8`` array.

    Header, big-endian: two zero bytes, the type code ``0x08``, the number of dimensions
    ``d``, then ``d`` int32 sizes; the payload follows in row-major order.
    """
    try:
        with gzip.open(path, "rb") as file:
            raw = bytearray(file.read())  # writable, so torch.from_numpy may share it
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise InputError(f"cannot read {path} as a gzip'd IDX file: {error}") from None
    if len(raw) < 4:
        raise InputError(f"{path} is not an IDX file: {len(raw)} bytes")
    zeros, type_code, ndim = raw[:2], raw[2], raw[3]
    if zeros != b"\x00\x00" or type_code != _IDX_UBYTE or len(raw) < 4 + 4 * ndim:
        raise InputError(f"{path} is not an IDX file of unsigned bytes (header {raw[:4].hex()})")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    payload = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != int(np.prod(shape)):
        raise InputError(f"{path}: header says shape {shape} but holds {payload.size} bytes")
    return payload.reshape(shape)


def _load_idx_dataset(
    subdir: str,
    class_names: tuple[str, ...],
    root: str | Path | None,
    *,
    flatten: bool,
    test_only: bool,
    test_fraction: float,
    seed: int,
) -> Dataset:
    """A 28x28 grey-scale IDX data set (MNIST layout), both splits or the test split alone."""
    dirs = _search_dirs(subdir, root)
    x_test, y_test = _read_idx_split(subdir, "test", dirs)
    if flatten:
        x_test = x_test.flatten(1)
    if test_only:
        return _stratified_dataset(
            x_test,
            y_test,
            test_fraction,
            seed,
            name=f"{subdir}-test-only",
            class_names=class_names,
        )
    x_train, y_train = _read_idx_split(subdir, "train", dirs)
    if flatten:
        x_train = x_train.flatten(1)
    return Dataset(
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=len(class_names),
        name=subdir,
        class_names=class_names,
    )


def _read_idx_split(
    subdir: str, split: str, dirs: Sequence[Path]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[N, 1, 28, 28]`` in ``[0, 1]`` and labels ``[N]`` of one split."""
    image_file, label_file = _IDX_FILES[split]
    folder = _find_folder((image_file, label_file), dirs, _missing_hint(subdir, split))
    images = read_idx(folder / image_file)
    labels = read_idx(folder / label_file)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise InputError(
            f"{folder}: images {images.shape} and labels {labels.shape} do not match "
            f"(expected [N, H, W] and [N])"
        )
    return _images_to_tensor(images[:, :, :, None]), _labels_to_tensor(labels)


def _images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """``[N, H, W, C]`` uint8 -> ``[N, C, H, W]`` float32 in ``[0, 1]``."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def _labels_to_tensor(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(labels.astype(np.int64))


def _stratified_dataset(
    x: torch.Tensor,
    y: torch.Tensor,
    test_fraction: float,
    seed: int,
    *,
    name: str,
    class_names: tuple[str, ...],
) -> Dataset:
    """Split ``(x, y)`` into train and test, stratified by class, deterministic given ``seed``."""
    if not 0 < test_fraction < 1:
        raise InputError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=test_fraction, random_state=seed, stratify=y.numpy()
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return Dataset(
        x[train_idx],
        y[train_idx],
        x[test_idx],
        y[test_idx],
        num_classes=len(class_names),
        name=name,
        class_names=class_names,
    )


def _search_dirs(subdir: str, root: str | Path | None) -> list[Path]:
    """The folders that may hold ``subdir``'s files, in search order (see the module doc)."""
    dirs = []
    for label, base in (("root", root), (DATA_ENV_VAR, os.environ.get(DATA_ENV_VAR))):
        if base is None:
            continue
        if not Path(base).is_dir():
            raise FileNotFoundError(f"{label} {str(base)!r} is not a folder")
        dirs.append(Path(base) / subdir)
    if (REPOSITORY_ROOT / "pyproject.toml").is_file():  # a checkout, not site-packages
        dirs.append(SHARED_DATA_DIR / subdir)
    dirs.extend(SYSTEM_DATA_DIRS.get(subdir, ()))
    return dirs


def _find_folder(files: Sequence[str], dirs: Sequence[Path], hint: str) -> Path:
    """The first of ``dirs`` holding every one of ``files``; else ``FileNotFoundError(hint)``."""
    for folder in dirs:
        if all((folder / file).is_file() for file in files):
            return folder
    searched = "\n  ".join(str(d) for d in dirs)
    raise FileNotFoundError(f"{', '.join(files)} not found in any of\n  {searched}\n{hint}")


def _missing_hint(subdir: str, split: str) -> str:
    """How to get the files of ``subdir``'s ``split`` when they are missing."""
    if subdir == "fashion-mnist" and split == "train":
        return (
            "The Fashion-MNIST train split is in Debian's package dataset-fashion-mnist: "
            "`apt-get install dataset-fashion-mnist` puts it in /usr/share/datasets/fashion-mnist. "
            "Or pass test_only=True to split the official 10,000 test images instead."
        )
    return f"Put the files in <root>/{subdir}/ and pass root=<root> or set {DATA_ENV_VAR}=<root>."
