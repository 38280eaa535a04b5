"""Fixed-order products and sums (hpstudy/training/fixed_order.py): the same bits whatever XLA:CPU's kernels.

Each setting below makes XLA:CPU choose other kernels or another vector width on this machine: YNNPACK
fusions and oneDNN's sgemm (XLA's defaults, which dispatch by CPU), Eigen's own kernel, 256-bit vectors,
and a thread pool of every core instead of one pinned core.
A plain XLA dot gives other bits under them (so the comparison can fail); the fixed-order versions must
not. On an AVX-512 host this covers AVX2 against AVX-512 code; aarch64 was checked by hand under qemu
(docs/reproducibility.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpstudy.training import fixed_order, numerics

CHILD = Path(__file__).with_name("fixed_order_child.py")
YNN_OFF = "--xla_cpu_experimental_ynn_fusion_type="
SETTINGS = {
    "xla_defaults": ("", {}),
    "xla_defaults_all_cores": ("", {"FIXED_ORDER_ALL_CORES": "1"}),  # XLA's thread pool of every core
    "ynn_off_avx512": (YNN_OFF, {}),
    "portable": (f"{YNN_OFF} --xla_cpu_max_isa=AVX2", {"TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL": "false"}),
}


def hashes(flags: str, extra: dict) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("XLA_FLAGS", "TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL", "FIXED_ORDER_ALL_CORES")
    }
    env.update(extra, XLA_FLAGS=flags)
    proc = subprocess.run(
        [sys.executable, str(CHILD), fixed_order.__file__], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_fixed_order_same_bits_under_every_kernel_choice():
    got = {name: hashes(*s) for name, s in SETTINGS.items()}
    for key in got["portable"]:
        if key != "plain_dot":
            assert len({got[name][key] for name in got}) == 1, (key, got)
    if numerics.cpu_features().get("AVX512F"):  # there the plain dot's kernels differ between the settings
        assert len({got[name]["plain_dot"] for name in got}) > 1, got


def _chain_reference(a, b):
    """NumPy: out[m, n] = one chain over k in order, acc = round(a[0] * b[0]), then acc = fma(a[k], b[k], acc)
    (each multiply-add rounded once, as an FMA does: the float32 product is exact in float64)."""
    import numpy as np

    acc = (a[0, :, None] * b[0, None, :]).astype(np.float32)
    for k in range(1, a.shape[0]):
        acc = (a[k, :, None].astype(np.float64) * b[k, None, :] + acc).astype(np.float32)
    return acc


def test_fixed_order_matches_its_documented_order():
    """dot and its two gradient products: every output element one k-sequential FMA chain (NumPy reference),
    whatever the block size (which sets only how the chain is cut into loop iterations); k = 40 runs the loop
    and the unrolled tail, k = 20 the straight chain. sum: chains within blocks of SUM_BLOCK, then the blocks'
    sums in order."""
    import jax
    import numpy as np

    rng = np.random.default_rng(1)
    for k in (40, 20, 1):
        x = rng.standard_normal((5, k), dtype=np.float32)
        w = rng.standard_normal((k, 3), dtype=np.float32)
        g = rng.standard_normal((5, 3), dtype=np.float32)
        expected = _chain_reference(x.T, w)
        for block in (fixed_order.BLOCK, 4, 7):
            got = np.asarray(jax.jit(fixed_order.dot, static_argnums=2)(x, w, block))
            assert np.array_equal(got, expected), (k, block, np.abs(got - expected).max())
        gx, gw = jax.jit(lambda x, w, g: jax.vjp(fixed_order.dot, x, w)[1](g))(x, w, g)
        assert np.array_equal(np.asarray(gx), _chain_reference(g.T, w.T)), k  # g @ w^T: a chain over n
        assert np.array_equal(np.asarray(gw), _chain_reference(x, g)), k  # x^T @ g: a chain over the batch
    # vmapped over a chunk and with leading batch dimensions, as the engine calls it: the same chains
    xs = rng.standard_normal((2, 3, 4, 50), dtype=np.float32)
    ws = rng.standard_normal((2, 50, 6), dtype=np.float32)
    got = np.asarray(jax.jit(jax.vmap(fixed_order.dot))(xs, ws))
    for c in range(2):
        assert np.array_equal(got[c].reshape(12, 6), _chain_reference(xs[c].reshape(12, 50).T, ws[c])), c
    b = fixed_order.SUM_BLOCK
    s = rng.standard_normal((19,), dtype=np.float32)
    blocks = []
    padded = np.concatenate([s, np.zeros(24 - 19, np.float32)])
    for start in range(0, 24, b):
        acc = padded[start]
        for k in range(start + 1, start + b):
            acc = np.float32(acc + padded[k])
        blocks.append(acc)
    total = blocks[0]
    for v in blocks[1:]:
        total = np.float32(total + v)
    assert np.asarray(jax.jit(fixed_order.sum)(s)) == total
