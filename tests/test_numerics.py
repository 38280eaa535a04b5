"""Numerics modes: settings, the CPU floor, the fingerprint, and no mixing of numeric environments in a store."""

from __future__ import annotations

import pytest
from conftest import FACTORS, run_hashes, synthetic_dataset

from hpstudy import store
from hpstudy.environment import differences, fingerprint, numeric_identity
from hpstudy.errors import EngineError, StoreError
from hpstudy.runner import run_study
from hpstudy.study import load_study
from hpstudy.training import numerics


def test_this_process_trains_under_portable_settings():
    """The test process applied the default mode before JAX started, as every training process does."""
    assert numerics.applied_mode() == "portable"
    assert numerics.settings_in_effect("portable") and not numerics.settings_in_effect("native")
    env = fingerprint()
    assert env["numerics"] == "portable" and env["isa_floor"] == "x86-64-v3"
    for flag in numerics.PORTABLE_XLA_FLAGS:
        assert flag in env["xla_flags"].split()
    assert env["numerics_env"] == {"TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL": "false"}


def test_user_flags_kept_and_mode_flags_win():
    flags = numerics.xla_flags_for("portable", "--xla_dump_to=/tmp/x --xla_cpu_max_isa=AVX512")
    assert flags.split()[0] == "--xla_dump_to=/tmp/x"
    assert "--xla_cpu_max_isa=AVX512" not in flags and "--xla_cpu_max_isa=AVX2" in flags
    assert "--xla_cpu_max_isa" not in numerics.xla_flags_for("native", flags)


@pytest.mark.parametrize("missing", ["AVX2", "FMA3"])
def test_portable_mode_refuses_cpus_below_the_floor(monkeypatch, missing):
    features = {name: True for name in numerics.FLOOR_FEATURES} | {missing: False}
    monkeypatch.setattr(numerics, "cpu_features", lambda: features)
    monkeypatch.setattr(numerics, "is_x86_64", lambda: True)
    with pytest.raises(EngineError, match=f"lacks {missing}.*--numerics native"):
        numerics.check_floor("portable")
    numerics.check_floor("native")  # native mode trains anywhere, and says so in the fingerprint


def test_portable_mode_refuses_other_architectures(monkeypatch):
    monkeypatch.setattr(numerics, "is_x86_64", lambda: False)
    with pytest.raises(EngineError, match="defined for x86-64"):
        numerics.check_floor("portable")


def test_unknown_mode_is_named():
    with pytest.raises(EngineError, match="'fast' is unknown; expected one of portable, native"):
        numerics.check_mode("fast")


def test_identity_ignores_cpu_model_in_portable_mode_only():
    a = dict(fingerprint(), cpu_model="CPU A", isa=["avx2", "fma"])
    b = dict(a, cpu_model="CPU B", isa=["avx2", "fma", "avx512f"])
    assert differences(a, b) == []
    native_a, native_b = dict(a, numerics="native"), dict(b, numerics="native")
    assert [d[0] for d in differences(native_a, native_b)] == ["isa"]
    assert numeric_identity(a)["packages.jax"] == "0.10.2"


def test_store_of_another_numeric_environment_is_refused(tmp_path, write_study):
    """A store made in portable mode refuses native-mode runs, naming the difference; --allow-mixed stores them."""
    path = write_study(FACTORS)
    run_hashes(path, range(1), tmp_path)
    study = load_study(path)
    before = sorted(p.read_bytes() for p in store.study_dir(tmp_path, study.name).glob("part-*.parquet"))
    with pytest.raises(StoreError, match=r"another numeric environment \(.*numerics: stored 'portable', now 'native'"):
        run_study(study, range(2), synthetic_dataset, tmp_path, progress=False, numerics_mode="native")
    after = sorted(p.read_bytes() for p in store.study_dir(tmp_path, study.name).glob("part-*.parquet"))
    assert after == before, "a refused run must not touch the store"
    report = run_study(
        study, range(2), synthetic_dataset, tmp_path, progress=False, numerics_mode="native", allow_mixed=True
    )
    assert report.computed == len(study.trials)
    envs = store.stored_environments(report.directory)
    assert sorted(__import__("json").loads(e)["numerics"] for e in envs) == ["native", "portable"]


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
