"""Input preprocessing (`[model] preprocessing`): exact training-set statistics, the four modes, a late field
(the default keeps every run's identity), statistics from the images trained on only."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from hpstudy import data as hdata
from hpstudy import preprocessing
from hpstudy.config import PREPROCESSINGS, RunConfig, run_id
from hpstudy.errors import StudyError
from hpstudy.study import load_study
from hpstudy.training import engine


def images(n: int = 300, features: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, features)).astype(np.uint8)
    x[:, 0] = 0  # a constant feature (a black border pixel)
    return x


def test_statistics_are_exact_and_a_constant_feature_is_divided_by_one():
    x = images()
    stats = preprocessing.statistics(x)
    as_float = x.astype(np.float64)
    np.testing.assert_allclose(stats.feature_mean, as_float.mean(axis=0), rtol=1e-15, atol=0)
    np.testing.assert_allclose(stats.feature_std[1:], as_float.std(axis=0)[1:], rtol=1e-13)
    assert stats.feature_std[0] == 1.0 and stats.feature_mean[0] == 0.0
    np.testing.assert_allclose([stats.mean, stats.std], [as_float.mean(), as_float.std()], rtol=1e-13)
    # summed in blocks or at once: the same values, to the bit
    small_blocks = preprocessing.ROWS_PER_BLOCK
    try:
        preprocessing.ROWS_PER_BLOCK = 7
        again = preprocessing.statistics(x)
    finally:
        preprocessing.ROWS_PER_BLOCK = small_blocks
    assert all(np.array_equal(a, b) for a, b in zip(stats, again))


@pytest.mark.parametrize("mode", PREPROCESSINGS)
def test_each_mode_gives_the_inputs_it_promises(mode):
    x = images()
    stats = preprocessing.on_device(preprocessing.statistics(x))
    out = np.asarray(preprocessing.apply(mode, jnp.asarray(x), stats), np.float64)
    if mode == "scale":
        assert np.array_equal(out, np.asarray(jnp.asarray(x).astype(jnp.float32) / 255.0))  # the shipped runs' inputs
        assert out.min() >= 0 and out.max() <= 1
    elif mode == "scale_symmetric":
        assert out.min() == -1.0 and out.max() == 1.0
    elif mode == "standardise":
        np.testing.assert_allclose(out[:, 1:].mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(out[:, 1:].std(axis=0), 1, atol=1e-5)
        assert (out[:, 0] == 0).all()
    else:
        assert abs(out.mean()) < 1e-5 and abs(out.std() - 1) < 1e-5 and out[:, 1:].std(axis=0).std() > 0


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="preprocessing='minmax' is unknown"):
        preprocessing.apply(
            "minmax",
            jnp.zeros((1, 2), jnp.uint8),
            preprocessing.on_device(preprocessing.statistics(np.zeros((1, 2), np.uint8))),
        )


def test_the_default_keeps_run_identities_and_other_modes_are_other_runs():
    default = RunConfig()
    assert "preprocessing" not in default.canonical() and default.preprocessing == "scale"
    others = {run_id(RunConfig(preprocessing=mode), 0) for mode in PREPROCESSINGS}
    assert len(others) == len(PREPROCESSINGS) and run_id(default, 0) in others
    assert RunConfig(preprocessing="standardise").group_id() != default.group_id()  # another compiled program


def test_statistics_come_from_the_images_trained_on():
    dataset = hdata.synthetic(n_train=200, n_test=50, validation="holdout:40")
    device = engine.device_data(dataset)
    expected = preprocessing.statistics(dataset.train.images[:160])
    assert len(dataset.train) == 160
    np.testing.assert_array_equal(np.asarray(device.stats.feature_mean), expected.feature_mean.astype(np.float32))
    everything = preprocessing.statistics(np.concatenate([dataset.train.images, dataset.validation.images]))
    assert not np.array_equal(np.asarray(device.stats.feature_mean), everything.feature_mean.astype(np.float32))


def test_study_key_and_factor(write_study):
    study = load_study(
        write_study(**{'activation = "relu"': 'activation = "relu"\npreprocessing = "standardise_global"'})
    )
    assert {t.config.preprocessing for t in study.trials} == {"standardise_global"}
    grid = load_study(write_study('preprocessing = ["scale", "scale_symmetric"]'))
    assert [t.trial_id for t in grid.trials] == ["preprocessing=scale", "preprocessing=scale_symmetric"]
    with pytest.raises(
        StudyError,
        match="model.preprocessing = 'normalise' is invalid; expected an input preprocessing, "
        "one of scale, scale_symmetric, standardise, standardise_global",
    ):
        load_study(write_study(**{'activation = "relu"': 'activation = "relu"\npreprocessing = "normalise"'}))


def test_the_modes_no_other_test_trains_give_other_bits_and_the_same_bits_twice():
    # scale and standardise train (and verify bit for bit) in tests/test_npz.py; each mode compiles its own program
    from hpstudy.runs import RunSpec

    data = engine.device_data(hdata.synthetic(n_train=200, n_test=50))
    specs = [
        RunSpec(RunConfig(hidden=(8,), batch_size=50, epochs=1, preprocessing=mode), 0, mode)
        for mode in ("scale_symmetric", "standardise_global")
    ]

    def hashes() -> dict[str, str]:
        out: list = []
        engine.execute(specs, lambda _: data, out.extend)
        return {r.spec.trial_id: r.param_sha256 for r in out}

    first = hashes()
    assert len(first) == len(set(first.values())) == 2  # each mode feeds the network other inputs
    assert hashes() == first  # and the same inputs every time
