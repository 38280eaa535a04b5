"""A researcher's own arrays: `dataset = "npz:PATH"`, a NumPy .npz file holding x_train, y_train, x_test and
y_test, named by its content.

The file is read once when the study is loaded and named `npz:HASH:SHAPE:CLASSES:TRAIN:TEST` (e.g.
`npz:3fa2b1c4d5e6f708:32x32x3:100:5000:1000`): HASH is the first 16 hex digits of a SHA-256 over the four
arrays as hpstudy reads them (pixels as uint8, labels as int64), so the name, and with it every run's identity,
follows the content and not the path: a moved or re-saved file keeps its runs, a changed one gets new runs.
The sizes in the name let the engine, estimates and reports size the network and sets without the file.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from hpstudy.data import ENV_DATA_DIR, Dataset, DataShape, Split, split_validation
from hpstudy.errors import DataError

PREFIX = "npz:"
ARRAYS = ("x_train", "y_train", "x_test", "y_test")
ID_PATTERN = re.compile(r"npz:([0-9a-f]{16}):([0-9]+(?:x[0-9]+)*):([0-9]+):([0-9]+):([0-9]+)")
HOW_TO_SAVE = (
    "save them with numpy.savez(PATH, x_train=..., y_train=..., x_test=..., y_test=...): images as "
    "integers 0-255 (N x H x W x C, or N x features), labels as integers 0 to K-1"
)
# Where this process last found the file of each content name (so that loading it needs no search).
_FOUND: dict[str, Path] = {}


def is_id(dataset: str) -> bool:
    """Whether a dataset string is a content name (as runs store it), not a path."""
    return ID_PATTERN.fullmatch(dataset) is not None


def _open(path: Path) -> dict[str, np.ndarray]:
    """The four arrays of a .npz file (read without unpickling); DataError naming what is wrong."""
    if not zipfile.is_zipfile(path):  # numpy would take any other file for a pickle and say so
        raise DataError(
            f"{path}: not a readable .npz file (not a zip archive: truncated, or not written by "
            f"numpy.savez); {HOW_TO_SAVE}."
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = list(npz.files)
            missing = [n for n in ARRAYS if n not in names]
            if missing:
                raise DataError(
                    f"{path} holds the arrays {names or 'none'}; hpstudy needs {', '.join(ARRAYS)} "
                    f"(missing: {', '.join(missing)}): {HOW_TO_SAVE}."
                )
            return {n: npz[n] for n in ARRAYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc}); {HOW_TO_SAVE}.") from exc


def _where(mask: np.ndarray) -> str:
    """The index of the first true element, as Python writes it: 4, or (0, 3, 1)."""
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))
    return str(index[0]) if len(index) == 1 else str(index)


def _whole(path: Path, name: str, array: np.ndarray, what: str, low: int, high: int | None) -> np.ndarray:
    """An array of whole numbers in [low, high] as int64; DataError for NaN, fractions or values out of range."""
    if not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating) or array.dtype == np.bool_
    ):
        raise DataError(f"{path}: {name} has type {array.dtype}; expected {what} ({HOW_TO_SAVE}).")
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array)
        if bad.any():
            kind = "NaN" if np.isnan(array).any() else "infinite values"
            raise DataError(
                f"{path}: {name} holds {kind} ({int(bad.sum())} of {array.size}, the first at index "
                f"{_where(bad)}); expected {what}."
            )
        frac = array != np.round(array)
        if frac.any():
            first = np.unravel_index(int(np.argmax(frac)), array.shape)
            raise DataError(
                f"{path}: {name} holds non-integer values ({array[first].item()!r} at index {_where(frac)}); "
                f"expected {what}"
                + (" (pixels in [0, 1]? multiply by 255 and round)." if name.startswith("x") else ".")
            )
    if array.size:
        lo, hi = array.min(), array.max()
        if lo < low or (high is not None and hi > high):
            raise DataError(f"{path}: {name} holds values from {lo.item()!r} to {hi.item()!r}; expected {what}.")
    return array.astype(np.int64)


def read(path: Path) -> tuple[Split, Split, DataShape, str]:
    """(train, test, shape, SHA-256 of the content) of a .npz file, every array checked."""
    arrays = _open(path)
    x_train, y_train, x_test, y_test = (arrays[n] for n in ARRAYS)
    for name in ("x_train", "x_test"):
        if arrays[name].ndim < 2 or arrays[name].shape[0] == 0 or 0 in arrays[name].shape:
            raise DataError(
                f"{path}: {name} has shape {arrays[name].shape}; expected one image per row "
                "(N x H x W x C or N x features, N >= 1)."
            )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{path}: x_train's images have shape {x_train.shape[1:]} but x_test's {x_test.shape[1:]}; "
            "the two sets must hold images of one shape."
        )
    for x, y in (("x_train", "y_train"), ("x_test", "y_test")):
        if arrays[y].ndim != 1 or arrays[y].shape[0] != arrays[x].shape[0]:
            hint = " (one-hot labels? pass y.argmax(axis=1))" if arrays[y].ndim == 2 else ""
            raise DataError(
                f"{path}: {y} has shape {arrays[y].shape} for {arrays[x].shape[0]} images in {x}; expected "
                f"one integer label per image, shape ({arrays[x].shape[0]},){hint}."
            )
    images = {
        n: _whole(path, n, arrays[n], "pixel values, integers from 0 to 255", 0, 255).astype(np.uint8)
        for n in ("x_train", "x_test")
    }
    train_labels = _whole(path, "y_train", y_train, "whole-number class labels 0 to K-1", 0, None)
    classes = int(train_labels.max()) + 1
    if classes < 2:
        raise DataError(f"{path}: y_train holds one class only; a classifier needs at least 2 (labels 0 to K-1).")
    test_labels = _whole(
        path,
        "y_test",
        y_test,
        f"labels of the training set's classes, 0 to {classes - 1} (the "
        "largest training label + 1 is the number of classes)",
        0,
        classes - 1,
    )
    digest = hashlib.sha256()
    for name, array in (
        ("x_train", images["x_train"]),
        ("y_train", train_labels),
        ("x_test", images["x_test"]),
        ("y_test", test_labels),
    ):
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    shape = DataShape(tuple(int(n) for n in x_train.shape[1:]), classes, len(x_train), len(x_test))
    flat = shape.inputs
    train = Split(images["x_train"].reshape(-1, flat), train_labels.astype(np.int32))
    test = Split(images["x_test"].reshape(-1, flat), test_labels.astype(np.int32))
    return train, test, shape, digest.hexdigest()


def content_id(shape: DataShape, digest: str) -> str:
    """The dataset's name in run identities: its content hash and sizes."""
    return f"{PREFIX}{digest[:16]}:{'x'.join(map(str, shape.image))}:{shape.classes}:{shape.n_train}:{shape.n_test}"


def dataset_id(path: str | os.PathLike) -> str:
    """Read and check a .npz file; its content name (remembered with the path, for loading it later)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise DataError(
            f'{path}: no such .npz file; {HOW_TO_SAVE}, and name it with dataset = "npz:PATH" '
            "(a path relative to the study file's folder, or on the command line to the current one)."
        )
    _, _, shape, digest = read(path)
    name = content_id(shape, digest)
    _FOUND[name] = path
    return name


def shape_of_id(name: str) -> DataShape:
    """The sizes written in a content name."""
    match = ID_PATTERN.fullmatch(name)
    if match is None:
        raise DataError(f"dataset {name!r} is not a .npz content name (npz:HASH:HxWxC:CLASSES:TRAIN:TEST).")
    image, classes, n_train, n_test = match.group(2, 3, 4, 5)
    return DataShape(tuple(int(n) for n in image.split("x")), int(classes), int(n_train), int(n_test))


def _search(name: str, data_dir: str | os.PathLike | None) -> Path | None:
    """A .npz file with this content in --data-dir or $HPSTUDY_DATA_DIR (e.g. to verify runs elsewhere)."""
    for folder in (data_dir, os.environ.get(ENV_DATA_DIR)):
        if not folder or not Path(folder).is_dir():
            continue
        for candidate in sorted(Path(folder).glob("*.npz")):
            try:
                _, _, shape, digest = read(candidate)
            except DataError:
                continue
            if content_id(shape, digest) == name:
                return candidate.resolve()
    return None


def load_npz(name: str, data_dir: str | os.PathLike | None = None, validation: str = "test") -> Dataset:
    """Load the .npz dataset of a content name (or a path) and split it by the validation scheme; DataError if
    the file found no longer holds that content."""
    if not is_id(name):
        name = dataset_id(name.removeprefix(PREFIX))
    path = _FOUND.get(name) or _search(name, data_dir)
    if path is None:
        raise DataError(
            f"dataset {name} (a .npz file named by its content) not found: no .npz file in --data-dir or "
            f"${ENV_DATA_DIR} holds these arrays. Pass --data-dir DIR (or set {ENV_DATA_DIR}=DIR) for the "
            'folder that holds it, or name the file in the study with dataset = "npz:PATH".'
        )
    train, test, shape, digest = read(path)
    if content_id(shape, digest) != name:
        raise DataError(
            f"{path} changed: its runs are named {name}, but it now holds {content_id(shape, digest)}. "
            "Runs of the new content are other runs: load the study again to run them."
        )
    return split_validation(train, test, validation, f"{PREFIX}{digest}", shape.image, shape.classes)
