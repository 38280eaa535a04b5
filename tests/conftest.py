"""Shared fixtures: a small synthetic dataset and small study files, so engine tests run in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpstudy.training import parallel

# Train on one core, as `hpstudy run` does (hpstudy/training/parallel.py): pinned before any test starts JAX.
parallel.prepare_process()  # portable numerics and one core, before JAX starts

from hpstudy import data as hdata  # noqa: E402
from hpstudy import store  # noqa: E402
from hpstudy.runner import run_study  # noqa: E402
from hpstudy.study import load_study  # noqa: E402

# 500 training images with batch 64 leaves a partial last batch (500 = 7 * 64 + 52), as Keras would use it.
# 32-wide layers at batch 64 make the chunk-width rule pick 4, so a dozen runs already span several chunks.
SMALL_STUDY = """
[study]
name = "small"
validation = "test"
seeds = 2

[model]
flavour = "keras"
hidden = [32, 32]
activation = "relu"

[training]
optimizer = "adam_keras"
epochs = 3

[training.early_stopping]
monitor = "val_loss"
patience = 0

[design]
kind = "grid"

[design.factors]
{factors}
"""
FACTORS = "learning_rate = [0.001, 0.01]\nbatch_size = [64]\ndropout = [0.0, 0.2]"
FACTORS_PERMUTED = "dropout = [0.2, 0.0]\nbatch_size = [64]\nlearning_rate = [0.01, 0.001]"


def synthetic_dataset():
    """The dataset every engine test trains on."""
    return hdata.synthetic(n_train=500, n_test=200)


@pytest.fixture
def write_study(tmp_path: Path):
    """Write a small study file with the given factors and return its path."""

    def write(factors: str = FACTORS, name: str = "small.toml", **replace: str) -> Path:
        text = SMALL_STUDY.format(factors=factors)
        for old, new in replace.items():
            text = text.replace(old, new)
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def run_hashes(study_path: Path, seeds: range, results: Path) -> dict[str, str]:
    """Run a study on synthetic data and return {run_id: parameter hash} of every stored run."""
    study = load_study(study_path)
    report = run_study(study, seeds, synthetic_dataset, results, progress=False)
    runs = store.read_runs(report.directory)
    return dict(zip(runs["run_id"], runs["param_sha256"]))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST folder ($HPSTUDY_DATA_DIR, which CI sets, or the user cache); skip where absent."""
    for folder in hdata.candidate_dirs(None):
        if all((folder / name).is_file() for name in hdata.MNIST_FILES):
            return folder
    pytest.skip(f"real MNIST not available: set {hdata.ENV_DATA_DIR} to a folder holding the four files")
