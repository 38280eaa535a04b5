"""Datasets: MNIST and Fashion-MNIST from their four canonical IDX files (located, downloaded, verified
against published SHA-256s, read natively), any image classification dataset prepared by
tensorflow-datasets (hpstudy/tfds_source.py) or a researcher's own arrays in a .npz file
(hpstudy/npz_source.py); split for validation. Every size the rest of hpstudy uses (inputs, classes,
training- and test-set sizes) comes from `shape_of(dataset)`: MNIST's numbers live here only."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import math
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from hpstudy.errors import DataError

# The canonical files and their published SHA-256 (the same values tensorflow-datasets registers).
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
# The mirror tensorflow-datasets downloads MNIST from.
MNIST_MIRROR = "https://storage.googleapis.com/cvdf-datasets/mnist/"
ENV_DATA_DIR = "HPSTUDY_DATA_DIR"
# Fashion-MNIST's files have MNIST's names, format and shapes. SHA-256s as registered by
# tensorflow-datasets (tensorflow/datasets, tensorflow_datasets/url_checksums/fashion_mnist.txt),
# for the files of https://github.com/zalandoresearch/fashion-mnist.
FASHION_MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
FASHION_MNIST_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


@dataclasses.dataclass(frozen=True)
class DataShape:
    """A dataset's sizes: one image's shape (flattened into the network's inputs), the number of classes
    (the network's outputs), and the training- and test-set sizes (before any holdout)."""

    image: tuple[int, ...]
    classes: int
    n_train: int
    n_test: int

    @property
    def inputs(self) -> int:
        """Inputs of the network: the image flattened."""
        return math.prod(self.image)

    def fit_images(self, validation: str) -> int:
        """Training images trained on under a validation scheme (a holdout is taken from the training set)."""
        return self.n_train - (parse_validation(validation) or 0)

    def eval_images(self, validation: str) -> int:
        """Images the validation metrics are measured on: the holdout, else the test set."""
        return parse_validation(validation) or self.n_test


# MNIST and Fashion-MNIST: 28x28 grey images of 10 classes, 60,000 for training and 10,000 for testing.
MNIST_SHAPE = DataShape((28, 28, 1), 10, 60000, 10000)


@dataclasses.dataclass(frozen=True)
class IdxSource:
    """A dataset of four gzipped IDX files (train/test images and labels) with published checksums."""

    name: str
    label: str
    files: dict  # file name -> SHA-256
    mirror: str
    shape: DataShape = MNIST_SHAPE

    def file_shape(self, file: str) -> tuple[int, ...]:
        """The shape the file must hold."""
        n = self.shape.n_train if file.startswith("train") else self.shape.n_test
        return (n, *self.shape.image[:2]) if "images" in file else (n,)

    def fingerprint(self) -> str:
        """The dataset's identity stored with every run: its name and the checksums of its files.

        MNIST keeps the bare hash it always had (runs stored before other datasets existed carry it).
        """
        digest = hashlib.sha256("".join(self.files[n] for n in sorted(self.files)).encode()).hexdigest()
        return digest if self.name == "mnist" else f"{self.name}:{digest}"


# The datasets read natively; a study names one with `dataset = "..."` in [study].
IDX_DATASETS: dict[str, IdxSource] = {
    "mnist": IdxSource("mnist", "MNIST", MNIST_FILES, MNIST_MIRROR),
    "fashion_mnist": IdxSource("fashion_mnist", "Fashion-MNIST", FASHION_MNIST_FILES, FASHION_MNIST_MIRROR),
}


@dataclasses.dataclass(frozen=True)
class Split:
    """Images (uint8, each flattened to one row) and integer labels of one split."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train, validation (may be empty) and test splits, a fingerprint of the source files, and the shape
    of one image and the number of classes (MNIST's unless given)."""

    train: Split
    validation: Split | None
    test: Split
    fingerprint: str
    validation_scheme: str
    image: tuple[int, ...] = MNIST_SHAPE.image
    classes: int = MNIST_SHAPE.classes


def default_cache_dir(dataset: str = "mnist") -> Path:
    """The per-user cache directory that downloads of a dataset go to."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hpstudy" / dataset


def _folder(path: Path, how: str) -> Path:
    """A data folder given by the user; DataError if it is a file."""
    if path.exists() and not path.is_dir():
        raise DataError(
            f"{how} {path} is a file, not a folder: pass the folder that holds the dataset's four .gz files."
        )
    return path


def candidate_dirs(data_dir: str | os.PathLike | None, dataset: str = "mnist") -> list[Path]:
    """Directories searched, in order: --data-dir (which must exist), else $HPSTUDY_DATA_DIR (each also with a
    subfolder named after the dataset, so one folder can hold several), then the user cache."""
    dirs = []
    if data_dir is not None and not Path(data_dir).exists():  # an explicit option wins or fails, never falls back
        raise DataError(
            f"--data-dir {data_dir} does not exist: pass the folder that holds the dataset's four .gz files."
        )
    value, how = (data_dir, "--data-dir") if data_dir is not None else (os.environ.get(ENV_DATA_DIR), ENV_DATA_DIR)
    if value:
        folder = _folder(Path(value), how)
        dirs += [folder, folder / dataset]
    dirs.append(default_cache_dir(dataset))
    return list(dict.fromkeys(dirs))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise DataError(
            f"{path} cannot be read ({exc.strerror}); make it readable, or pass --data-dir with "
            "a folder whose files you can read."
        ) from exc
    return digest.hexdigest()


def _known_as(digest: str) -> tuple[str, str] | None:
    """(dataset label, file name) of the known file with this SHA-256, if any."""
    for source in IDX_DATASETS.values():
        for name, known in source.files.items():
            if digest == known:
                return source.label, name
    return None


def verify(path: Path, expected: str, label: str = "MNIST") -> None:
    """Raise DataError unless the file's SHA-256 equals the published value."""
    actual = sha256_file(path)
    if actual != expected:
        known = _known_as(actual)
        if known and known[0] != label:  # a whole folder of the other dataset: nothing is wrong with the file
            fix = (
                f"it is the {known[0]} file {known[1]}: {path.parent} holds {known[0]}, not {label}. Keep it, and "
                f"pass --data-dir with a folder holding the {label} files instead"
            )
        elif known:
            fix = (
                f"it holds {label}'s {known[1]}: the files were renamed or swapped. Give each of the four files "
                "its canonical name"
            )
        else:
            fix = (
                f"the file is corrupt or not the canonical one. Delete it and let hpstudy download it again, or "
                f"replace it with the canonical {label} file"
            )
        raise DataError(f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}; {fix}.")


def _download(name: str, source: IdxSource) -> Path:
    """Download one file into the cache; the checksum is checked before the atomic rename."""
    cache = default_cache_dir(source.name)
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / name
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(source.mirror + name, timeout=60) as resp:
            while block := resp.read(1 << 20):
                out.write(block)
        verify(Path(tmp), source.files[name], source.label)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def locate(name: str, data_dir: str | os.PathLike | None = None, download: bool = True, dataset: str = "mnist") -> Path:
    """Find one file of a dataset in the searched directories (the first copy with the published
    checksum), downloading it to the cache if allowed; a copy with another checksum is reported."""
    source = IDX_DATASETS[dataset]
    dirs = candidate_dirs(data_dir, dataset)
    found = [d / name for d in dirs if (d / name).is_file()]
    for path in found:
        if len(found) == 1 or sha256_file(path) == source.files[name]:
            return path  # a single copy is verified (and its mismatch reported) by the caller
    if found:
        verify(found[0], source.files[name], source.label)  # several copies, none canonical: say why
    if download:
        try:
            return _download(name, source)
        except (urllib.error.URLError, OSError) as exc:
            reason = f"download from {source.mirror} failed ({exc})"
    else:
        reason = "downloading is disabled"
    searched = ", ".join(str(d) for d in dirs)
    raise DataError(
        f"{source.label} file {name} not found; searched: {searched}; {reason}. Fix it either way: "
        f"pass --data-dir DIR (or set {ENV_DATA_DIR}=DIR) pointing at a folder holding the four "
        f"canonical files (or at a folder with a '{dataset}' subfolder holding them), or run once with "
        f"network access so hpstudy downloads them to {default_cache_dir(dataset)}."
    )


def read_idx(path: Path, expected_shape: tuple[int, ...]) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes, checking its magic number and shape."""
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc}); the file is truncated or corrupt.") from exc
    ndim = len(expected_shape)
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] != ndim:
        raise DataError(
            f"{path}: wrong IDX magic {raw[:4].hex()}; expected 00000801 for labels or 00000803 for images "
            f"(unsigned bytes, {ndim} dimensions)."
        )
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if shape != expected_shape or len(raw) != header + int(np.prod(shape)):
        raise DataError(
            f"{path}: IDX shape {shape} with {len(raw) - header} data bytes; expected shape {expected_shape}."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_idx(
    dataset: str = "mnist", data_dir: str | os.PathLike | None = None, validation: str = "test", download: bool = True
) -> Dataset:
    """Load a verified IDX dataset (MNIST, Fashion-MNIST) and split it by the validation scheme."""
    parse_validation(validation)  # fail on a bad scheme before touching any file
    source = IDX_DATASETS[dataset]
    paths = {}
    for name, expected in source.files.items():
        paths[name] = locate(name, data_dir, download, dataset)
        verify(paths[name], expected, source.label)
    arrays = {name: read_idx(p, source.file_shape(name)) for name, p in paths.items()}
    n_in = source.shape.inputs
    train = Split(arrays["train-images-idx3-ubyte.gz"].reshape(-1, n_in), arrays["train-labels-idx1-ubyte.gz"])
    test = Split(arrays["t10k-images-idx3-ubyte.gz"].reshape(-1, n_in), arrays["t10k-labels-idx1-ubyte.gz"])
    return split_validation(train, test, validation, source.fingerprint(), source.shape.image, source.shape.classes)


def load_mnist(data_dir: str | os.PathLike | None = None, validation: str = "test", download: bool = True) -> Dataset:
    """Load verified MNIST and split it by the validation scheme ('test', 'holdout:N' or 'none')."""
    return load_idx("mnist", data_dir, validation, download)


def load_dataset(
    dataset: str, data_dir: str | os.PathLike | None = None, validation: str = "test", download: bool = True
) -> Dataset:
    """The dataset a study names: 'mnist', 'fashion_mnist' (native IDX), 'tfds:NAME' (tensorflow-datasets) or
    'npz:ID' (a .npz file named by its content; see hpstudy/npz_source.py)."""
    if dataset.startswith("tfds:"):
        from hpstudy.tfds_source import load_tfds

        return load_tfds(dataset.removeprefix("tfds:"), validation)
    if dataset.startswith("npz:"):
        from hpstudy.npz_source import load_npz

        return load_npz(dataset, data_dir, validation)
    if dataset not in IDX_DATASETS:
        raise DataError(
            f"dataset {dataset!r} is unknown; expected one of {', '.join(IDX_DATASETS)}, 'tfds:NAME' or 'npz:PATH'."
        )
    return load_idx(dataset, data_dir, validation, download)


def shape_of(dataset: str) -> DataShape:
    """The sizes of the dataset a run names, without reading its examples: registered for the IDX datasets,
    written in the name of a .npz dataset, from the builder's metadata for a tensorflow-datasets one."""
    if dataset in IDX_DATASETS:
        return IDX_DATASETS[dataset].shape
    if dataset.startswith("npz:"):
        from hpstudy.npz_source import shape_of_id

        return shape_of_id(dataset)
    if dataset.startswith("tfds:"):
        from hpstudy.tfds_source import tfds_shape

        return tfds_shape(dataset.removeprefix("tfds:"))
    raise DataError(
        f"dataset {dataset!r} is unknown; expected one of {', '.join(IDX_DATASETS)}, 'tfds:NAME' or 'npz:PATH'."
    )


def parse_validation(validation: str) -> int | None:
    """Holdout size for 'holdout:N', 0 for 'none', None for 'test'; ValueError otherwise."""
    if validation == "test":
        return None
    if validation == "none":
        return 0
    if validation.startswith("holdout:"):
        try:
            n = int(validation.split(":", 1)[1])
        except ValueError:
            n = -1
        if n > 0:
            return n
    raise ValueError(
        f"validation={validation!r} is not a validation scheme; expected 'test', 'none' or 'holdout:N' "
        "with N a positive number of training images held out (the last N)."
    )


def split_validation(
    train: Split, test: Split, validation: str, fingerprint: str, image: tuple[int, ...], classes: int
) -> Dataset:
    """Apply a validation scheme: the test set, the last N training images, or none."""
    holdout = parse_validation(validation)
    shape = {"image": tuple(image), "classes": int(classes)}
    if holdout is None:
        return Dataset(train, test, test, fingerprint, validation, **shape)
    if holdout == 0:
        return Dataset(train, None, test, fingerprint, validation, **shape)
    if holdout >= len(train):
        raise ValueError(f"validation={validation!r} holds out {holdout} of only {len(train)} training images.")
    cut = len(train) - holdout
    fit = Split(train.images[:cut], train.labels[:cut])
    held = Split(train.images[cut:], train.labels[cut:])
    return Dataset(fit, held, test, fingerprint, validation, **shape)


def synthetic(n_train: int = 512, n_test: int = 128, validation: str = "test", seed: int = 0) -> Dataset:
    """A small learnable MNIST-shaped dataset for fast tests (class = brightest of 10 pixel blocks)."""
    rng = np.random.default_rng(seed)
    shape = MNIST_SHAPE
    block = shape.inputs // shape.classes

    def make(n: int) -> Split:
        labels = rng.integers(0, shape.classes, size=n).astype(np.uint8)
        images = rng.integers(0, 100, size=(n, shape.inputs)).astype(np.uint8)
        for k in range(shape.classes):
            rows = labels == k
            images[np.ix_(rows, np.arange(k * block, k * block + block))] += 150
        return Split(images, labels)

    return split_validation(
        make(n_train), make(n_test), validation, f"synthetic-{n_train}-{n_test}-{seed}", shape.image, shape.classes
    )
