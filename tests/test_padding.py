"""Width buckets for random designs: trials of different widths share a compiled program, their extra
units masked. Grid and sweep studies (and random studies without buckets) keep their programs and ids."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow.parquet as pq
import pytest

from hpstudy import store
from hpstudy.config import RunConfig, run_id
from hpstudy.errors import StudyError
from hpstudy.runner import run_study
from hpstudy.study import load_study
from hpstudy.training import engine
from tests.conftest import synthetic_dataset

RANDOM = """
[study]
name = "padded"
validation = "test"
seeds = 2

[model]
flavour = "keras"
activation = "{activation}"

[training]
epochs = 2
batch_size = 64

[design]
kind = "random"
trials = {trials}
sampler_seed = 3
{buckets}

[design.space]
learning_rate = {{ type = "float", low = 1e-3, high = 1e-2, log = true }}
hidden_layers = {{ type = "int", low = 1, high = 2 }}
units = {{ type = "int", low = 8, high = 40, step = 8 }}
"""


def write(
    tmp_path: Path,
    name: str = "padded.toml",
    trials: int = 6,
    buckets: str = "width_buckets = [16, 48]",
    activation: str = "relu",
) -> Path:
    path = tmp_path / name
    path.write_text(RANDOM.format(trials=trials, buckets=buckets, activation=activation))
    return path


def test_shipped_studies_keep_their_run_ids_and_programs():
    """Every run stored with the shipped reports still has the id its configuration gives now, and no
    shipped study is padded: their programs (compile groups) are those of before."""
    for study_path in sorted(Path("studies").glob("*.toml")):
        study = load_study(study_path)
        assert all(t.config.pad_hidden is None and "pad_hidden" not in t.config.canonical() for t in study.trials)
        assert all(t.config.static().hidden == t.config.hidden for t in study.trials)
        parts = sorted(Path("reports/_runs", study.name).glob("part-*.parquet"))
        if not parts:
            continue
        stored = pq.read_table(parts[0], columns=["config", "seed", "run_id"]).to_pylist()
        for row in stored:
            assert run_id(RunConfig.from_canonical(row["config"]), row["seed"]) == row["run_id"]


def test_buckets_let_trials_of_different_widths_share_programs(tmp_path):
    plain = load_study(write(tmp_path, "plain.toml", buckets=""))
    padded = load_study(write(tmp_path))
    widths = {t.config.hidden for t in plain.trials}
    assert len(widths) == 5  # six trials, five shapes (one compile group each)
    assert len(engine.compile_groups(plain.runs(range(1)))) == 5
    assert len(engine.compile_groups(padded.runs(range(1)))) == 4  # (32,) and (40,) share (48,)
    for p, t in zip(padded.trials, plain.trials):
        assert p.config.hidden == t.config.hidden  # the real widths are kept ...
        assert all(b in (16, 48) and b >= w for b, w in zip(p.config.pad_hidden, p.config.hidden))  # ... bucketed
        assert p.config.static().hidden == p.config.pad_hidden
        assert run_id(p.config, 0) != run_id(t.config, 0)  # the bucket is part of the run's identity


def test_padded_run_bits_do_not_depend_on_batch_mates_and_the_bucket_is_recorded(tmp_path):
    study = load_study(write(tmp_path))
    groups = engine.compile_groups(study.runs(range(2)))
    shared = max(groups.values(), key=lambda g: len({s.config.hidden for s in g}))
    assert len({s.config.hidden for s in shared}) > 1, "a program shared by trials of different widths"
    crowd = run_study(study, range(2), synthetic_dataset, tmp_path / "crowd", progress=False)
    runs = store.read_runs(crowd.directory)
    hashes = dict(zip(runs["run_id"], runs["param_sha256"]))
    assert len(hashes) == 12
    # the same run trained alone (padded lanes are copies of it) has the same bits
    alone = shared[-1]
    results = []
    engine.execute([alone], lambda _: engine.device_data(synthetic_dataset()), results.extend)
    assert results[0].param_sha256 == hashes[alone.run_id]
    row = runs[runs["run_id"] == alone.run_id].iloc[0]
    assert json.loads(row["hp.pad_hidden"]) == list(alone.config.pad_hidden)
    assert json.loads(row["config"])["pad_hidden"] == list(alone.config.pad_hidden)


@pytest.mark.parametrize("activation,init", [("relu", "keras"), ("tanh", "sklearn")])
def test_masked_units_start_and_stay_zero_and_the_real_ones_have_real_fan_bounds(activation, init):
    config = RunConfig(
        hidden=(12, 20),
        pad_hidden=(32, 32),
        activation=activation,
        init=init,
        batch_size=64,
        epochs=2,
        learning_rate=0.01,
    )
    static = config.static()
    data = engine.device_data(synthetic_dataset())
    hp = engine.Hyper(jnp.asarray(0.01), jnp.asarray(0.0), jnp.asarray(config.hidden, jnp.int32))
    state = engine.init_run(static, jnp.asarray(engine.root_key(config, 0)), hp)
    k0 = np.asarray(state.params["Dense_0"]["kernel"])
    bound = np.sqrt(6.0 / (784 + 12))  # Glorot, and scikit-learn for tanh: sqrt(6 / (fan_in + fan_out))
    assert 0.9 * bound < np.abs(k0[:, :12]).max() <= bound * (1 + 1e-6)
    for epoch in range(2):
        state, _ = jax.jit(engine.train_epoch, static_argnums=0)(static, state, hp, data, jnp.asarray(epoch))
    p = jax.tree.map(np.asarray, state.params)
    assert not p["Dense_0"]["kernel"][:, 12:].any() and not p["Dense_0"]["bias"][12:].any()
    assert not p["Dense_1"]["kernel"][12:, :].any() and not p["Dense_1"]["kernel"][:, 20:].any()
    assert not p["Dense_1"]["bias"][20:].any() and not p["Dense_2"]["kernel"][20:, :].any()
    assert p["Dense_1"]["kernel"][:12, :20].any()  # the real network trained
    real = engine.real_params(p, config.hidden)
    assert real["Dense_1"]["kernel"].shape == (12, 20) and real["Dense_2"]["kernel"].shape == (20, 10)


def test_bad_buckets_are_clear_errors(tmp_path):
    with pytest.raises(StudyError, match="design.width_buckets.*buckets up to at least 40"):
        load_study(write(tmp_path, buckets="width_buckets = [16, 32]"))
    with pytest.raises(StudyError, match="no width buckets with activation 'sigmoid'"):
        load_study(write(tmp_path, activation="sigmoid"))
    with pytest.raises(StudyError, match="increasing integer widths"):
        load_study(write(tmp_path, buckets="width_buckets = [48, 16]"))
    grid = (
        Path("studies/naragundkar2024_grid.toml")
        .read_text()
        .replace('kind = "grid"', 'kind = "grid"\nwidth_buckets = [256]')
    )
    (tmp_path / "grid.toml").write_text(grid)
    with pytest.raises(StudyError, match="no 'width_buckets' in a 'grid' design"):
        load_study(tmp_path / "grid.toml")


def test_padding_is_recorded_with_identity_not_in_unpadded_records():
    config = RunConfig(hidden=(12,))
    assert "pad_hidden" not in config.as_flat_dict()
    padded = dataclasses.replace(config, pad_hidden=(16,))
    assert padded.as_flat_dict()["pad_hidden"] == [16]
    assert RunConfig.from_canonical(padded.canonical()) == padded
