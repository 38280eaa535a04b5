"""How hpstudy's programs are compiled: Threefry lowered without loops on XLA:CPU, and JAX's persistent
compilation cache, so a second process loads compiled programs instead of compiling them again.

Neither changes a result's bits:
- JAX lowers its Threefry hash (every random draw: initialisation, shuffles, dropout masks) on CPU as a
  `fori_loop` over five groups of rounds, to keep compile times down on huge graphs. Inside a training
  step that loop costs a dozen tiny kernels per draw, and the dropout masks are recomputed for the
  backward pass. `use_unrolled_threefry()` registers JAX's own unrolled lowering (the one GPUs and TPUs
  use) for CPU as well: the same 32-bit integer operations in the same order, so the same bits, fused
  into one loop per draw; compiling is faster too (fewer while loops). The engine calls it on import.
- The persistent cache stores the compiled executable keyed by the program, the compile options, the
  jax/jaxlib versions and the backend; a cache hit runs the very machine code a fresh compile would
  produce. The cache folder is additionally keyed by the CPU model, ISA flags and numerics settings
  (hpstudy/training/numerics.py), so a cache on a shared home directory is never used by a different processor
  or by a process with other settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import jax

ENV_CACHE_DIR = "HPSTUDY_CACHE_DIR"
MAX_CACHE_BYTES = 2 << 30  # least recently used programs are evicted beyond 2 GiB
_OFF = ("", "0", "off", "none", "false")
_state = {"threefry": False, "cache": None}


def use_unrolled_threefry() -> bool:
    """Lower jax.random's Threefry hash on CPU without loops (bit-identical, see module docstring).

    Returns whether the unrolled lowering is in place. Uses JAX internals (pinned jax==0.10.2); if they
    move, the default lowering stays and only speed is lost.
    """
    if _state["threefry"]:
        return True
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as tf

        mlir.register_lowering(tf.threefry2x32_p, tf._threefry2x32_lowering_rule, platform="cpu", inline=False)
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - depends on JAX internals
        return False
    _state["threefry"] = True
    return True


def _cpu_key() -> str:
    """A short digest of the CPU model, ISA flags and numerics settings: compiled CPU code is only valid on
    the same kind of CPU, and programs compiled under other numerics settings are other programs."""
    from hpstudy.environment import fingerprint

    env = fingerprint()
    text = "|".join(
        [
            env["backend"],
            env["device_kind"],
            env["cpu_model"],
            ",".join(env["isa"]),
            env["numerics"],
            env["xla_flags"],
            json.dumps(env["numerics_env"], sort_keys=True),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_base() -> Path | None:
    """$HPSTUDY_CACHE_DIR (off/none/0/empty disables), else $XDG_CACHE_HOME/hpstudy/jax or ~/.cache/hpstudy/jax;
    OutputError for a value that cannot be expanded (`~nosuchuser/...`)."""
    from hpstudy.errors import OutputError

    try:
        if ENV_CACHE_DIR in os.environ:
            value = os.environ[ENV_CACHE_DIR].strip()
            return None if value.lower() in _OFF else Path(value).expanduser()
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hpstudy" / "jax"
    except RuntimeError as exc:  # pathlib's "Could not determine home directory"
        raise OutputError(
            f"{ENV_CACHE_DIR}={os.environ.get(ENV_CACHE_DIR)!r} cannot be expanded ({exc}); set it to "
            "a folder, or to 'off' to run without the compilation cache."
        ) from exc


def default_cache_dir() -> Path | None:
    """The compilation cache folder (see `cache_base`), one subfolder per CPU kind; None when disabled."""
    base = cache_base()
    return None if base is None else base / _cpu_key()


def enable_persistent_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache for every program of this process; return its folder.

    A folder the user already configured through JAX (jax_compilation_cache_dir) is left alone. The
    thresholds are set so that every program is cached however quickly it compiled or however small it is:
    JAX's defaults (1 s of compile time) would skip the small init and finalize programs.
    """
    if _state["cache"] is not None:
        return _state["cache"]
    configured = jax.config.jax_compilation_cache_dir
    folder = Path(configured) if configured else (Path(path) if path is not None else default_cache_dir())
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: run without the cache rather than fail
    if not configured:
        jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    try:  # a size limit turns on JAX's LRU eviction, which also locks entries while they are written
        import filelock  # noqa: F401

        if jax.config.jax_compilation_cache_max_size == -1:
            jax.config.update("jax_compilation_cache_max_size", MAX_CACHE_BYTES)
    except ImportError:  # without the lock a half-written entry fails to load and is compiled again
        pass
    _state["cache"] = folder
    return folder
