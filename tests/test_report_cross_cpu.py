"""Report bytes do not depend on the CPU's SIMD width: `hpstudy report` natively and under qemu-user emulating
an AVX2 CPU without AVX-512 writes the same files (README, tables, figures). On an AVX-512 host this bites
on any vectorised transcendental function whose last bits reach a printed number or a figure coordinate.
Skips, saying how to get it, without qemu-user-static (tests/test_cross_cpu.py finds it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hpstudy import store
from hpstudy.reporting.build import synthetic_records
from hpstudy.study import load_study
from tests.test_cross_cpu import EMULATED_CPU, full_cross_cpu, qemu

ROOT = Path(__file__).resolve().parent.parent
# A grid (forest plot, dot plot, factorial effects) and a sweep with a split learning-rate axis,
# performance profiles and bootstrap intervals (10 seeds).
STUDIES = ("naragundkar2024_grid.toml", "fabrizio2021_lr.toml")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_report_bytes_are_the_same_on_an_emulated_avx2_cpu(tmp_path):
    full_cross_cpu()
    emulator = qemu()
    results = tmp_path / "results"
    for name in STUDIES:
        study = load_study(ROOT / "studies" / name)
        seeds = range(10) if name.startswith("naragundkar") else range(3)
        store.write_chunk(store.study_dir(results, study.name), synthetic_records(study, seeds))
    env = {**os.environ, "MPLBACKEND": "Agg"}
    for name in STUDIES:
        for side, prefix in (("native", []), ("emulated", [emulator, "-cpu", EMULATED_CPU])):
            command = [
                *prefix,
                sys.executable,
                "-m",
                "hpstudy.cli",
                "report",
                str(ROOT / "studies" / name),
                "--results",
                str(results),
                "--out",
                str(tmp_path / side),
            ]
            proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1500)
            assert proc.returncode == 0, proc.stderr[-3000:]
    native, emulated = _files(tmp_path / "native"), _files(tmp_path / "emulated")
    assert len(native) > 20 and set(native) == set(emulated)
    differing = sorted(k for k in native if native[k] != emulated[k])
    assert not differing, f"report files differ between this CPU and an emulated {EMULATED_CPU}: {differing}"
