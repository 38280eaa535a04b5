"""Datasets prepared by tensorflow-datasets, read through `tfds.data_source` (no TensorFlow needed).

A study names one as `dataset = "tfds:NAME"` (optionally "tfds:NAME:1.2.3"). The dataset must already be
prepared in the ArrayRecord format under $TFDS_DATA_DIR (else ~/tensorflow_datasets); hpstudy never
downloads or prepares it. It must hold 'train' and 'test' splits of uint8 images ('image', any
height x width x channels, flattened into the network's inputs) with class labels ('label', a ClassLabel
whose number of classes sizes the network's outputs): MNIST, Fashion-MNIST, KMNIST, EMNIST, CIFAR-10,
SVHN, ... The sizes come from the builder's metadata (`tfds_shape`), the examples are checked against them.
"""

from __future__ import annotations

import functools
import hashlib
import os

import numpy as np

from hpstudy.data import Dataset, DataShape, Split, split_validation
from hpstudy.errors import DataError

ENV_TFDS_DATA_DIR = "TFDS_DATA_DIR"


def _prepare_hint(name: str) -> str:
    return (
        f"Prepare it once, with network access, in the ArrayRecord format: `tfds build {name.split(':')[0]} "
        "--file_format=array_record` (TensorFlow is needed to prepare image datasets, not to read them), "
        f"and point {ENV_TFDS_DATA_DIR} at the folder it was prepared in"
    )


def _read_split(source, name: str, split: str, shape: DataShape) -> Split:
    """All examples of one split as flattened uint8 images and integer labels, checked against the shape."""
    n = len(source)
    examples = source.__getitems__(list(range(n))) if hasattr(source, "__getitems__") else [source[i] for i in range(n)]
    if n == 0 or not {"image", "label"} <= set(examples[0]):
        keys = sorted(examples[0]) if n else []
        raise DataError(f"tfds:{name} split '{split}' has features {keys}; hpstudy needs 'image' and 'label'.")
    images = np.stack([np.asarray(e["image"]) for e in examples])
    labels = np.asarray([int(e["label"]) for e in examples])
    if images.dtype != np.uint8 or images.ndim < 2 or int(np.prod(images.shape[1:])) != shape.inputs:
        raise DataError(
            f"tfds:{name} split '{split}' has images of shape {images.shape[1:]} and type {images.dtype}; its "
            f"metadata says {'x'.join(map(str, shape.image))} uint8 images, as hpstudy needs (pixel values 0-255)."
        )
    if labels.min() < 0 or labels.max() >= shape.classes:
        raise DataError(
            f"tfds:{name} split '{split}' has labels from {labels.min()} to {labels.max()}; its metadata "
            f"says {shape.classes} classes, 0 to {shape.classes - 1}."
        )
    # uint8 labels where they fit, as before other shapes were read: the fingerprint hashes these bytes
    return Split(images.reshape(n, shape.inputs), labels.astype(np.uint8 if shape.classes <= 256 else np.int32))


def _builder(name: str, data_dir: str | None):
    """The prepared builder of a tfds dataset in a data folder (None: tfds' default); DataError if unusable."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise DataError(f"dataset 'tfds:{name}' needs tensorflow-datasets: pip install -e '.[tfds]' ({exc}).") from exc
    where = data_dir or "~/tensorflow_datasets"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as exc:  # noqa: BLE001 - tfds raises several kinds for an unknown or unreadable name
        raise DataError(
            f"tfds:{name} is not a dataset tensorflow-datasets knows or finds in {where} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}). "
            f"{_prepare_hint(name)}."
        ) from exc
    if not builder.is_prepared():
        raise DataError(f"tfds:{name} is not prepared in {where}. {_prepare_hint(name)}.")
    return builder


def tfds_shape(name: str) -> DataShape:
    """A prepared dataset's sizes from its metadata (no example is read): image shape, classes, split sizes."""
    return _shape(name, os.environ.get(ENV_TFDS_DATA_DIR) or None)


@functools.cache
def _shape(name: str, data_dir: str | None) -> DataShape:
    """`tfds_shape` of the dataset in one data folder (read once per process)."""
    builder = _builder(name, data_dir)
    info = builder.info
    features = info.features
    if not {"image", "label"} <= set(features.keys()):
        raise DataError(f"tfds:{name} has features {sorted(features.keys())}; hpstudy needs 'image' and 'label'.")
    missing = [s for s in ("train", "test") if s not in info.splits]
    if missing:
        raise DataError(f"tfds:{name} has splits {sorted(info.splits)}; hpstudy needs 'train' and 'test'.")
    image = tuple(features["image"].shape)
    classes = getattr(features["label"], "num_classes", None)
    if not image or any(d is None for d in image) or not classes:
        raise DataError(
            f"tfds:{name} has images of shape {image} and labels of {classes} classes; hpstudy needs "
            "images of one fixed shape and a ClassLabel label with its number of classes."
        )
    return DataShape(
        tuple(int(d) for d in image),
        int(classes),
        int(info.splits["train"].num_examples),
        int(info.splits["test"].num_examples),
    )


def load_tfds(name: str, validation: str = "test") -> Dataset:
    """Load a prepared tensorflow-datasets dataset and split it by the validation scheme."""
    import tensorflow_datasets as tfds

    data_dir = os.environ.get(ENV_TFDS_DATA_DIR) or None
    where = data_dir or "~/tensorflow_datasets"
    builder, shape = _builder(name, data_dir), _shape(name, data_dir)
    try:
        sources = tfds.data_source(name, data_dir=data_dir, download=False)
    except Exception as exc:  # noqa: BLE001 - e.g. prepared as TFRecord, which needs TensorFlow to read
        raise DataError(
            f"tfds:{name} in {where} cannot be read without TensorFlow ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}). {_prepare_hint(name)}."
        ) from exc
    missing = [s for s in ("train", "test") if s not in sources]
    if missing:
        raise DataError(f"tfds:{name} has splits {sorted(sources)}; hpstudy needs 'train' and 'test'.")
    train, test = _read_split(sources["train"], name, "train", shape), _read_split(sources["test"], name, "test", shape)
    digest = hashlib.sha256()
    for split in (train, test):
        digest.update(split.images.tobytes())
        digest.update(split.labels.tobytes())
    # The dataset's identity: its full tfds name and version, and a hash of exactly the arrays trained on.
    fingerprint = f"tfds:{builder.info.full_name}:{digest.hexdigest()}"
    return split_validation(train, test, validation, fingerprint, shape.image, shape.classes)
