"""Datasets prepared by tensorflow-datasets, read through `tfds.data_source` (no TensorFlow needed).

A study names one as `dataset = "tfds:NAME"` (optionally "tfds:NAME:1.2.3"). The dataset must already be
prepared in the ArrayRecord format under $TFDS_DATA_DIR (else ~/tensorflow_datasets); hpstudy never
downloads or prepares it. It must hold 'train' and 'test' splits of 28x28 single-channel uint8 images
('image') with integer labels 0..9 ('label'), the input of the studies' MLPs (MNIST, Fashion-MNIST,
KMNIST, ...).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from hpstudy.data import Dataset, Split, split_validation
from hpstudy.errors import DataError

ENV_TFDS_DATA_DIR = "TFDS_DATA_DIR"


def _prepare_hint(name: str) -> str:
    return (
        f"Prepare it once, with network access, in the ArrayRecord format: `tfds build {name.split(':')[0]} "
        "--file_format=array_record` (TensorFlow is needed to prepare image datasets, not to read them), "
        f"and point {ENV_TFDS_DATA_DIR} at the folder it was prepared in"
    )


def _read_split(source, name: str, split: str) -> Split:
    """All examples of one split as flattened uint8 images and integer labels, checked for shape."""
    n = len(source)
    examples = source.__getitems__(list(range(n))) if hasattr(source, "__getitems__") else [source[i] for i in range(n)]
    if n == 0 or not {"image", "label"} <= set(examples[0]):
        keys = sorted(examples[0]) if n else []
        raise DataError(f"tfds:{name} split '{split}' has features {keys}; hpstudy needs 'image' and 'label'.")
    images = np.stack([np.asarray(e["image"]) for e in examples])
    labels = np.asarray([int(e["label"]) for e in examples])
    if images.dtype != np.uint8 or images.shape[1:] not in ((28, 28), (28, 28, 1)):
        raise DataError(
            f"tfds:{name} split '{split}' has images of shape {images.shape[1:]} and type {images.dtype}; "
            "hpstudy's networks take 28x28 single-channel uint8 images (784 inputs)."
        )
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"tfds:{name} split '{split}' has labels from {labels.min()} to {labels.max()}; hpstudy needs 10 classes, 0 to 9.")
    return Split(images.reshape(n, 784), labels.astype(np.uint8))


def load_tfds(name: str, validation: str = "test") -> Dataset:
    """Load a prepared tensorflow-datasets dataset and split it by the validation scheme."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise DataError(
            f"dataset 'tfds:{name}' needs tensorflow-datasets: pip install -e '.[tfds]' ({exc})."
        ) from exc
    data_dir = os.environ.get(ENV_TFDS_DATA_DIR) or None
    where = data_dir or "~/tensorflow_datasets"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as exc:  # noqa: BLE001 - tfds raises several kinds for an unknown or unreadable name
        raise DataError(f"tfds:{name} is not a dataset tensorflow-datasets knows or finds in {where} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}). "
                        f"{_prepare_hint(name)}.") from exc
    if not builder.is_prepared():
        raise DataError(f"tfds:{name} is not prepared in {where}. {_prepare_hint(name)}.")
    try:
        sources = tfds.data_source(name, data_dir=data_dir, download=False)
    except Exception as exc:  # noqa: BLE001 - e.g. prepared as TFRecord, which needs TensorFlow to read
        raise DataError(f"tfds:{name} in {where} cannot be read without TensorFlow ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}). {_prepare_hint(name)}.") from exc
    missing = [s for s in ("train", "test") if s not in sources]
    if missing:
        raise DataError(f"tfds:{name} has splits {sorted(sources)}; hpstudy needs 'train' and 'test'.")
    train, test = _read_split(sources["train"], name, "train"), _read_split(sources["test"], name, "test")
    digest = hashlib.sha256()
    for split in (train, test):
        digest.update(split.images.tobytes())
        digest.update(split.labels.tobytes())
    # The dataset's identity: its full tfds name and version, and a hash of exactly the arrays trained on.
    fingerprint = f"tfds:{builder.info.full_name}:{digest.hexdigest()}"
    return split_validation(train, test, validation, fingerprint)
