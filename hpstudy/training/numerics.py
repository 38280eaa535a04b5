"""What a training process sets before JAX starts, so that a run's bits depend on its inputs alone.

Two things make XLA:CPU's results depend on the machine rather than on the program (docs/reproducibility.md):
- the number of cores: XLA splits some work by the size of its thread pool, so every training process
  is pinned to one core (`pin_one_core`);
- the CPU's instruction set: three kinds of kernel pick their code at run time from the CPU they find.
  Measured on an AVX-512 host against emulated AVX2 CPUs (EPYC-Milan, Haswell; tests/test_cross_cpu.py):
  1. YNNPACK fusions (dots, bias reductions, log-sum-exp) choose kernels by CPU:
     `--xla_cpu_experimental_ynn_fusion_type=` (empty) leaves those ops to XLA's own code;
  2. oneDNN's sgemm, which Eigen uses for the remaining dots, dispatches by CPU:
     TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL=false makes Eigen use its own portable kernel;
  3. XLA's generated code vectorises for the widest registers it may use, and the width changes the
     order of its sums: `--xla_cpu_max_isa=AVX2` fixes it at 256 bits (re-checked on an Emerald Rapids
     Xeon: without it the parameters matched, but a stored train_loss was 1 ulp off).
  Removing any one of the three changes the bits on an AVX-512 machine. Under all three, a run's
  parameters and every stored metric are equal on any x86-64 CPU with AVX2 and FMA (x86-64-v3), which
  is the floor: below it (no FMA) XLA's code would round differently, so portable mode refuses to run.

Mode "portable" applies all of this; "native" leaves XLA's CPU dispatch alone (faster, bits valid on the same
kind of CPU only). Mode "portable-v2" (the default) keeps portable's promise 1.5-2x faster (about native speed):
its products are YNNPACK's, restricted to kernels whose every output element is one FMA chain over k (XLA's
platform-dependent math off), with the dense layers' weight gradients written so that YNNPACK takes them
(model.TransposedGradDense); everything else is as in portable mode. Other bits than portable's (the earlier
default, kept for the stores made in it). Mode "fixed-order" (opt-in) takes another way: the model's dense
layers, the loss's log-softmax and sums, and the accuracy counts are written with hpstudy/training/fixed_order.py's
element-wise chains (model.py), so no library kernel and no vectorised XLA reduction decides an order in the
training step; its bits are then the same on x86-64 CPUs with FMA and on aarch64 (ARM servers, Apple silicon),
whatever the vector width, the XLA kernel settings or the number of cores (no pinning needed, so a Mac needs
no setting either). Its one setting, YNNPACK fusions off, is a guard: a reduction not written in fixed order (none
in the step or the evaluation today) stays XLA's own code, as in portable mode, not a kernel YNNPACK picks by CPU. Its bits differ from the other modes' (other sums). The mode is recorded with every run (environment.fingerprint).
Environment variables read by native libraries must be in place before JAX creates its CPU backend:
`prepare_process` is called first thing in every training process (the CLI's, each worker's, the tests').
"""

from __future__ import annotations

import os
import platform

from hpstudy.errors import EngineError

MODES = ("portable-v2", "portable", "native", "fixed-order")
FIXED_ORDER = "fixed-order"
# XLA flags and library environment variables of each mode (see the module docstring for why each).
PORTABLE_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=", "--xla_cpu_max_isa=AVX2")
PORTABLE_ENV = {"TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL": "false"}
# Mode "portable-v2" (issue 19; docs/reproducibility.md, "Numerics mode portable-v2"): YNNPACK takes the dots it
# supports (`individual_dot`; its reductions and log-sum-exp stay in XLA's code); with XLA's "platform dependent
# math" off, YNNPACK keeps to dot kernels that sum each output element in one FMA chain over k (k-tile 1) whatever
# the vector width, instead of kernels that interleave k across lanes (which it picks on AVX-512 CPUs, ignoring
# --xla_cpu_max_isa). The AVX2 cap and Eigen's kernel stay for all other code and any dot YNNPACK does not take;
# the dense layers' weight gradients are written so that YNNPACK takes them too (model.TransposedGradDense).
# Other bits than portable mode's, so runs of the two modes are never mixed in a store.
PORTABLE_V2 = "portable-v2"
PORTABLE_V2_XLA_FLAGS = (
    "--xla_cpu_enable_platform_dependent_math=false",
    "--xla_cpu_experimental_ynn_fusion_type=individual_dot",
    "--xla_cpu_max_isa=AVX2",
)
PORTABLE_V2_ENV = dict(PORTABLE_ENV)
# The default since the shipped runs were re-made in it (docs/reproducibility.md): portable's promise at native speed.
DEFAULT_MODE = PORTABLE_V2
# The modes whose bits hold on any x86-64-v3 CPU (AVX2 and FMA).
PORTABLE_MODES = ("portable", PORTABLE_V2)
# Fixed-order mode: YNNPACK fusions off, so that a reduction not written in fixed order (none in the step or the
# evaluation today) would be XLA's own code, not a kernel YNNPACK picks by CPU. No AVX2 cap
# and no Eigen setting: the mode's products are element-wise chains, which no vector width reorders.
FIXED_ORDER_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)
FIXED_ORDER_ENV: dict[str, str] = {}
# Every mode: GPU reductions and scatters in a fixed order (ignored by the CPU backend).
COMMON_XLA_FLAGS = ("--xla_gpu_deterministic_ops=true",)
# x86-64-v3's floating-point-relevant features (AVX2 + FMA; F16C comes with them), as NumPy's run-time
# CPU detection names them: it asks the CPU itself (cpuid), so it also sees an emulated CPU correctly.
PORTABLE_FLOOR = "x86-64-v3"
FLOOR_FEATURES = ("AVX", "AVX2", "FMA3", "F16C")
# Fixed-order mode's floor: fused multiply-add (its chains are FMAs; without FMA each product is rounded
# first, other bits). Every aarch64 CPU has it (Advanced SIMD); on x86-64 it is FMA3 (Haswell, Piledriver on).
FIXED_ORDER_FLOOR = "fma"
FIXED_ORDER_FEATURES_X86 = ("FMA3",)

# Whether this OS lets a process choose its cores (Linux does; macOS does not, and there XLA uses them all).
CAN_PIN = hasattr(os, "sched_setaffinity")
# Cores per training process: part of every result's environment (see environment.fingerprint).
CORES_PER_RUN = 1 if CAN_PIN else (os.cpu_count() or 1)

_applied: dict = {}


def cpu_features() -> dict[str, bool]:
    """The CPU's features as NumPy's run-time dispatcher detected them (cpuid), e.g. {'AVX2': True}."""
    from numpy._core._multiarray_umath import __cpu_features__

    return dict(__cpu_features__)


def is_x86_64() -> bool:
    """Whether this is an x86-64 machine (the only architecture portable mode is defined for)."""
    return platform.machine().lower() in ("x86_64", "amd64")


def is_aarch64() -> bool:
    """Whether this is a 64-bit ARM machine (Linux says aarch64, macOS arm64)."""
    return platform.machine().lower() in ("aarch64", "arm64")


def isa_floor(mode: str) -> str:
    """The CPUs on which `mode`'s bits are the same: portable's and portable-v2's x86-64-v3, fixed-order's FMA
    (x86-64 with FMA3, or aarch64), native's "host" (the same kind of CPU only)."""
    return {"portable": PORTABLE_FLOOR, PORTABLE_V2: PORTABLE_FLOOR, FIXED_ORDER: FIXED_ORDER_FLOOR}.get(mode, "host")


def check_floor(mode: str) -> None:
    """Refuse a mode where it cannot give the promised bits: portable off x86-64 or below x86-64-v3;
    fixed-order on a CPU without fused multiply-add, or neither x86-64 nor aarch64."""
    if mode == FIXED_ORDER:
        if is_aarch64():
            return
        if not is_x86_64():
            raise EngineError(
                f"numerics mode 'fixed-order' is defined for x86-64 (with FMA) and aarch64 CPUs, and this machine "
                f"is {platform.machine()}; run with --numerics native (bits then hold on the same kind of CPU only)."
            )
        missing = [name for name in FIXED_ORDER_FEATURES_X86 if not cpu_features().get(name, False)]
        if missing:
            raise EngineError(
                f"this CPU lacks {', '.join(missing)} (fused multiply-add), which numerics mode 'fixed-order' needs: "
                "its sums are chains of FMAs. Run with --numerics native to train anyway (recorded with each run)."
            )
        return
    if mode not in PORTABLE_MODES:
        return
    if not is_x86_64():
        raise EngineError(
            f"numerics mode {mode!r} is defined for x86-64 CPUs, and this machine is {platform.machine()}; "
            "run with --numerics native (results are then bit-identical only on the same kind of CPU), or with "
            "--numerics fixed-order on aarch64 (the same bits as x86-64's fixed-order runs; slower)."
        )
    features = cpu_features()
    missing = [name for name in FLOOR_FEATURES if not features.get(name, False)]
    if missing:
        raise EngineError(
            f"this CPU lacks {', '.join(missing)}, which numerics mode {mode!r} needs ({PORTABLE_FLOOR}: AVX2 and FMA); "
            "its results would not match other machines' bits. Run with --numerics native to train anyway "
            "(recorded with each run), or use a CPU from about 2013 or later."
        )


def check_mode(mode: str) -> str:
    """`mode` if it is a known numerics mode, else a clear error."""
    if mode not in MODES:
        raise EngineError(f"numerics mode {mode!r} is unknown; expected one of {', '.join(MODES)}.")
    return mode


def settings(mode: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """(XLA flags, environment variables) that `mode` adds to the process environment."""
    check_mode(mode)
    if mode == "portable":
        return (*PORTABLE_XLA_FLAGS, *COMMON_XLA_FLAGS), dict(PORTABLE_ENV)
    if mode == PORTABLE_V2:
        return (*PORTABLE_V2_XLA_FLAGS, *COMMON_XLA_FLAGS), dict(PORTABLE_V2_ENV)
    if mode == FIXED_ORDER:
        return (*FIXED_ORDER_XLA_FLAGS, *COMMON_XLA_FLAGS), dict(FIXED_ORDER_ENV)
    return COMMON_XLA_FLAGS, {}


def _flag_name(flag: str) -> str:
    return flag.split("=", 1)[0]


def xla_flags_for(mode: str, existing: str = "") -> str:
    """XLA_FLAGS of a training process of `mode`: the user's flags (`existing`) without any flag a mode
    sets, then the mode's flags (ours come last, so they win)."""
    ours = {_flag_name(f) for m in MODES for f in settings(m)[0]}
    kept = [f for f in existing.split() if _flag_name(f) not in ours]
    return " ".join([*kept, *settings(mode)[0]])


def settings_in_effect(mode: str) -> bool:
    """Whether this process's environment carries exactly `mode`'s settings (and no other mode's)."""
    ours = {_flag_name(f) for m in MODES for f in settings(m)[0]}
    current = [f for f in os.environ.get("XLA_FLAGS", "").split() if _flag_name(f) in ours]
    flags, env = settings(mode)
    others = {key for m in MODES if m != mode for key in settings(m)[1]} - set(env)
    return (
        sorted(current) == sorted(flags)
        and all(os.environ.get(k) == v for k, v in env.items())
        and not any(k in os.environ for k in others)
    )


def backend_started() -> bool:
    """Whether JAX has created its backends in this process (after that, settings change nothing)."""
    import sys

    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return bool(getattr(xla_bridge, "_backends", {}))


def apply(mode: str = DEFAULT_MODE) -> bool:
    """Put `mode`'s settings into this process's environment, before JAX starts its backend.

    Returns whether JAX computations in this process will run under them: True when set now (or already
    in effect); False when JAX's backend started earlier without them (train in a fresh process then).
    Child processes started afterwards inherit the settings. Raises on a CPU below portable mode's floor.
    """
    check_floor(check_mode(mode))
    if _applied.get("mode") == mode or (backend_started() and settings_in_effect(mode)):
        _applied["mode"] = mode
        return True
    if backend_started():
        return False
    for other in MODES:  # a process switching modes drops the other mode's settings first
        if other != mode:
            for key in settings(other)[1]:
                os.environ.pop(key, None)
    os.environ["XLA_FLAGS"] = xla_flags_for(mode, os.environ.get("XLA_FLAGS", ""))
    os.environ.update(settings(mode)[1])
    _applied["mode"] = mode
    return True


def applied_mode() -> str | None:
    """The numerics mode this process applied (None if none was)."""
    return _applied.get("mode")


def fixed_order_active() -> bool:
    """Whether this process trains in fixed-order mode (read when a program is traced: model.py's layers and
    losses then use hpstudy/training/fixed_order.py; every other mode's programs are left exactly as they were)."""
    return _applied.get("mode") == FIXED_ORDER


def transposed_grads_active() -> bool:
    """Whether this process trains in portable-v2 mode (read when a program is traced: model.py's dense layers
    then compute their weight gradients from a materialised transpose, which YNNPACK's dot takes)."""
    return _applied.get("mode") == PORTABLE_V2


def usable_cores() -> list[int]:
    """The cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no affinity control, one "core" id per CPU
        return list(range(os.cpu_count() or 1))


def pinned() -> bool:
    """Whether this process runs on exactly one core."""
    return len(usable_cores()) == 1


# This process's claim on its core: an OS lock on a file per core, released by the OS when the process dies.
_claim: dict = {}


def claim_core() -> int:
    """A core for this process that no other hpstudy process on this machine holds (an OS file lock per
    core, taken in order), so that two `hpstudy run --workers 1` or two Dask workers do not share one
    core while another idles; with every core held, a shared one (bits unchanged, only slower)."""
    if "core" in _claim:
        return _claim["core"]
    cores = usable_cores()
    core = cores[os.getpid() % len(cores)]
    if len(cores) > 1:
        import fcntl
        import tempfile
        from pathlib import Path

        folder = Path(tempfile.gettempdir()) / f"hpstudy-cores-{os.getuid()}"
        folder.mkdir(exist_ok=True)
        for candidate in cores:
            fh = open(folder / f"core-{candidate}.lock", "a")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            _claim["lock"], core = fh, candidate
            break
    _claim["core"] = core
    return core


def pin_one_core(core: int | None = None) -> bool:
    """Pin this process to one core (a free one, see `claim_core`, or `core`) if JAX has not started its
    backend yet.

    Returns whether training may go on in this process: True when pinned now, when the process was
    already restricted to one core, or where the OS cannot pin at all (then XLA uses every core and the
    fingerprint's cores_per_run says so); False when JAX's backend started earlier with more cores.
    """
    if pinned() or not CAN_PIN:  # without affinity control (macOS) there is nothing more to do
        return True
    if backend_started():
        return False
    os.sched_setaffinity(0, {claim_core() if core is None else core})
    return True


def prepare_process(mode: str = DEFAULT_MODE, core: int | None = None) -> bool:
    """Make this process a training process: numerics settings and one core, before JAX starts.

    Returns whether runs may be trained in this process (see `apply` and `pin_one_core`).
    """
    ready = apply(mode)
    return pin_one_core(core) and ready
