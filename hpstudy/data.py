"""MNIST: locate, download, verify and read the four canonical IDX files; split for validation."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
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
_EXPECTED_SHAPES = {
    "train-images-idx3-ubyte.gz": (60000, 28, 28),
    "train-labels-idx1-ubyte.gz": (60000,),
    "t10k-images-idx3-ubyte.gz": (10000, 28, 28),
    "t10k-labels-idx1-ubyte.gz": (10000,),
}


@dataclasses.dataclass(frozen=True)
class Split:
    """Images (uint8, flattened to 784) and integer labels of one split."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train, validation (may be empty) and test splits, plus a fingerprint of the source files."""

    train: Split
    validation: Split | None
    test: Split
    fingerprint: str
    validation_scheme: str


def default_cache_dir() -> Path:
    """The per-user cache directory that downloads go to."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hpstudy" / "mnist"


def candidate_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    """Directories searched, in order: --data-dir, $HPSTUDY_DATA_DIR, the user cache."""
    dirs = []
    if data_dir:
        dirs.append(Path(data_dir))
    if os.environ.get(ENV_DATA_DIR):
        dirs.append(Path(os.environ[ENV_DATA_DIR]))
    dirs.append(default_cache_dir())
    return dirs


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, expected: str) -> None:
    """Raise DataError unless the file's SHA-256 equals the published value."""
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(
            f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}. "
            "The file is corrupt or not the canonical MNIST file; delete it and let hpstudy "
            "download it again, or replace it with the canonical file."
        )


def _download(name: str, cache: Path) -> Path:
    """Download one file into the cache; the checksum is checked before the atomic rename."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / name
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(MNIST_MIRROR + name, timeout=60) as resp:
            while block := resp.read(1 << 20):
                out.write(block)
        verify(Path(tmp), MNIST_FILES[name])
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def locate(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Find one MNIST file in the searched directories, downloading it to the cache if allowed."""
    dirs = candidate_dirs(data_dir)
    for d in dirs:
        if (d / name).is_file():
            return d / name
    if download:
        try:
            return _download(name, default_cache_dir())
        except (urllib.error.URLError, OSError) as exc:
            reason = f"download from {MNIST_MIRROR} failed ({exc})"
    else:
        reason = "downloading is disabled"
    searched = ", ".join(str(d) for d in dirs)
    raise DataError(
        f"MNIST file {name} not found; searched: {searched}; {reason}. Fix it either way: "
        f"pass --data-dir DIR (or set {ENV_DATA_DIR}=DIR) pointing at a folder holding the four "
        f"canonical files, or run once with network access so hpstudy downloads them to "
        f"{default_cache_dir()}."
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


def load_mnist(
    data_dir: str | os.PathLike | None = None, validation: str = "test", download: bool = True
) -> Dataset:
    """Load verified MNIST and split it by the validation scheme ('test', 'holdout:N' or 'none')."""
    parse_validation(validation)  # fail on a bad scheme before touching any file
    paths = {}
    for name, expected in MNIST_FILES.items():
        paths[name] = locate(name, data_dir, download)
        verify(paths[name], expected)
    arrays = {name: read_idx(p, _EXPECTED_SHAPES[name]) for name, p in paths.items()}
    train = Split(arrays["train-images-idx3-ubyte.gz"].reshape(60000, 784), arrays["train-labels-idx1-ubyte.gz"])
    test = Split(arrays["t10k-images-idx3-ubyte.gz"].reshape(10000, 784), arrays["t10k-labels-idx1-ubyte.gz"])
    fingerprint = hashlib.sha256("".join(MNIST_FILES[n] for n in sorted(MNIST_FILES)).encode()).hexdigest()
    return split_validation(train, test, validation, fingerprint)


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


def split_validation(train: Split, test: Split, validation: str, fingerprint: str) -> Dataset:
    """Apply a validation scheme: the test set, the last N training images, or none."""
    holdout = parse_validation(validation)
    if holdout is None:
        return Dataset(train, test, test, fingerprint, validation)
    if holdout == 0:
        return Dataset(train, None, test, fingerprint, validation)
    if holdout >= len(train):
        raise ValueError(f"validation={validation!r} holds out {holdout} of only {len(train)} training images.")
    cut = len(train) - holdout
    fit = Split(train.images[:cut], train.labels[:cut])
    held = Split(train.images[cut:], train.labels[cut:])
    return Dataset(fit, held, test, fingerprint, validation)


def synthetic(n_train: int = 512, n_test: int = 128, validation: str = "test", seed: int = 0) -> Dataset:
    """A small learnable MNIST-shaped dataset for fast tests (class = brightest of 10 pixel blocks)."""
    rng = np.random.default_rng(seed)

    def make(n: int) -> Split:
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 100, size=(n, 784)).astype(np.uint8)
        for k in range(10):
            rows = labels == k
            images[np.ix_(rows, np.arange(k * 78, k * 78 + 78))] += 150
        return Split(images, labels)

    return split_validation(make(n_train), make(n_test), validation, f"synthetic-{n_train}-{n_test}-{seed}")
