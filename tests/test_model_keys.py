"""The model keys of a study file (activations, initialisers, dropout, batch normalisation, losses,
drop_last): validation with clear errors, and run bits that stay independent of chunking."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from hpstudy.config import RunConfig
from hpstudy.errors import StudyError
from hpstudy.study import load_study
from hpstudy.training.engine import Hyper, finalize, init_run
from tests.conftest import run_hashes

# A pytorch-flavour study exercising every stateful model feature at once: batch statistics carried
# through the chunked training, input and per-layer dropout, drop_last batching, restore_best_weights.
MODEL_EXTRAS = {
    'flavour = "keras"': 'flavour = "pytorch"\nbatch_norm = "before_activation"\ninput_dropout = 0.1\n'
    "layer_dropout = [0.2, 0.0]",
    'activation = "relu"': 'activation = "gelu"',
    'optimizer = "adam_keras"': 'optimizer = "sgd"\ndrop_last = true',
    "patience = 0": "patience = 1\nrestore_best_weights = true",
}


def model_study(write_study, factors: str, name: str):
    """The small study with MODEL_EXTRAS applied."""
    return write_study(factors, name=name, **MODEL_EXTRAS)


def test_batch_norm_and_dropout_runs_keep_their_bits_alone_or_in_a_crowd(write_study, tmp_path):
    crowd_path = model_study(write_study, "learning_rate = [0.01, 0.1, 0.05]", "crowd.toml")
    study = load_study(crowd_path)
    cfg = study.trials[0].config
    assert (cfg.batch_norm, cfg.drop_last, cfg.input_dropout, cfg.init) == ("before_activation", True, 0.1, "pytorch")
    crowd = run_hashes(crowd_path, range(2), tmp_path / "crowd")  # 6 runs: a chunk of 4, then lanes refilled
    alone_path = model_study(write_study, "learning_rate = [0.05]", "alone.toml")
    alone = run_hashes(alone_path, range(1, 2), tmp_path / "alone")  # one run padded to a chunk of 4
    ((run_id, digest),) = alone.items()
    assert len(crowd) == 6 and crowd[run_id] == digest


def test_final_parameters_carry_the_running_statistics():
    """The stored parameter hash covers batch normalisation's running statistics."""
    config = RunConfig(flavour="pytorch", hidden=(8,), init="pytorch", optimizer="sgd", batch_norm="after_activation")
    state = init_run(config, jnp.asarray(np.array([0, 1], np.uint32)), Hyper(jnp.asarray(0.1), jnp.asarray(0.0)))
    assert set(state.batch_stats["BatchNorm_0"]) == {"mean", "var"}
    params, _, _ = finalize(config, state, None, val_is_test=True)
    assert params["batch_stats"] is state.batch_stats
    plain = init_run(
        RunConfig(hidden=(8,)), jnp.asarray(np.array([0, 1], np.uint32)), Hyper(jnp.asarray(0.1), jnp.asarray(0.0))
    )
    assert plain.batch_stats is None and "BatchNorm_0" not in plain.params


@pytest.mark.parametrize(
    "label, old, new, key, expected",
    [
        (
            "layer-dropout-length",
            'activation = "relu"',
            'activation = "relu"\nlayer_dropout = [0.1]',
            "model.layer_dropout",
            "one dropout rate per hidden layer",
        ),
        (
            "layer-dropout-and-dropout",
            'activation = "relu"',
            'activation = "relu"\nlayer_dropout = [0.1, 0.1]\ndropout = 0.2',
            "model.dropout",
            "0 when layer_dropout",
        ),
        (
            "layer-dropout-rate",
            'activation = "relu"',
            'activation = "relu"\nlayer_dropout = [0.1, 1.5]',
            "model.layer_dropout",
            "[0, 1)",
        ),
        (
            "leaky-without-slope",
            'flavour = "keras"\nhidden = [32, 32]\nactivation = "relu"',
            'flavour = "sklearn"\nhidden = [32, 32]\nactivation = "leaky_relu"',
            "model.negative_slope",
            "no default",
        ),
        (
            "batch-norm-nielsen",
            'flavour = "keras"',
            'flavour = "nielsen"\nbatch_norm = "before_activation"',
            "model.batch_norm",
            "keras' or pytorch's",
        ),
        (
            "batch-norm-place",
            'activation = "relu"',
            'activation = "relu"\nbatch_norm = "yes"',
            "model.batch_norm",
            "before_activation",
        ),
        (
            "label-smoothing",
            'activation = "relu"',
            'activation = "relu"\nlabel_smoothing = 1.5',
            "model.label_smoothing",
            "[0, 1]",
        ),
        (
            "negative-slope",
            'activation = "relu"',
            'activation = "relu"\nnegative_slope = -1',
            "model.negative_slope",
            ">= 0",
        ),
        (
            "drop-last",
            'optimizer = "adam_keras"',
            'optimizer = "adam_keras"\ndrop_last = "yes"',
            "training.drop_last",
            "true or false",
        ),
        ("init", 'activation = "relu"', 'activation = "relu"\ninit = "xavier"', "model.init", "glorot_uniform"),
        (
            "torch-batch-of-one",
            'validation = "test"\nseeds = 2\n\n[model]\nflavour = "keras"',
            'validation = "holdout:9999"\nseeds = 2\n\n[model]\nflavour = "pytorch"\nbatch_norm = "after_activation"',
            "training.batch_size",
            "one example",
        ),
    ],
)
def test_bad_model_keys_name_file_key_value_and_expectation(write_study, label, old, new, key, expected):
    # the pytorch case trains 60000 - 9999 = 50001 images at batch 10: its last batch has one example
    path = write_study("batch_size = [10]" if label == "torch-batch-of-one" else "learning_rate = [0.01]", **{old: new})
    with pytest.raises(StudyError) as err:
        load_study(path)
    message = str(err.value)
    assert str(path) in message and key in message and expected in message, message


def test_torch_batch_norm_with_drop_last_accepts_a_remainder_of_one(write_study):
    path = write_study(
        "batch_size = [10]",
        **{
            'validation = "test"\nseeds = 2\n\n[model]\nflavour = "keras"': 'validation = "holdout:9999"\nseeds = 2\n\n[model]\nflavour = "pytorch"\nbatch_norm = "after_activation"',
            'optimizer = "adam_keras"': 'optimizer = "sgd"\ndrop_last = true',
        },
    )
    assert load_study(path).trials[0].config.drop_last is True


def test_orthogonal_init_has_no_width_buckets(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(
        '[study]\nname = "r"\n[model]\ninit = "orthogonal"\n[design]\nkind = "random"\ntrials = 2\n'
        'width_buckets = [64]\n[design.space]\nhidden_layers = {type = "int", low = 1, high = 2}\n'
        'units = {type = "int", low = 8, high = 64}\n'
    )
    with pytest.raises(StudyError, match="no width buckets with init 'orthogonal'"):
        load_study(path)


def test_new_keys_stay_out_of_the_identity_at_their_defaults():
    base = RunConfig()
    assert "batch_norm" not in base.canonical() and "drop_last" not in base.canonical()
    assert RunConfig(batch_norm="after_activation").canonical() != base.canonical()
    text = RunConfig(layer_dropout=(0.1, 0.2), hidden=(4, 4)).canonical()
    assert RunConfig.from_canonical(text) == RunConfig(layer_dropout=(0.1, 0.2), hidden=(4, 4))
    assert RunConfig(layer_dropout=(0.1, 0.2), hidden=(4, 4)).as_flat_dict()["layer_dropout"] == [0.1, 0.2]


def test_masks_drawn_ahead_are_the_masks_the_layers_draw():
    """The engine draws each step's dropout masks ahead (`step_dropout_masks`), input and per-layer rates
    included; the model drawing them itself from the same key gives the same outputs (what the Keras
    fidelity test checks against Keras' own dropout)."""
    from hpstudy.training.engine import model_of, step_dropout_masks

    config = RunConfig(hidden=(16, 8), input_dropout=0.3, layer_dropout=(0.5, 0.25), batch_size=4)
    state = init_run(config, jnp.asarray(np.array([3, 4], np.uint32)), Hyper(jnp.asarray(0.1), jnp.asarray(0.0)))
    key = jnp.asarray(np.array([5, 6], np.uint32))
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 784)), jnp.float32)
    masks = step_dropout_masks(config, state.params, jnp.asarray(0.0), key)
    assert [m.shape for m in masks] == [(4, 16), (4, 8), (4, 784)]
    model = model_of(config)
    ahead = model.apply({"params": state.params}, x, 0.0, train=True, masks=masks, rngs={"dropout": key})
    inside = model.apply({"params": state.params}, x, 0.0, train=True, rngs={"dropout": key})
    np.testing.assert_array_equal(np.asarray(ahead), np.asarray(inside))
    plain = model.apply({"params": state.params}, x)
    assert not np.array_equal(np.asarray(plain), np.asarray(inside))
