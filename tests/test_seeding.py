"""Seeding: independent keys by default (every existing run keeps its identity and bits), common random
numbers when a study asks for them (`[study] seeding = "common"`)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpstudy import store
from hpstudy.config import RunConfig, key_digest, run_digest, run_id
from hpstudy.errors import StudyError
from hpstudy.study import load_study
from hpstudy.training.engine import Hyper, init_run, root_key

ROOT = Path(__file__).resolve().parent.parent


def _init(config: RunConfig, seed: int):
    """The initial state of one run, as the engine builds it (its root key, then init_run)."""
    hp = Hyper(jnp.asarray(config.learning_rate, jnp.float32), jnp.asarray(config.dropout, jnp.float32))
    return init_run(config, jnp.asarray(root_key(config, seed)), hp)


def _same_tree(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def _two_lr_trials(write_study, seeding: str | None):
    extra = f'seeds = 2\nseeding = "{seeding}"' if seeding else "seeds = 2"
    path = write_study("learning_rate = [0.001, 0.01]\nbatch_size = [64]\ndropout = [0.2]", **{"seeds = 2": extra})
    study = load_study(path)
    assert len(study.trials) == 2
    a, b = (t.config for t in study.trials)
    assert a.learning_rate != b.learning_rate
    return study, a, b


def test_common_seeding_starts_configurations_that_differ_in_lr_from_identical_parameters(write_study):
    study, a, b = _two_lr_trials(write_study, "common")
    assert study.seeding == "common" and a.seeding == b.seeding == "common"
    sa, sb = _init(a, 3), _init(b, 3)
    assert _same_tree(sa.params, sb.params), "same seed index, same initial parameters"
    assert np.array_equal(sa.data_key, sb.data_key) and np.array_equal(sa.dropout_key, sb.dropout_key)
    assert not _same_tree(sa.params, _init(a, 4).params), "another seed index draws other parameters"
    assert run_id(a, 3) != run_id(b, 3), "the runs stay distinct runs in the store"


def test_independent_seeding_is_the_default_and_shares_nothing(write_study):
    study, a, b = _two_lr_trials(write_study, None)
    assert study.seeding == "independent" and a.seeding == "independent"
    assert not _same_tree(_init(a, 3).params, _init(b, 3).params)
    assert key_digest(a, 3) == run_digest(a, 3)


def test_common_runs_are_other_runs_than_independent_ones(write_study):
    _, a, _ = _two_lr_trials(write_study, "common")
    _, ind, _ = _two_lr_trials(write_study, "independent")
    assert ind.canonical() == RunConfig(**{**ind.__dict__, "seeding": "independent"}).canonical()
    assert '"seeding"' not in ind.canonical() and '"seeding":"common"' in a.canonical()
    assert run_id(a, 0) != run_id(ind, 0)


def test_default_seeding_keeps_the_shipped_runs_identity():
    """The stored runs in reports/_runs were made before seeding existed: their run ids are still those of
    the study file's configurations, so their keys (and bits) are unchanged."""
    study = load_study(ROOT / "studies" / "naragundkar2024_grid.toml")
    folder = store.study_dir(ROOT / "reports" / "_runs", study.name)
    if not any(folder.glob("part-*.parquet")):
        pytest.skip(f"no shipped runs in {folder}")
    stored = set(store.read_runs(folder)["run_id"])
    expected = {run_id(t.config, s) for t in study.trials for s in range(5)}
    assert expected <= stored


def test_bad_seeding_is_a_clear_error(write_study):
    with pytest.raises(StudyError, match=r"study\.seeding.*'independent', 'common'"):
        _two_lr_trials(write_study, "shared")


def test_a_common_seeding_study_trains_and_stores_its_own_runs(write_study, tmp_path):
    """The engine trains common-seeded runs like any others (keys are its only difference), reproducibly."""
    from tests.conftest import run_hashes

    path = write_study(
        "learning_rate = [0.001, 0.01]\nbatch_size = [64]\ndropout = [0.2]",
        **{"seeds = 2": 'seeds = 2\nseeding = "common"'},
    )
    first = run_hashes(path, range(2), tmp_path / "a")
    assert len(first) == 4 and first == run_hashes(path, range(2), tmp_path / "b")
    independent = run_hashes(
        write_study("learning_rate = [0.001, 0.01]\nbatch_size = [64]\ndropout = [0.2]", name="ind.toml"),
        range(2),
        tmp_path / "c",
    )
    assert not set(first) & set(independent) and not set(first.values()) & set(independent.values())
