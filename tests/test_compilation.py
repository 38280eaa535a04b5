"""Speed changes in how programs are compiled must not change a single bit (hpstudy/training/compilation.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.interpreters import mlir
from jax._src.random import threefry2x32 as tf

from hpstudy.training import compilation, engine  # noqa: F401  (importing the engine installs the unrolled lowering)


def draws(seed: int):
    """Every kind of draw the engine makes: split, fold_in, permutation, bernoulli, uniform, normal."""
    key = jax.random.key_data(jax.random.PRNGKey(seed))
    a, b, c = jax.random.split(key, 3)
    folded = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(b, jnp.arange(5))
    return (
        jax.random.permutation(jax.random.fold_in(a, 3), 1000),
        jax.random.bernoulli(folded[2], 0.8, (32, 128)),
        jax.random.uniform(c, (7, 9), minval=-0.5, maxval=0.5),
        jax.random.normal(c, (5, 3)),
        folded,
    )


def test_unrolled_threefry_gives_the_same_bits_as_jax_default_cpu_lowering():
    assert compilation.use_unrolled_threefry()
    unrolled = jax.jit(draws, static_argnums=0)
    got = [np.asarray(x) for x in unrolled(11)]
    # lower the same function again with JAX's own CPU rule (a rolled fori_loop), then restore ours
    mlir.register_lowering(tf.threefry2x32_p, tf._threefry2x32_cpu_lowering_rule, platform="cpu")
    try:
        rolled = jax.jit(lambda s: draws(s), static_argnums=0)
        text = rolled.lower(11).as_text()
        assert "while" in text  # really the rolled lowering
        want = [np.asarray(x) for x in rolled(11)]
    finally:
        compilation._state["threefry"] = False
        compilation.use_unrolled_threefry()
    assert "while" not in jax.jit(draws, static_argnums=0).lower(12).as_text()
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and np.array_equal(g, w)


CHILD = textwrap.dedent(
    """
    import json, sys
    import jax
    hits = []
    jax.monitoring.register_event_listener(lambda name, **kw: hits.append(name) if name.endswith("cache_hits") else None)
    from hpstudy.training.compilation import enable_persistent_cache
    from hpstudy.training import engine
    from hpstudy.config import RunConfig
    from tests.conftest import synthetic_dataset
    enable_persistent_cache(sys.argv[1])
    device = engine.device_data(synthetic_dataset())
    config = RunConfig(hidden=(16,), dropout=0.2, batch_size=64, epochs=2)
    out = []
    engine.execute([engine.RunSpec(config, s) for s in range(2)], lambda _: device, out.extend)
    print(json.dumps({"hashes": [r.param_sha256 for r in out], "loss": [r.test_loss for r in out], "hits": len(hits)}))
    """
)


def test_second_process_loads_programs_from_the_persistent_cache_with_the_same_bits(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    runs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, env=env, check=True
        )
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert second["hits"] >= 3  # init, epoch and finalize programs came from the cache
    assert first["hashes"] == second["hashes"] and first["loss"] == second["loss"]
    assert any(p.is_file() for p in tmp_path.rglob("*"))
