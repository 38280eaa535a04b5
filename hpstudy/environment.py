"""The environment fingerprint recorded with every run: what a result's bits depend on besides its inputs.

Imports neither the engine nor the worker pool: the fingerprint describes the process, it does not run one.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform

from hpstudy.training import numerics

PINNED = ("jax", "jaxlib", "flax", "optax", "numpy")
# ISA extensions that change which kernels XLA:CPU picks, as /proc/cpuinfo names them.
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_bf16",
    "amx_tile",
    "asimd",
    "sve",
)
# NumPy's names of the same extensions (asked of the CPU itself, so right under emulation too).
_NUMPY_ISA = {
    "SSE42": "sse4_2",
    "AVX": "avx",
    "AVX2": "avx2",
    "FMA3": "fma",
    "AVX512F": "avx512f",
    "AVX512BW": "avx512bw",
    "AVX512VL": "avx512vl",
    "AVX512_BF16": "avx512_bf16",
    "ASIMD": "asimd",
    "SVE": "sve",
}
# The fields of a fingerprint that decide a run's bits (with the packages); the rest describe the machine.
NUMERIC_FIELDS = (
    "numerics",
    "isa_floor",
    "xla_flags",
    "numerics_env",
    "x64",
    "backend",
    "device_kind",
    "cores_per_run",
)


def _cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo where it exists."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("model name", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return model


def _isa() -> list[str]:
    """The ISA extensions this CPU has, among those that change which kernels run."""
    features = numerics.cpu_features()
    found = {name for np_name, name in _NUMPY_ISA.items() if features.get(np_name)}
    return [f for f in ISA_FLAGS if f in found]


def _jax_device() -> tuple[str, str, int, bool]:
    """JAX's default backend, its first device's kind, the device count and whether x64 is on."""
    import jax

    return jax.default_backend(), jax.devices()[0].device_kind, jax.device_count(), bool(jax.config.jax_enable_x64)


def installed_versions(names) -> dict[str, str | None]:
    """Installed version of each distribution (None where it is not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def fingerprint(mode: str | None = None) -> dict:
    """Package versions, numerics mode and settings, CPU model and ISA, and the JAX backend and device kind.

    mode: the numerics mode the runs train under (default: the one this process applied, else the
    default mode); XLA_FLAGS are those a training process of that mode gets from this environment.
    """
    # resolved before the cache: a process that applies a mode later must not get an earlier answer
    return _fingerprint(mode or numerics.applied_mode() or numerics.DEFAULT_MODE)


@functools.lru_cache(maxsize=4)
def _fingerprint(mode: str) -> dict:
    """`fingerprint` for one resolved numerics mode (cached: nothing in it changes within a process)."""
    backend, device_kind, device_count, x64 = _jax_device()
    return {
        "python": platform.python_version(),
        "packages": installed_versions((*PINNED, "hpstudy")),
        "numerics": mode,
        "isa_floor": numerics.isa_floor(mode),
        "xla_flags": numerics.xla_flags_for(mode, os.environ.get("XLA_FLAGS", "")),
        "numerics_env": numerics.settings(mode)[1],
        "x64": x64,
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "isa": _isa(),
        "backend": backend,
        "device_kind": device_kind,
        "device_count": device_count,
        # every run trains in a process pinned to this many cores (hpstudy/training/numerics.py)
        "cores_per_run": numerics.CORES_PER_RUN,
    }


def numeric_identity(env: dict | str) -> dict:
    """The part of a fingerprint that decides a run's bits: pinned packages, numerics mode and settings,
    device; in native mode (or where no mode was recorded) also the CPU's ISA, since the bits follow it. In
    fixed-order mode neither the ISA nor the cores per run decide them (a Mac, which cannot pin, records all
    its cores)."""
    env = json.loads(env) if isinstance(env, str) else env
    identity = {f"packages.{name}": (env.get("packages") or {}).get(name) for name in (*PINNED, "hpstudy")}
    identity.update({field: env.get(field) for field in NUMERIC_FIELDS})
    if env.get("numerics") == numerics.FIXED_ORDER:
        identity.pop("cores_per_run")
    elif env.get("numerics") not in numerics.PORTABLE_MODES:
        identity["isa"] = env.get("isa")
    return identity


def differences(recorded: dict | str, current: dict | str) -> list[tuple[str, object, object]]:
    """(field, recorded, current) for every bit-deciding field that differs between two fingerprints."""
    a, b = numeric_identity(recorded), numeric_identity(current)
    return [(key, a.get(key), b.get(key)) for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
