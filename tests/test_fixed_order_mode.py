"""Numerics mode "fixed-order" (hpstudy/training/numerics.py, model.py): a short study's runs store the same
parameter hashes and every stored value whatever XLA:CPU's kernel settings, and they do not depend on the
runs beside them in a chunk.

Each study trains in a fresh process (tests/cross_cpu_child.py), as the settings must be in place before JAX
starts: XLA's defaults (YNNPACK fusions, oneDNN's sgemm, 512-bit code on an AVX-512 host), portable mode's
settings, the mode's own, and the mode's own with a thread pool of every core instead of one pinned core (as
on a Mac). The controls: portable mode's runs of the same study have other parameters (the mode changes the
program), and on an AVX-512 host native mode's runs (plain code under XLA's defaults) differ from portable
mode's (the settings compared here do change plain code's bits, so the comparison can fail).
The same study under qemu-aarch64: tests/test_aarch64.py.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpstudy import environment
from hpstudy.errors import EngineError
from hpstudy.training import fixed_order, model, numerics

CHILD = Path(__file__).with_name("cross_cpu_child.py")
# The smallest study that exercises real steps of both optimizers with dropout: 784-16-10, 2 epochs of 10
# steps at batch 32 (320 synthetic images, 128 test images), Keras' Adam and SGD.
STUDY = """
[study]
name = "fixed_order_mode"
validation = "test"
seeds = 1
[model]
flavour = "keras"
hidden = [16]
activation = "relu"
[training]
epochs = 2
[design]
kind = "grid"
[design.factors]
optimizer = ["adam_keras", "sgd"]
learning_rate = [0.01]
batch_size = [32]
dropout = [0.2]
"""
DATA = "synthetic:320:128"
SETTINGS = {
    "xla_defaults": [[], {}],
    "portable_settings": [list(numerics.PORTABLE_XLA_FLAGS), dict(numerics.PORTABLE_ENV)],
}
# What the parent test process carries (conftest applies portable mode); a child starts from none of it.
STRIPPED = ("XLA_FLAGS", "TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL", "HPSTUDY_CHILD_ALL_CORES")


def study_file(tmp: Path, seeds: int = 1) -> Path:
    path = tmp / f"fixed_order_mode_{seeds}.toml"
    path.write_text(STUDY.replace("seeds = 1", f"seeds = {seeds}"))
    return path


def train(tmp: Path, label: str, mode: str, study: Path, settings: list | None = None, all_cores: bool = False):
    """Run the child in a fresh process; its JSON ({"features", "runs": {run_id: {field: value}}})."""
    command = [sys.executable, str(CHILD), mode, str(study), str(tmp / label), DATA]
    if settings is not None:
        command.append(json.dumps(settings))
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED}
    env["HPSTUDY_CACHE_DIR"] = "off"  # compiled here, under these settings: never a cached program
    if all_cores:
        env["HPSTUDY_CHILD_ALL_CORES"] = "1"
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def differing(a: dict, b: dict) -> dict:
    """{run_id: {field: (a's, b's)}} for every stored value that differs (every run must be on both sides)."""
    assert set(a["runs"]) == set(b["runs"]) and a["runs"], (sorted(a["runs"]), sorted(b["runs"]))
    out = {}
    for run_id, values in a["runs"].items():
        diff = {f: (v, b["runs"][run_id][f]) for f, v in values.items() if b["runs"][run_id][f] != v}
        if diff:
            out[run_id] = diff
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("fixed_order_mode")
    study = study_file(tmp)
    got = {"own": train(tmp, "own", numerics.FIXED_ORDER, study)}
    for name, settings in SETTINGS.items():
        got[name] = train(tmp, name, numerics.FIXED_ORDER, study, settings)
    got["own_all_cores"] = train(tmp, "own_all_cores", numerics.FIXED_ORDER, study, all_cores=True)
    got["portable_mode"] = train(tmp, "portable_mode", "portable", study)
    got["native_mode"] = train(tmp, "native_mode", "native", study)  # XLA's defaults, plain code
    got["own_3_seeds"] = train(tmp, "own_3_seeds", numerics.FIXED_ORDER, study_file(tmp, seeds=3))
    return got


def test_fixed_order_mode_same_bits_under_every_xla_setting(trained):
    """Every stored value of both runs is equal under XLA's defaults, portable's settings, the mode's own, and
    a thread pool of every core; portable mode's runs (plain XLA dots and reductions) have other parameters."""
    for name in ("xla_defaults", "portable_settings", "own_all_cores"):
        assert not differing(trained["own"], trained[name]), (name, differing(trained["own"], trained[name]))
    own = {v["param_sha256"] for v in trained["own"]["runs"].values()}
    assert len(own) == 2
    assert own.isdisjoint(v["param_sha256"] for v in trained["portable_mode"]["runs"].values())
    if numerics.cpu_features().get("AVX512F"):  # there XLA's defaults choose other kernels: the plain code differs
        assert differing(trained["portable_mode"], trained["native_mode"])
    # the runs really trained: finite losses that fell
    for values in trained["own"]["runs"].values():
        assert np.all(np.isfinite(values["train_loss"])) and values["train_loss"][-1] < values["train_loss"][0]


def test_fixed_order_mode_runs_do_not_depend_on_their_chunk(trained):
    """Seed 0 of each configuration alone in its chunk (1 seed) and beside seeds 1 and 2 (3 seeds, one chunk
    of width 4): the same parameters."""
    alone, beside = trained["own"]["runs"], trained["own_3_seeds"]["runs"]
    assert len(beside) == 6 and set(alone) <= set(beside)
    for run_id, values in alone.items():
        assert beside[run_id]["param_sha256"] == values["param_sha256"], run_id


def test_fixed_order_mode_settings_floor_and_identity(monkeypatch):
    assert numerics.FIXED_ORDER in numerics.MODES
    flags, env = numerics.settings(numerics.FIXED_ORDER)
    assert "--xla_cpu_experimental_ynn_fusion_type=" in flags and env == {}
    assert not any(f.startswith("--xla_cpu_max_isa") for f in flags)
    assert numerics.isa_floor(numerics.FIXED_ORDER) == "fma" and numerics.isa_floor("native") == "host"
    # allowed on aarch64, where portable mode refuses
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    numerics.check_floor(numerics.FIXED_ORDER)
    with pytest.raises(EngineError, match="aarch64"):
        numerics.check_floor("portable")
    monkeypatch.setattr(platform, "machine", lambda: "riscv64")
    with pytest.raises(EngineError, match="riscv64"):
        numerics.check_floor(numerics.FIXED_ORDER)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(numerics, "cpu_features", lambda: {"AVX": True, "FMA3": False})
    with pytest.raises(EngineError, match="FMA3"):
        numerics.check_floor(numerics.FIXED_ORDER)
    # a fixed-order run's identity leaves out the CPU's ISA and the cores per run (a Mac records all its cores)
    base = {"numerics": numerics.FIXED_ORDER, "isa": ["avx2", "fma"], "cores_per_run": 1, "packages": {}}
    other = {**base, "isa": ["asimd"], "cores_per_run": 10}
    assert environment.differences(base, other) == []
    assert environment.differences({**base, "numerics": "native"}, {**other, "numerics": "native"})


def test_fixed_order_mode_refuses_what_it_does_not_cover():
    from hpstudy.config import RunConfig

    config = RunConfig(hidden=(16,), batch_norm="before_activation")
    with pytest.raises(EngineError, match="batch_norm='before_activation'.*fixed-order"):
        model.check_fixed_order(config)
    model.check_fixed_order(RunConfig(hidden=(16,)))


def test_fixed_order_layers_and_losses_match_the_plain_ones():
    """The same parameter names and initial values as nn.Dense (so a run starts where it would in another mode),
    and values and gradients equal to the plain code's within rounding."""
    plain = model.MLP(hidden=(16,), activation="relu", init_scheme="keras", fixed_order=False)
    fixed = plain.clone(fixed_order=True)
    x = jnp.asarray(np.random.default_rng(0).random((8, 784), dtype=np.float32))
    y = jnp.arange(8) % 10
    p_plain = plain.init(jax.random.key(1), x)
    p_fixed = fixed.init(jax.random.key(1), x)
    assert jax.tree.structure(p_plain) == jax.tree.structure(p_fixed)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p_plain), jax.tree.leaves(p_fixed)))
    mask = jnp.ones(8)
    for kind in ("softmax_cross_entropy", "sigmoid_quadratic", "mse", "softmax_mse"):
        for smoothing in (0.0, 0.1) if kind == "softmax_cross_entropy" else (0.0,):

            def loss(p, net, fixed_flag, kind=kind, smoothing=smoothing):
                out = net.apply(p, x)
                return model.batch_loss_sum(kind, out, y, mask, smoothing, fixed=fixed_flag)

            value_p, grad_p = jax.value_and_grad(loss)(p_plain, plain, False)
            value_f, grad_f = jax.value_and_grad(loss)(p_plain, fixed, True)
            np.testing.assert_allclose(value_f, value_p, rtol=1e-5)
            for a, b in zip(jax.tree.leaves(grad_f), jax.tree.leaves(grad_p)):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    out = fixed.apply(p_plain, x)
    assert model.correct_count(out, y, mask, fixed=True) == model.correct_count(out, y, mask, fixed=False)
    np.testing.assert_allclose(fixed_order.log_softmax(out), jax.nn.log_softmax(out), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        model.l2_penalty(p_plain["params"], fixed=True), model.l2_penalty(p_plain["params"], fixed=False), rtol=1e-6
    )


def test_fixed_order_refusal_comes_before_any_run_trains(write_study, tmp_path):
    """A study with one run fixed-order mode cannot train is refused when `hpstudy run` starts, before the
    runs it could train are trained and stored (the engine alone would refuse only at that run's chunk)."""
    from conftest import synthetic_dataset

    from hpstudy.runner import run_study
    from hpstudy.study import load_study

    study = load_study(
        write_study(
            'learning_rate = [0.01]\nbatch_size = [64]\ndropout = [0.0]\nbatch_norm = ["none", "before_activation"]'
        )
    )
    loaded = []
    with pytest.raises(EngineError, match="batch_norm='before_activation'.*fixed-order"):
        run_study(
            study,
            range(1),
            lambda: loaded.append(1) or synthetic_dataset(),
            tmp_path / "results",
            progress=False,
            numerics_mode=numerics.FIXED_ORDER,
        )
    assert not loaded and not (tmp_path / "results" / "small").exists()
