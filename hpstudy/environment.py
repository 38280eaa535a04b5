"""The environment fingerprint recorded with every run: what a result's bits depend on besides its inputs."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform

import jax

from hpstudy.parallel import CORES_PER_RUN

PINNED = ("jax", "jaxlib", "flax", "optax", "numpy")
# ISA extensions that change which kernels XLA:CPU picks.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_tile", "asimd", "sve")


def _cpuinfo() -> tuple[str, list[str]]:
    """CPU model name and the relevant ISA flags, from /proc/cpuinfo where it exists."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu model") and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "features"):
                    flags.update(value.split())
    except OSError:
        pass
    return model, [f for f in ISA_FLAGS if f in flags]


@functools.lru_cache(maxsize=1)
def fingerprint() -> dict:
    """Package versions, XLA_FLAGS, CPU model and ISA flags, and the JAX backend and device kind."""
    model, isa = _cpuinfo()
    device = jax.devices()[0]
    return {
        "python": platform.python_version(),
        "packages": {name: importlib.metadata.version(name) for name in (*PINNED, "hpstudy")},
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "x64": bool(jax.config.jax_enable_x64),
        "platform": platform.platform(),
        "cpu_model": model,
        "isa": isa,
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        # every run trains in a process pinned to this many cores (hpstudy/parallel.py)
        "cores_per_run": CORES_PER_RUN,
    }
