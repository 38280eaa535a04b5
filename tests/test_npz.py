"""A researcher's own arrays (`dataset = "npz:PATH"`): a study on a dataset of another shape (32x32x3 colour
images, 100 classes, 5,000 training images) runs, reports and verifies end to end; the dataset is named by
its content; every kind of bad file gets a clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from hpstudy import cli, npz_source, store
from hpstudy import data as hdata
from hpstudy.config import RunConfig
from hpstudy.errors import DataError, StudyError
from hpstudy.reporting import analysis as analysis_model
from hpstudy.study import load_study
from hpstudy.training import engine

IMAGE, CLASSES, N_TRAIN, N_TEST = (32, 32, 3), 100, 5000, 1000

STUDY = """
[study]
name = "colour"
dataset = "npz:{file}"
validation = "{validation}"
seeds = 2

[model]
hidden = [32]

[training]
optimizer = "adam_keras"
learning_rate = 0.003
batch_size = 100
epochs = 2

[design]
kind = "grid"

[design.factors]
preprocessing = ["scale", "standardise"]
"""


def colour_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Learnable 32x32x3 images of 100 classes: class k brightens its own block of 30 input values."""
    rng = np.random.default_rng(seed)
    flat = int(np.prod(IMAGE))

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, CLASSES, size=n)
        labels[:CLASSES] = np.arange(CLASSES)  # every class present
        images = rng.integers(0, 100, size=(n, flat)).astype(np.uint8)
        for k in range(CLASSES):
            images[np.ix_(labels == k, np.arange(k * 30, k * 30 + 30))] += 150
        return images.reshape(n, *IMAGE), labels

    x_train, y_train = make(N_TRAIN)
    x_test, y_test = make(N_TEST)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


@pytest.fixture
def colour_npz(tmp_path) -> Path:
    path = tmp_path / "data" / "colour.npz"
    path.parent.mkdir()
    np.savez_compressed(path, **colour_arrays())
    return path


def write(tmp_path: Path, file: str, validation: str = "test") -> Path:
    path = tmp_path / "colour.toml"
    path.write_text(STUDY.format(file=file, validation=validation))
    return path


def test_a_study_of_another_shape_runs_reports_and_verifies(colour_npz, tmp_path, capsys, monkeypatch):
    study_path = write(tmp_path, "data/colour.npz")  # relative to the study file's folder
    study = load_study(study_path)
    name = study.dataset
    assert name.startswith("npz:") and name.endswith(":32x32x3:100:5000:1000")
    assert study.data_shape == hdata.DataShape(IMAGE, CLASSES, N_TRAIN, N_TEST)
    results, out = tmp_path / "results", tmp_path / "reports"
    monkeypatch.chdir(tmp_path / "data")  # the study's path, not the current folder, locates the file
    assert cli.main(["run", str(study_path), "--workers", "1", "--results", str(results)]) == 0
    runs = store.read_runs(results / "colour")
    assert len(runs) == 4 and set(runs["dataset_fingerprint"]) == {hdata.load_dataset(name).fingerprint}
    assert {json.loads(c).get("preprocessing", "scale") for c in runs["config"]} == {"scale", "standardise"}
    # the network is sized by the data: 3072 inputs, 100 outputs; standardised inputs learn (chance is 1%)
    config = study.trials[1].config
    state = engine.init_run(config, jnp.zeros(2, jnp.uint32), engine.Hyper(jnp.float32(0.01), jnp.float32(0.0)))
    assert state.params["Dense_0"]["kernel"].shape == (3072, 32) and state.params["Dense_1"]["kernel"].shape == (
        32,
        100,
    )
    learned = runs[runs["trial_id"] == "preprocessing=standardise"]["test_accuracy"]
    assert len(learned) == 2 and (learned > 0.5).all(), runs["test_accuracy"].tolist()
    assert engine.chunk_width(RunConfig(dataset=name, hidden=(32,), batch_size=100)) == 1
    assert cli.main(["report", str(study_path), "--results", str(results), "--out", str(out)]) == 0
    assert "preprocessing standardise" in (out / "colour" / "README.md").read_text()
    assert analysis_model.eval_images(study) == N_TEST  # the seed advice's binomial floor: this test set, not MNIST's
    # verify from another machine's point of view: the file moved, found by its content under --data-dir
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(colour_npz, moved / "renamed.npz")
    monkeypatch.setattr(npz_source, "_FOUND", {})
    capsys.readouterr()
    assert cli.main(["verify", str(results / "colour"), "--workers", "1", "--data-dir", str(moved)]) == 0
    assert "4 of 4 runs match bit for bit" in capsys.readouterr().out


def test_the_name_follows_the_content_not_the_path(colour_npz, tmp_path):
    first = load_study(write(tmp_path, str(colour_npz)))
    copy = tmp_path / "copy.npz"
    np.savez(copy, **colour_arrays())  # the same arrays, saved uncompressed elsewhere: the same runs
    assert load_study(write(tmp_path, str(copy))).runs(range(1))[0].run_id == first.runs(range(1))[0].run_id
    changed = colour_arrays()
    changed["y_test"][0] = (changed["y_test"][0] + 1) % CLASSES  # one label changed: other runs
    np.savez(copy, **changed)
    other = load_study(write(tmp_path, str(copy)))
    assert other.dataset != first.dataset and other.dataset.endswith(":32x32x3:100:5000:1000")
    assert {s.run_id for s in other.runs(range(1))}.isdisjoint({s.run_id for s in first.runs(range(1))})


def test_a_file_changed_after_the_study_was_loaded_is_refused(colour_npz, tmp_path):
    study = load_study(write(tmp_path, str(colour_npz)))
    changed = colour_arrays(seed=1)
    np.savez(colour_npz, **changed)
    with pytest.raises(DataError, match="changed: its runs are named npz:"):
        hdata.load_dataset(study.dataset)


def test_dataset_option_takes_an_npz_path(colour_npz, tmp_path, monkeypatch, write_study):
    from hpstudy import api

    monkeypatch.chdir(colour_npz.parent)
    study = api.variant(write_study(), dataset="npz:colour.npz")  # relative to the current folder
    assert study.name.startswith("small.npz-") and study.data_shape.classes == CLASSES
    assert all(t.config.dataset == study.dataset for t in study.trials) and not study.published
    with pytest.raises(StudyError, match="batch_size = 64 is larger than the 40 training images"):
        small = {k: v[:40] if k.endswith("train") else v for k, v in colour_arrays().items()}
        small["y_train"] = np.arange(40) % 4
        small["y_test"] = small["y_test"] % 4
        np.savez(colour_npz.parent / "small.npz", **small)
        api.variant(write_study(), dataset="npz:small.npz")


def test_holdout_is_checked_against_the_file_s_training_set(colour_npz, tmp_path):
    with pytest.raises(StudyError, match=r"study.validation = 'holdout:5000' is invalid; expected .* 0 < N < 5000"):
        load_study(write(tmp_path, str(colour_npz), validation="holdout:5000"))
    study = load_study(write(tmp_path, str(colour_npz), validation="holdout:500"))
    assert (
        study.data_shape.fit_images(study.validation) == 4500 and study.data_shape.eval_images(study.validation) == 500
    )


def _bad(arrays: dict, **change) -> dict:
    out = dict(arrays)
    for key, value in change.items():
        if value is None:
            out.pop(key)
        else:
            out[key] = value
    return out


SMALL = {
    "x_train": np.zeros((6, 4, 4), np.uint8),
    "y_train": np.array([0, 1, 2, 0, 1, 2]),
    "x_test": np.zeros((3, 4, 4), np.uint8),
    "y_test": np.array([0, 1, 2]),
}
BAD_FILES = {
    "wrong array names": (_bad(SMALL, x_train=None, X_train=SMALL["x_train"]), r"missing: x_train"),
    "image shapes that disagree": (
        _bad(SMALL, x_test=np.zeros((3, 4, 5), np.uint8)),
        r"x_train's images have shape \(4, 4\) but x_test's \(4, 5\)",
    ),
    "labels of another length": (_bad(SMALL, y_train=np.array([0, 1, 2])), r"y_train has shape \(3,\) for 6 images"),
    "one-hot labels": (_bad(SMALL, y_test=np.eye(3)), r"one-hot labels\? pass y.argmax\(axis=1\)"),
    "a test label out of range": (
        _bad(SMALL, y_test=np.array([0, 1, 3])),
        r"y_test holds values from 0 to 3; expected "
        r"labels of the training set's classes, 0 to 2",
    ),
    "negative labels": (_bad(SMALL, y_train=np.array([0, 1, -1, 0, 1, 2])), r"y_train holds values from -1 to 2"),
    "non-integer labels": (_bad(SMALL, y_train=np.array([0, 1, 2.5, 0, 1, 2])), r"y_train holds non-integer values"),
    "NaN labels": (_bad(SMALL, y_test=np.array([0, np.nan, 2])), r"y_test holds NaN \(1 of 3"),
    "NaN pixels": (_bad(SMALL, x_train=np.full((6, 4, 4), np.nan)), r"x_train holds NaN \(96 of 96"),
    "pixels in [0, 1]": (_bad(SMALL, x_train=np.full((6, 4, 4), 0.5)), r"multiply by 255 and round"),
    "pixels above 255": (
        _bad(SMALL, x_test=np.full((3, 4, 4), 256)),
        r"x_test holds values from 256 to 256; expected "
        r"pixel values, integers from 0 to 255",
    ),
    "one class": (_bad(SMALL, y_train=np.zeros(6, int), y_test=np.zeros(3, int)), r"one class only"),
    "text labels": (_bad(SMALL, y_train=np.array(list("abcabc"))), r"y_train has type <U1"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_are_named_with_what_is_wrong(case, tmp_path):
    arrays, message = BAD_FILES[case]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message) as info:
        load_study(write(tmp_path, str(path)))
    assert str(tmp_path / "colour.toml") in str(info.value) and str(path) in str(info.value)


def test_unreadable_and_missing_files(tmp_path):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="broken.npz: not a readable .npz file"):
        load_study(write(tmp_path, "broken.npz"))
    with pytest.raises(DataError, match="nowhere.npz: no such .npz file"):
        load_study(write(tmp_path, "nowhere.npz"))
    with pytest.raises(DataError, match="not found: no .npz file in --data-dir"):
        hdata.load_dataset("npz:0123456789abcdef:4x4:3:6:3", data_dir=tmp_path)


def test_list_marks_a_study_whose_npz_file_is_missing_and_lists_the_others(colour_npz, tmp_path, capsys):
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "colour.toml").write_text(STUDY.format(file=str(colour_npz), validation="test"))
    (studies / "gone.toml").write_text(STUDY.format(file="gone.npz", validation="test").replace('"colour"', '"gone"'))
    assert cli.main(["list", "--studies", str(studies), "--results", str(tmp_path / "r")]) == DataError.exit_code
    out, err = capsys.readouterr()
    assert "colour" in out and "gone" in out and "INVALID" in out
    assert "gone.npz: no such .npz file" in err
