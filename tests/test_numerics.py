"""Numerics modes: settings, the CPU floor, the fingerprint, and no mixing of numeric environments in a store."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import FACTORS, run_hashes, synthetic_dataset

from hpstudy import store
from hpstudy.environment import differences, fingerprint, numeric_identity
from hpstudy.errors import EngineError, StoreError
from hpstudy.runner import run_study
from hpstudy.study import load_study
from hpstudy.training import numerics


def test_this_process_trains_under_the_default_mode_settings():
    """The test process applied the default mode (portable-v2) before JAX started, as every training process does."""
    assert numerics.DEFAULT_MODE == numerics.PORTABLE_V2 and numerics.applied_mode() == numerics.PORTABLE_V2
    assert numerics.settings_in_effect(numerics.PORTABLE_V2) and not numerics.settings_in_effect("portable")
    env = fingerprint()
    assert env["numerics"] == numerics.PORTABLE_V2 and env["isa_floor"] == "x86-64-v3"
    for flag in numerics.PORTABLE_V2_XLA_FLAGS:
        assert flag in env["xla_flags"].split()
    assert env["numerics_env"] == {"TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL": "false"}


def test_user_flags_kept_and_mode_flags_win():
    flags = numerics.xla_flags_for("portable", "--xla_dump_to=/tmp/x --xla_cpu_max_isa=AVX512")
    assert flags.split()[0] == "--xla_dump_to=/tmp/x"
    assert "--xla_cpu_max_isa=AVX512" not in flags and "--xla_cpu_max_isa=AVX2" in flags
    assert "--xla_cpu_max_isa" not in numerics.xla_flags_for("native", flags)


@pytest.mark.parametrize("mode", ["portable", "portable-v2"])
@pytest.mark.parametrize("missing", ["AVX2", "FMA3"])
def test_portable_modes_refuse_cpus_below_the_floor(monkeypatch, missing, mode):
    features = {name: True for name in numerics.FLOOR_FEATURES} | {missing: False}
    monkeypatch.setattr(numerics, "cpu_features", lambda: features)
    monkeypatch.setattr(numerics, "is_x86_64", lambda: True)
    with pytest.raises(EngineError, match=f"lacks {missing}, which numerics mode '{mode}' needs.*--numerics native"):
        numerics.check_floor(mode)
    numerics.check_floor("native")  # native mode trains anywhere, and says so in the fingerprint


@pytest.mark.parametrize("mode", ["portable", "portable-v2"])
def test_portable_modes_refuse_other_architectures(monkeypatch, mode):
    """portable-v2 too, although its products matched x86's on some emulated ARM cores: not on all
    (docs/reproducibility.md, "Numerics mode portable-v2")."""
    monkeypatch.setattr(numerics, "is_x86_64", lambda: False)
    with pytest.raises(EngineError, match=f"'{mode}' is defined for x86-64"):
        numerics.check_floor(mode)


def test_unknown_mode_is_named():
    with pytest.raises(
        EngineError, match="'fast' is unknown; expected one of portable-v2, portable, native, fixed-order"
    ):
        numerics.check_mode("fast")


def test_identity_ignores_cpu_model_in_portable_mode_only():
    a = dict(fingerprint("portable"), cpu_model="CPU A", isa=["avx2", "fma"])
    b = dict(a, cpu_model="CPU B", isa=["avx2", "fma", "avx512f"])
    assert differences(a, b) == []
    native_a, native_b = dict(a, numerics="native"), dict(b, numerics="native")
    assert [d[0] for d in differences(native_a, native_b)] == ["isa"]
    v2_a, v2_b = dict(a, numerics="portable-v2"), dict(b, numerics="portable-v2")
    assert differences(v2_a, v2_b) == [] and differences(a, v2_a) == [("numerics", "portable", "portable-v2")]
    assert numeric_identity(a)["packages.jax"] == "0.10.2"


def test_store_of_another_numeric_environment_is_refused(tmp_path, write_study):
    """A store made in the default mode refuses native-mode runs, naming the difference; --allow-mixed stores them."""
    path = write_study(FACTORS)
    run_hashes(path, range(1), tmp_path)
    study = load_study(path)
    before = sorted(p.read_bytes() for p in store.study_dir(tmp_path, study.name).glob("part-*.parquet"))
    with pytest.raises(
        StoreError, match=r"another numeric environment \(.*numerics: stored 'portable-v2', now 'native'"
    ):
        run_study(study, range(2), synthetic_dataset, tmp_path, progress=False, numerics_mode="native")
    after = sorted(p.read_bytes() for p in store.study_dir(tmp_path, study.name).glob("part-*.parquet"))
    assert after == before, "a refused run must not touch the store"
    report = run_study(
        study, range(2), synthetic_dataset, tmp_path, progress=False, numerics_mode="native", allow_mixed=True
    )
    assert report.computed == len(study.trials)
    envs = store.stored_environments(report.directory)
    assert sorted(json.loads(e)["numerics"] for e in envs) == ["native", "portable-v2"]


def test_seeds_added_without_a_mode_keep_the_stored_runs_mode(tmp_path, write_study, capsys, monkeypatch):
    """A store made in portable mode (the earlier default) gets its added seeds in portable mode when no mode is
    named, and the same bits as one call over all seeds; a fresh store gets the default mode; a named mode is
    still checked against the store."""
    from hpstudy import api
    from hpstudy import data as hdata
    from hpstudy.runner import resolve_mode, stored_mode

    monkeypatch.setattr(hdata, "load_dataset", lambda *args, **kwargs: synthetic_dataset())
    path = write_study(FACTORS)
    study = load_study(path)
    run = lambda seeds, folder, **kw: api.run(study, seeds, tmp_path / folder, workers=1, progress=False, **kw)  # noqa: E731
    run(1, "a", numerics_mode="portable")
    capsys.readouterr()
    added = run(2, "a")
    assert "numerics mode 'portable', the mode of the runs stored in" in capsys.readouterr().err
    whole = run(2, "b", numerics_mode="portable")
    hashes = lambda runs: dict(zip(runs["run_id"], runs["param_sha256"]))  # noqa: E731
    assert hashes(added) == hashes(whole) and len(hashes(added)) == 2 * len(study.trials)
    contents = store.read_contents(store.study_dir(tmp_path / "a", study.name), study.name)
    assert stored_mode(contents) == "portable" and resolve_mode(None, contents) == "portable"
    assert resolve_mode("native", contents) == "native"
    fresh = run(1, "c")
    assert set(fresh["environment"].map(lambda e: json.loads(e)["numerics"])) == {numerics.DEFAULT_MODE}
    with pytest.raises(StoreError, match="numerics: stored 'portable', now 'portable-v2'"):
        run(3, "a", numerics_mode=numerics.DEFAULT_MODE)


def test_fingerprint_imports_no_executor():
    """The fingerprint describes a process; it must not import the engine or the worker pool (no import circle)."""
    import subprocess
    import sys

    code = "import sys, hpstudy.environment, hpstudy.training.compilation; print(sorted(m for m in sys.modules if m.startswith('hpstudy')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "hpstudy.training.parallel" not in loaded and "hpstudy.training.engine" not in loaded, loaded


def test_two_single_worker_processes_claim_different_cores(tmp_path):
    """Two `hpstudy run --workers 1` at once: the second pins itself to a core the first does not hold."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if not numerics.CAN_PIN or os.cpu_count() < 2:
        pytest.skip("needs affinity control and two cores")
    # each child may use every core (this test process is pinned to one), and shares no lock folder with others
    child = (
        "import os, sys, time\nos.sched_setaffinity(0, range(os.cpu_count()))\n"
        "from hpstudy.training import numerics\nassert numerics.pin_one_core()\n"
        "print(sorted(os.sched_getaffinity(0))[0], flush=True)\ntime.sleep(float(sys.argv[1]))\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    first = subprocess.Popen([sys.executable, "-c", child, "60"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        core_first = int(first.stdout.readline())
        second = subprocess.run([sys.executable, "-c", child, "0"], capture_output=True, text=True, env=env, check=True)
        assert int(second.stdout) != core_first
    finally:
        first.kill()
        first.wait()
    # the first one's claim ends with it: a new process may take that core again
    third = subprocess.run([sys.executable, "-c", child, "0"], capture_output=True, text=True, env=env, check=True)
    assert int(third.stdout) == core_first


# Numerics mode portable-v2 (numerics.PORTABLE_V2_*, docs/reproducibility.md): each product YNNPACK takes must be
# one FMA chain over k per output element, from k = 0 up, which is what makes its bits independent of the vector
# width. Checked against NumPy (the float32 product is exact in float64, so each step rounds once, as an FMA does)
# in a fresh process with the mode's settings: forward products, and the weight-gradient products as
# model.TransposedGradDense gives them to YNNPACK (x^T materialised: 784 x batch @ batch x n, k = the batch).
CHAIN_CHILD = r"""
import json, os, sys
flags, env = json.loads(sys.argv[1])
os.environ["XLA_FLAGS"] = " ".join(flags)
os.environ.update(env)
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
import jax, numpy as np
rng = np.random.default_rng(1)
out = {}
for b, m, k, n in [(2, 32, 128, 10), (4, 10, 30, 10), (4, 10, 784, 30), (2, 784, 32, 128), (4, 784, 10, 30)]:
    x, w = rng.standard_normal((b, m, k), dtype=np.float32), rng.standard_normal((b, k, n), dtype=np.float32)
    f = jax.jit(jax.vmap(lambda a, c: a @ c))
    got = np.asarray(f(x, w))
    acc = np.zeros((b, m, n), np.float32)
    for i in range(k):
        acc = (x[:, :, i, None].astype(np.float64) * w[:, None, i] + acc).astype(np.float32)
    out[f"{b}x({m}x{k}@{k}x{n})"] = {"differing": int((got != acc).sum()),
                                     "ynn": "ynn" in f.lower(x, w).compile().as_text()}
print(json.dumps(out))
"""


def chain_check(flags: tuple[str, ...], env: dict) -> dict:
    child_env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", *numerics.PORTABLE_ENV)}
    proc = subprocess.run(
        [sys.executable, "-c", CHAIN_CHILD, json.dumps([list(flags), env])],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not numerics.is_x86_64(), reason="portable-v2 is defined for x86-64 only")
def test_portable_v2_dots_are_one_fma_chain_per_element():
    """Under portable-v2's settings YNNPACK computes the products (not Eigen), each element one FMA chain."""
    got = chain_check(numerics.PORTABLE_V2_XLA_FLAGS, numerics.PORTABLE_V2_ENV)
    assert got == {key: {"differing": 0, "ynn": True} for key in got} and len(got) == 5, got


@pytest.mark.skipif(not numerics.is_x86_64(), reason="portable-v2 is defined for x86-64 only")
def test_platform_dependent_math_on_gives_other_sums_on_avx512():
    """The check above can fail: with XLA's platform dependent math on (its default), an AVX-512 CPU's YNNPACK
    picks dot kernels that interleave k across lanes for these shapes, despite --xla_cpu_max_isa=AVX2."""
    if not numerics.cpu_features().get("AVX512F"):
        pytest.skip("no AVX-512 here: YNNPACK's AVX2 kernels may give the chain's bits with the setting on too")
    flags = tuple(f for f in numerics.PORTABLE_V2_XLA_FLAGS if "platform_dependent_math" not in f)
    got = chain_check(flags, numerics.PORTABLE_V2_ENV)
    assert all(v["ynn"] for v in got.values()), got
    assert got["2x(32x128@128x10)"]["differing"] > 0 and got["4x(10x30@30x10)"]["differing"] > 0, got


# A gradient step of the grid network (784-128-128-10, batch 32) vmapped over a chunk of 2, compiled in a fresh
# process of the given mode: which of its products YNNPACK takes ("ynn_fusion") and which stay plain dots
# (Eigen's kernel under portable settings).
STEP_CHILD = r"""
import json, sys
from hpstudy.training import numerics
assert numerics.prepare_process(sys.argv[1])
import jax, jax.numpy as jnp, optax
from hpstudy.training import model
net = model.MLP(hidden=(128, 128), activation="relu", init_scheme="keras")
x, y = jnp.ones((2, 32, 784)), jnp.zeros((2, 32), jnp.int32)
params = jax.vmap(lambda k: net.init(k, x[0]))(jax.random.split(jax.random.key(0)))
loss = lambda p, x, y: optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()
text = jax.jit(jax.vmap(jax.grad(loss))).lower(params, x, y).compile().as_text()
entry = text[text.index("ENTRY"):].splitlines()
print(json.dumps({"ynn": sum(l.strip().startswith("%ynn_fusion") for l in entry),
                  "dot": sum(" dot(" in l for l in entry)}))
"""


def step_products(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", *numerics.PORTABLE_ENV)}
    env["HPSTUDY_CACHE_DIR"] = "off"
    proc = subprocess.run(
        [sys.executable, "-c", STEP_CHILD, mode], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not numerics.is_x86_64(), reason="portable-v2 is defined for x86-64 only")
def test_portable_v2_step_has_every_product_on_ynnpack():
    """What makes portable-v2 fast: all 8 products of the step (3 forward, 3 weight gradients, 2 input gradients)
    are YNNPACK's (whose k-tile-1 kernels the chain test above checks), none left to Eigen's kernel; portable
    mode, the control, runs them all as plain dots."""
    assert step_products(numerics.PORTABLE_V2) == {"ynn": 8, "dot": 0}
    assert step_products("portable")["dot"] == 8


def test_transposed_grad_dense_is_nn_dense_with_another_weight_gradient_order():
    """portable-v2's layer: nn.Dense's parameter names and initial values, its forward values bit for bit, and
    its gradients equal to autodiff's up to rounding (the weight gradient's sum runs in another order)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from hpstudy.training import model

    k_init, b_init = model.initializers("keras", 784, 30, "relu")
    plain = nn.Dense(30, kernel_init=k_init, bias_init=b_init)
    ours = model.TransposedGradDense(30, k_init, b_init)
    x = jax.random.normal(jax.random.key(1), (10, 784))
    p_plain, p_ours = plain.init(jax.random.key(2), x), ours.init(jax.random.key(2), x)
    assert jax.tree.map(lambda a, b: bool((a == b).all()), p_plain, p_ours) == jax.tree.map(lambda a: True, p_plain)
    assert (plain.apply(p_plain, x) == ours.apply(p_ours, x)).all()

    def loss(module):
        return lambda p, x: jnp.sum(jnp.tanh(module.apply(p, x)) ** 2)

    g_plain = jax.grad(loss(plain), argnums=(0, 1))(p_plain, x)
    g_ours = jax.grad(loss(ours), argnums=(0, 1))(p_ours, x)
    for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_ours)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
