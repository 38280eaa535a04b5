"""Datasets: Fashion-MNIST read natively (IDX, checked against published checksums) and datasets
prepared by tensorflow-datasets; the dataset is part of every run's identity and stored fingerprint.

No network here: the Fashion-MNIST test writes small IDX files and registers their checksums for the
test (the real ones are in hpstudy/data.py); the tfds test prepares a small dataset itself.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from hpstudy import api, cli, store
from hpstudy import data as hdata
from hpstudy.errors import DataError, StudyError
from hpstudy.study import load_study
from tests.conftest import synthetic_dataset

ROOT = Path(__file__).resolve().parent.parent


def _idx(array: np.ndarray) -> bytes:
    """Gzipped IDX bytes of a uint8 array."""
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


@pytest.fixture
def small_fashion(tmp_path, monkeypatch) -> Path:
    """A folder holding small Fashion-MNIST-format files (500 train, 200 test images), registered for this
    test with their own checksums, as the real files are with theirs."""
    source = synthetic_dataset()
    folder = tmp_path / "data" / "fashion_mnist"
    folder.mkdir(parents=True)
    arrays = {
        "train-images-idx3-ubyte.gz": source.train.images.reshape(-1, 28, 28),
        "train-labels-idx1-ubyte.gz": source.train.labels,
        "t10k-images-idx3-ubyte.gz": 255 - source.test.images.reshape(-1, 28, 28),  # not the same as "MNIST"
        "t10k-labels-idx1-ubyte.gz": source.test.labels,
    }
    sums = {}
    for name, array in arrays.items():
        (folder / name).write_bytes(_idx(array))
        sums[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    small = dataclasses.replace(
        hdata.IDX_DATASETS["fashion_mnist"],
        files=sums,
        shape=dataclasses.replace(hdata.MNIST_SHAPE, n_train=500, n_test=200),
    )
    monkeypatch.setitem(hdata.IDX_DATASETS, "fashion_mnist", small)
    return folder


def test_fashion_mnist_checksums_are_the_published_ones():
    # tensorflow-datasets' registered checksums (tensorflow_datasets/url_checksums/fashion_mnist.txt)
    assert hdata.FASHION_MNIST_FILES["train-images-idx3-ubyte.gz"].startswith("3aede38d")
    assert hdata.FASHION_MNIST_FILES["t10k-labels-idx1-ubyte.gz"].startswith("67da17c7")
    assert set(hdata.FASHION_MNIST_FILES) == set(hdata.MNIST_FILES)


def test_mnist_fingerprint_is_unchanged_and_fashion_s_names_itself():
    mnist = hdata.IDX_DATASETS["mnist"].fingerprint()
    stored = (
        pq.read_table(
            sorted((ROOT / "reports/_runs/naragundkar2024_grid").glob("part-*.parquet"))[0],
            columns=["dataset_fingerprint"],
        )
        .column(0)[0]
        .as_py()
    )
    assert mnist == stored  # runs stored before other datasets existed still match
    assert hdata.IDX_DATASETS["fashion_mnist"].fingerprint().startswith("fashion_mnist:")


def test_tiny_study_on_fashion_mnist_end_to_end(write_study, small_fashion, tmp_path, capsys):
    path = write_study()
    results, out = tmp_path / "results", tmp_path / "reports"
    data_dir = small_fashion.parent  # the folder with a fashion_mnist/ subfolder
    args = ["--dataset", "fashion_mnist", "--results", str(results)]
    assert (
        cli.main(
            ["run", str(path), "--seeds", "1", "--workers", "1", "--no-download", "--data-dir", str(data_dir), *args]
        )
        == 0
    )
    assert cli.main(["report", str(path), "--out", str(out), *args]) == 0
    runs = store.read_runs(results / "small.fashion_mnist")
    assert len(runs) == 4 and set(runs["dataset_fingerprint"]) == {hdata.IDX_DATASETS["fashion_mnist"].fingerprint()}
    assert all('"dataset":"fashion_mnist"' in c for c in runs["config"])
    assert (out / "small.fashion_mnist" / "README.md").is_file()
    # the same design on MNIST is other runs: other ids, never mixed
    mnist_ids = {spec.run_id for spec in load_study(path).runs(range(1))}
    assert mnist_ids.isdisjoint(set(runs["run_id"]))
    capsys.readouterr()


def test_study_file_can_name_fashion_mnist(write_study, small_fashion, tmp_path):
    path = write_study(**{'validation = "test"': 'validation = "test"\ndataset = "fashion_mnist"'})
    study = load_study(path)
    assert study.name == "small" and study.trials[0].config.dataset == "fashion_mnist"
    runs = api.run(study, 1, tmp_path / "r", data_dir=small_fashion, download=False, workers=1, progress=False)
    assert runs["dataset_fingerprint"].str.startswith("fashion_mnist:").all()


def test_mnist_files_where_fashion_mnist_is_expected_are_named(mnist_dir, tmp_path):
    with pytest.raises(DataError, match="holds MNIST, not Fashion-MNIST. Keep it, and pass --data-dir"):
        hdata.load_dataset("fashion_mnist", mnist_dir, download=False)


def test_unknown_dataset_names_are_study_errors(write_study):
    path = write_study(**{'validation = "test"': 'validation = "test"\ndataset = "cifar10"'})
    with pytest.raises(
        StudyError,
        match="study.dataset = 'cifar10' is invalid; expected 'mnist', 'fashion_mnist', 'tfds:NAME' .*'npz:PATH'",
    ):
        load_study(path)
    with pytest.raises(StudyError, match="--dataset 'fashion'"):
        api.variant(write_study(), dataset="fashion")


# ---- tensorflow-datasets ------------------------------------------------------------------------------


def _tiny_tfds(data_dir: Path) -> None:
    """Prepare a small 28x28 10-class dataset with tensorflow-datasets (ArrayRecord, no TensorFlow)."""
    tfds = pytest.importorskip(
        "tensorflow_datasets", reason="tensorflow-datasets is not installed (pip install -e '.[tfds]')"
    )
    source = synthetic_dataset()

    class TinyDigits(tfds.core.GeneratorBasedBuilder):
        """Synthetic digits in the layout of tfds' mnist."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            # Tensor, not Image: encoding PNG images while preparing needs TensorFlow, which hpstudy does not.
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
                        "label": tfds.features.ClassLabel(num_classes=10),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(source.train), "test": self._generate_examples(source.test)}

        def _generate_examples(self, split):
            for i in range(len(split)):
                yield i, {"image": split.images[i].reshape(28, 28, 1), "label": int(split.labels[i])}

    TinyDigits(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def test_tfds_dataset_runs_a_tiny_study(write_study, tmp_path, monkeypatch):
    tfds_dir = tmp_path / "tfds"
    _tiny_tfds(tfds_dir)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_dir))
    path = write_study(**{'validation = "test"': 'validation = "test"\ndataset = "tfds:tiny_digits"'})
    runs = api.run(path, 1, tmp_path / "r", workers=1, progress=False)
    assert len(runs) == 4
    assert runs["dataset_fingerprint"].str.startswith("tfds:tiny_digits/1.0.0:").all()
    # exactly the examples that were prepared (in the order tensorflow-datasets stored them, which is fixed)
    loaded, prepared = hdata.load_dataset("tfds:tiny_digits"), synthetic_dataset()

    def rows(split):
        return sorted(map(bytes, np.column_stack([split.images, split.labels])))

    assert rows(loaded.train) == rows(prepared.train) and rows(loaded.test) == rows(prepared.test)
    assert hdata.load_dataset("tfds:tiny_digits").fingerprint == loaded.fingerprint


def test_tfds_dataset_not_prepared_says_how_to_prepare(write_study, tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed (pip install -e '.[tfds]')")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "empty"))
    path = write_study(**{'validation = "test"': 'validation = "test"\ndataset = "tfds:fashion_mnist"'})
    code = cli.main(["run", str(path), "--seeds", "1", "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == DataError.exit_code == 3
    assert (
        "tfds:fashion_mnist is not prepared in" in err and "tfds build fashion_mnist --file_format=array_record" in err
    )
    assert "TFDS_DATA_DIR" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").rglob("part-*"))


def test_verify_retrains_fashion_mnist_runs_bit_for_bit(write_study, small_fashion, tmp_path):
    from hpstudy.verify import verify

    results = tmp_path / "results"
    api.run(
        write_study(),
        1,
        results,
        dataset="fashion_mnist",
        data_dir=small_fashion,
        download=False,
        workers=1,
        progress=False,
    )
    outcome = verify(
        results / "small.fashion_mnist", data_dir=str(small_fashion), workers=1, lock_path=None, progress=False
    )
    assert outcome.checked == 4 and outcome.matched == 4 and not outcome.mismatches


def _tiny_colour(data_dir: Path) -> None:
    """Prepare an 8x8x3 dataset of 5 classes (60 training, 20 test images) with tensorflow-datasets."""
    tfds = pytest.importorskip(
        "tensorflow_datasets", reason="tensorflow-datasets is not installed (pip install -e '.[tfds]')"
    )
    rng = np.random.default_rng(0)

    class TinyColour(tfds.core.GeneratorBasedBuilder):
        """Colour images of another shape and class count than MNIST's."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Tensor(shape=(8, 8, 3), dtype=np.uint8),
                        "label": tfds.features.ClassLabel(num_classes=5),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(60), "test": self._generate_examples(20)}

        def _generate_examples(self, n):
            for i in range(n):
                label = i % 5
                image = rng.integers(0, 80, size=(8, 8, 3)).astype(np.uint8)
                image[label] += 150  # class k brightens row k
                yield i, {"image": image, "label": label}

    TinyColour(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def test_tfds_dataset_of_another_shape_and_class_count(write_study, tmp_path, monkeypatch):
    tfds_dir = tmp_path / "tfds"
    _tiny_colour(tfds_dir)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_dir))
    assert hdata.shape_of("tfds:tiny_colour") == hdata.DataShape((8, 8, 3), 5, 60, 20)
    loaded = hdata.load_dataset("tfds:tiny_colour")
    assert loaded.train.images.shape == (60, 192) and sorted(set(loaded.test.labels)) == [0, 1, 2, 3, 4]
    dataset = 'validation = "test"\ndataset = "tfds:tiny_colour"'
    with pytest.raises(
        StudyError, match=r"batch_size\[0\] = 64 is invalid; expected an integer batch size in \[1, 60\]"
    ):
        load_study(write_study(**{'validation = "test"': dataset}))
    path = write_study(
        "learning_rate = [0.01]\nbatch_size = [10]\ndropout = [0.0]",
        **{'validation = "test"': dataset, "hidden = [32, 32]": "hidden = [8]"},
    )
    runs = api.run(path, 1, tmp_path / "r", workers=1, progress=False)
    assert len(runs) == 1 and runs["dataset_fingerprint"].str.startswith("tfds:tiny_colour/1.0.0:").all()
    assert 0 <= runs["test_accuracy"][0] <= 1 and runs["epochs_run"][0] >= 1
