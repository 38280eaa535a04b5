"""The same bits on ARM: a short study in numerics mode "fixed-order" trained here (x86-64) and under
qemu-aarch64 (an emulated Neoverse N1) stores identical parameter hashes and every stored value.

Slow (every program compiles under emulation: tens of minutes on a loaded machine). Needs qemu-user-static's
qemu-aarch64 and an aarch64 Python 3.11 with the pinned packages' aarch64 wheels; docs/reproducibility.md ("The
same bits on ARM") sets them up without root (apt-get download + dpkg -x; pip download --platform). Found as:
    HPSTUDY_QEMU_AARCH64  qemu-aarch64(-static) (else on PATH)
    HPSTUDY_ARM_ROOT      the extracted arm64 root (QEMU_LD_PREFIX: its libc and loader)
    HPSTUDY_ARM_PYTHON    its python3.11 (default: HPSTUDY_ARM_ROOT/usr/bin/python3.11)
    HPSTUDY_ARM_SITE      the extracted aarch64 wheels (jax, jaxlib, flax, optax, numpy, pandas, pyarrow, ...)
    HPSTUDY_ARM_CPU       the emulated CPU (default neoverse-n1; a64fx has 512-bit SVE)
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
from tests.test_fixed_order_mode import CHILD, DATA, STRIPPED, differing, study_file, train

REPO = Path(__file__).resolve().parent.parent


def arm_command() -> tuple[list[str], dict[str, str]]:
    """(command prefix, environment) that runs the aarch64 Python under qemu, or skip saying what is missing."""
    if not numerics.is_x86_64():
        pytest.skip("compares x86-64 with emulated aarch64: runs on x86-64 hosts")
    qemu = os.environ.get("HPSTUDY_QEMU_AARCH64") or shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if not qemu or not Path(qemu).is_file():
        pytest.skip(
            "qemu-aarch64 not found: `apt-get download qemu-user-static && dpkg -x qemu-user-static_*.deb DIR`, "
            "then HPSTUDY_QEMU_AARCH64=DIR/usr/bin/qemu-aarch64-static (docs/reproducibility.md)"
        )
    root = os.environ.get("HPSTUDY_ARM_ROOT")
    python = os.environ.get("HPSTUDY_ARM_PYTHON") or (root and f"{root}/usr/bin/python3.11")
    site = os.environ.get("HPSTUDY_ARM_SITE")
    missing = [
        name
        for name, path in (("HPSTUDY_ARM_ROOT", root), ("HPSTUDY_ARM_PYTHON", python), ("HPSTUDY_ARM_SITE", site))
        if not path or not Path(path).exists()
    ]
    if missing:
        pytest.skip(
            f"the arm64 Python is not available ({', '.join(missing)} unset or missing): extract Debian's arm64 "
            "python3.11 with dpkg -x and the aarch64 wheels with pip download --platform manylinux_2_27_aarch64 "
            "(docs/reproducibility.md, 'The same bits on ARM')"
        )
    env = {k: v for k, v in os.environ.items() if k not in (*STRIPPED, "PYTHONHOME")}
    env.update(QEMU_LD_PREFIX=root, PYTHONPATH=f"{site}:{REPO}", HPSTUDY_CACHE_DIR="off", PYTHONNOUSERSITE="1")
    return [qemu, "-cpu", os.environ.get("HPSTUDY_ARM_CPU", "neoverse-n1"), python], env


@pytest.mark.slow
def test_fixed_order_mode_same_bits_on_emulated_aarch64(tmp_path):
    """784-16-10 with dropout, Keras' Adam and SGD, 2 epochs of 10 steps: every stored value equal."""
    prefix, env = arm_command()
    study = study_file(tmp_path)
    command = [*prefix, str(CHILD), numerics.FIXED_ORDER, str(study), str(tmp_path / "aarch64"), DATA]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=4 * 3600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    emulated = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "ASIMD" in emulated["features"] and "AVX2" not in emulated["features"], emulated["features"]
    native = train(tmp_path, "x86", numerics.FIXED_ORDER, study)
    assert "AVX2" in native["features"]
    diff = differing(native, emulated)
    assert not diff, f"runs differ between this x86-64 CPU and an emulated aarch64 CPU: {diff}"
    print(json.dumps({"x86": native["runs"], "aarch64": emulated["runs"]}), file=sys.stderr)
