"""Bits that do not depend on the CPU: the same study trained natively and under qemu-user emulating an
AVX2-only CPU (AMD EPYC-Milan) must store the same parameter hashes and every metric bit for bit.

qemu emulates AVX2 but not AVX-512, so the comparison bites on an AVX-512 host (there the default XLA
settings give other bits: see test_native_numerics_differ_across_cpus); on an AVX2-only host both sides
run the same kernels and the test still runs and passes. qemu-user-static is found as $HPSTUDY_QEMU, or
on PATH; .ci/run fetches it (apt-get download qemu-user-static; dpkg -x). Emulation is 20-50x slower, so
the study is small.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpstudy.training import numerics

CHILD = Path(__file__).with_name("cross_cpu_child.py")
EMULATED_CPU = "EPYC-Milan"  # AVX2 + FMA, no AVX-512: the x86-64-v3 floor on an AMD core

# The grid network with dropout, Adam and SGD at batch 32 (where both YNNPACK and oneDNN kernels run):
# 4 epochs of 50 steps (1,600 synthetic images), two seeds each. Small, because emulation is slow.
SMALL = """
[study]
name = "cross_cpu"
validation = "test"
seeds = 2
[model]
flavour = "keras"
hidden = [128, 128]
activation = "relu"
[training]
epochs = 4
[design]
kind = "grid"
[design.factors]
optimizer = ["adam_keras", "sgd"]
learning_rate = [0.001]
batch_size = [32]
dropout = [0.2]
"""


def full_cross_cpu() -> None:
    """Skip unless HPSTUDY_CROSS_CPU=all. An emulated run compiles every program under emulation: 10-20
    minutes or more each on a slow machine, so CI runs one emulated check (the default mode's test below, on the
    smallest study that still runs both kernels' paths) and the rest on request."""
    if os.environ.get("HPSTUDY_CROSS_CPU") != "all":
        pytest.skip("a second emulated run (10-20 min on a slow machine); run it with HPSTUDY_CROSS_CPU=all")


def qemu() -> str:
    """Path of qemu-x86_64 user-mode emulation, or skip saying how to get it."""
    if not numerics.is_x86_64():
        pytest.skip("cross-CPU emulation test runs on x86-64 hosts only")
    for candidate in (os.environ.get("HPSTUDY_QEMU"), shutil.which("qemu-x86_64-static"), shutil.which("qemu-x86_64")):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip(
        "qemu-user-static not found: `apt-get install qemu-user-static`, or `apt-get download "
        "qemu-user-static && dpkg -x qemu-user-static_*.deb DIR` and set HPSTUDY_QEMU=DIR/usr/bin/qemu-x86_64-static"
    )


def train(
    tmp: Path, mode: str, study: Path, data: str, emulate: bool, settings: list | None = None, cpu: str = EMULATED_CPU
) -> dict:
    """Run the child natively or under the emulated CPU `cpu`; return its JSON. `settings` ([XLA flags,
    environment variables]) replaces native mode's settings (the child's SETTINGS argument)."""
    results = tmp / f"{mode}{'-settings' if settings else ''}-{'emulated' if emulate else 'native'}"
    command = [sys.executable, str(CHILD), mode, str(study), str(results), data]
    if settings is not None:
        assert mode == "native", "explicit settings replace native mode's"
        command.append(json.dumps(settings))
    if emulate:
        command = [qemu(), "-cpu", cpu, *command]
    env = {**os.environ, "HPSTUDY_CACHE_DIR": "off"}  # compile here, for this CPU: never a cached program
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_same_runs(native: dict, emulated: dict, cpu: str = EMULATED_CPU) -> None:
    """Every run present on both sides with every compared value equal."""
    assert "AVX512F" not in emulated["features"] and "AVX2" in emulated["features"], emulated["features"]
    assert set(native["runs"]) == set(emulated["runs"]) and native["runs"]
    for run_id, values in native["runs"].items():
        differing = {f: (v, emulated["runs"][run_id][f]) for f, v in values.items() if emulated["runs"][run_id][f] != v}
        assert not differing, f"run {run_id} differs between this CPU and an emulated {cpu}: {differing}"


# CI's emulated check: one seed of Keras' Adam with dropout, 2 epochs of 13 steps on 400 synthetic images.
CI_STUDY = (
    SMALL.replace("seeds = 2", "seeds = 1")
    .replace("epochs = 4", "epochs = 2")
    .replace('["adam_keras", "sgd"]', '["adam_keras"]')
)
CI_DATA = "synthetic:400:128"


@pytest.fixture
def small_study(tmp_path: Path) -> Path:
    path = tmp_path / "cross_cpu.toml"
    path.write_text(SMALL)
    return path


def test_default_numerics_same_bits_on_emulated_avx2_cpu(tmp_path, small_study):
    """The default mode (portable-v2): this CPU and an emulated AVX2-only CPU store identical values. In CI one
    seed of Keras' Adam with dropout for 2 epochs of 13 steps (400 synthetic images at batch 32, the last batch
    partial): YNNPACK's kernels run slowly under emulation (about 2 s a step here), and one step already
    carries any product's difference into the parameters. The whole study with HPSTUDY_CROSS_CPU=all."""
    qemu()
    data = "synthetic"
    if os.environ.get("HPSTUDY_CROSS_CPU") != "all":
        small_study.write_text(CI_STUDY)
        data = CI_DATA
    assert_same_runs(
        train(tmp_path, numerics.DEFAULT_MODE, small_study, data, False),
        train(tmp_path, numerics.DEFAULT_MODE, small_study, data, True),
    )


def test_portable_numerics_same_bits_on_emulated_avx2_cpu(tmp_path, small_study):
    """Portable mode (the earlier default, which the stores made in it keep): the whole study, this CPU and an
    emulated AVX2-only CPU store identical values. With HPSTUDY_CROSS_CPU=all: CI's emulated check is the
    default mode's (above)."""
    full_cross_cpu()
    qemu()
    assert_same_runs(
        train(tmp_path, "portable", small_study, "synthetic", False),
        train(tmp_path, "portable", small_study, "synthetic", True),
    )


def test_native_numerics_differ_across_cpus(tmp_path, small_study):
    """The comparison above can fail, even at CI's size (its 26 steps): without the portable settings, an AVX-512
    host's bits differ from an AVX2 CPU's. (On an AVX2-only host both sides run the same kernels, so there is
    nothing to show.)"""
    full_cross_cpu()
    qemu()
    if not numerics.cpu_features().get("AVX512F"):
        pytest.skip("this host has no AVX-512: native numerics give the emulated AVX2 CPU's bits here")
    small_study.write_text(CI_STUDY)
    native = train(tmp_path, "native", small_study, CI_DATA, False)
    emulated = train(tmp_path, "native", small_study, CI_DATA, True)
    hashes = {rid: v["param_sha256"] for rid, v in native["runs"].items()}
    assert any(emulated["runs"][rid]["param_sha256"] != h for rid, h in hashes.items())


@pytest.mark.slow
@pytest.mark.mnist
def test_default_numerics_real_mnist_epoch(tmp_path, mnist_dir, monkeypatch):
    """One real-MNIST epoch of the grid network (batch 64, dropout, Keras' Adam), default mode: same bits
    emulated."""
    monkeypatch.setenv("HPSTUDY_DATA_DIR", str(mnist_dir))
    study = tmp_path / "mnist_epoch.toml"
    study.write_text(
        SMALL.replace("seeds = 2", "seeds = 1")
        .replace("epochs = 4", "epochs = 1")
        .replace('["adam_keras", "sgd"]', '["adam_keras"]')
        .replace("batch_size = [32]", "batch_size = [64]")
    )
    full_cross_cpu()
    qemu()
    assert_same_runs(
        train(tmp_path, numerics.DEFAULT_MODE, study, "mnist", False),
        train(tmp_path, numerics.DEFAULT_MODE, study, "mnist", True),
    )


@pytest.mark.parametrize("cpu", ["EPYC-Milan", "Haswell"])
def test_portable_v2_same_bits_on_emulated_avx2_cpu(tmp_path, small_study, cpu):
    """Numerics mode portable-v2 (YNNPACK's consistent dots, weight gradients from a materialised transpose):
    one seed of Keras' Adam with dropout and one of SGD, 2 epochs, the same bits on this CPU and on an emulated
    AVX2-only CPU (an AMD and an Intel core), and other bits than portable mode's (so the comparison can
    fail). With HPSTUDY_CROSS_CPU=all: CI's emulated check (the default mode's, above) is one Adam seed on an
    AMD core, as each emulated study takes 10-20 minutes."""
    full_cross_cpu()
    qemu()
    small_study.write_text(SMALL.replace("seeds = 2", "seeds = 1").replace("epochs = 4", "epochs = 2"))
    native = train(tmp_path, numerics.PORTABLE_V2, small_study, "synthetic", False)
    assert_same_runs(native, train(tmp_path, numerics.PORTABLE_V2, small_study, "synthetic", True, cpu=cpu), cpu)
    portable = train(tmp_path, "portable", small_study, "synthetic", False)
    other = {v["param_sha256"] for v in portable["runs"].values()}
    assert other.isdisjoint(v["param_sha256"] for v in native["runs"].values()), "portable mode's bits differ"


@pytest.mark.slow
def test_evaluation_products_same_bits_on_emulated_cpu(tmp_path):
    """The evaluation's products and loss (784-30-10 sigmoid network on 125 to 10,000 rows, alone and
    vmapped over chunks of 2 and 4 runs; benchmarks/eval_probe.py) under portable settings: this CPU and an
    emulated EPYC-Milan give the same bits, although the L1 data cache their cpuid reports differs (48 KiB
    here, 32 KiB emulated) and with it the k-blocking Eigen's computeProductBlockingSizes would choose.
    Guards the finding of docs/reproducibility.md, "Evaluation values and a run's slot": the
    reported L1 size does not decide these bits (the stored val_loss mismatch came from the run's slot in
    its chunk, which the probe's slots_rows* entries show on any one CPU). About 3-5 minutes (165-261 s here)."""
    full_cross_cpu()
    emulator = qemu()
    probe = Path(__file__).resolve().parent.parent / "benchmarks" / "eval_probe.py"
    results = {}
    for label, prefix in (("native", []), ("emulated", [emulator, "-cpu", EMULATED_CPU])):
        out = tmp_path / f"{label}.json"
        command = [*prefix, sys.executable, str(probe), "--label", label, "--out", str(out)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        results[label] = json.loads(out.read_text())
    assert "AVX512F" not in results["emulated"]["features"]
    if results["native"]["cpuid"].get("l1") == results["emulated"]["cpuid"].get("l1"):
        pytest.skip("this CPU reports the emulated CPU's L1 data cache size: nothing is compared")
    native, emulated = results["native"]["hashes"], results["emulated"]["hashes"]
    assert set(native) == set(emulated) and native
    differing = {key: (native[key], emulated[key]) for key in native if native[key] != emulated[key]}
    assert not differing, f"evaluation bits differ between this CPU and an emulated {EMULATED_CPU}: {differing}"
