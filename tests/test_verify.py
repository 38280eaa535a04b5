"""`hpstudy verify`: a clean pass, a tampered stored value, a changed numerics flag, a tampered environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_hashes, synthetic_dataset

from hpstudy import cli, store
from hpstudy import verify as V

FACTORS_ONE = "learning_rate = [0.01]\nbatch_size = [64]\ndropout = [0.2]"


def synthetic_for(runs):
    """verify's dataset maker, for the synthetic test data."""
    return {("mnist", "test"): synthetic_dataset()}


@pytest.fixture
def stored(tmp_path, write_study) -> Path:
    """A store of 2 runs (1 trial x 2 seeds) trained here in the default numerics mode."""
    run_hashes(write_study(FACTORS_ONE), range(2), tmp_path / "results")
    return tmp_path / "results" / "small"


def rewrite_parts(directory: Path, change) -> None:
    """Apply `change(table_as_pylist)` to every part in place (a tamperer's edit, not hpstudy's)."""
    for part in directory.glob("part-*.parquet"):
        rows = pq.read_table(part).to_pylist()
        change(rows)
        pq.write_table(pa.Table.from_pylist(rows), part)


def test_clean_pass(stored):
    outcome = V.verify(stored, load_data=synthetic_for, progress=False, lock_path=None)
    assert (outcome.checked, outcome.matched, outcome.mismatches, outcome.environment) == (2, 2, [], [])
    assert outcome.ok


def test_sample_is_deterministic(stored):
    runs = store.read_runs(stored)
    assert list(V.sample(runs, 1)["run_id"]) == [min(runs["run_id"])]
    outcome = V.verify(stored, k=1, load_data=synthetic_for, progress=False, lock_path=None)
    assert (outcome.checked, outcome.matched) == (1, 1)


def test_tampered_value_is_named(stored):
    victim = min(store.read_runs(stored)["run_id"])

    def change(rows):
        for row in rows:
            if row["run_id"] == victim:
                row["test_accuracy"] = 0.5
                row["val_loss"] = [row["val_loss"][0], row["val_loss"][1] + 1e-7] + row["val_loss"][2:]

    rewrite_parts(stored, change)
    outcome = V.verify(stored, load_data=synthetic_for, progress=False, lock_path=None)
    assert (outcome.checked, outcome.matched) == (2, 1) and not outcome.ok
    assert sorted((m.run_id, m.field) for m in outcome.mismatches) == [(victim, "test_accuracy"), (victim, "val_loss")]
    bad = next(m for m in outcome.mismatches if m.field == "test_accuracy")
    assert bad.stored == repr(0.5) and bad.now != bad.stored


def test_tampered_environment_is_named(stored):
    def change(rows):
        for row in rows:
            env = json.loads(row["environment"])
            env["numerics_env"] = {}
            env["packages"]["optax"] = "0.2.7"
            row["environment"] = json.dumps(env, sort_keys=True)

    rewrite_parts(stored, change)
    outcome = V.verify(stored, load_data=synthetic_for, progress=False, lock_path=None)
    fields = sorted(line.split(":")[0] for line in outcome.environment)
    assert fields == ["numerics_env", "packages.optax"]
    assert outcome.ok, "the values themselves still reproduce"


def test_lock_file_differences_are_named(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("jax==0.10.2 \\\n    --hash=sha256:00\nnumpy==1.0.0\n# comment\nnot-installed-package==1.2\n")
    assert V.read_lock(lock) == {"jax": "0.10.2", "numpy": "1.0.0", "not-installed-package": "1.2"}
    assert [d[0] for d in V.lock_differences(V.read_lock(lock))] == ["not-installed-package", "numpy"]


def test_repository_lock_matches_pinned_stack():
    """The shipped lock file pins the numeric stack at pyproject's exact versions."""
    lock = V.read_lock()
    text = (Path(V.__file__).resolve().parent.parent / "pyproject.toml").read_text()
    for name in ("jax", "jaxlib", "flax", "optax", "numpy"):
        assert f'"{name}=={lock[name]}"' in text


CHANGED_FLAG_CHILD = r"""
import sys
sys.path.insert(0, sys.argv[2])
from conftest import synthetic_dataset
from hpstudy import verify as V
outcome = V.verify(sys.argv[1], load_data=lambda runs: {("mnist", "test"): synthetic_dataset()}, progress=False, lock_path=None)
print("ENV", outcome.environment)
print("MISMATCHED", sorted({m.field for m in outcome.mismatches}))
sys.exit(0 if outcome.ok else 6)
"""


def test_changed_flag_is_named_and_fails(stored):
    """A user flag that changes XLA's numerics (fast math) in a fresh process: named, and the bits differ."""
    # (not a flag portable mode sets itself: that one would be replaced by the mode's value)
    env = {**os.environ, "XLA_FLAGS": "--xla_cpu_enable_fast_math=true", "HPSTUDY_CACHE_DIR": "off"}
    proc = subprocess.run(
        [sys.executable, "-c", CHANGED_FLAG_CHILD, str(stored), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 6, proc.stdout + proc.stderr[-3000:]
    assert "xla_flags: recorded" in proc.stdout and "--xla_cpu_enable_fast_math=true" in proc.stdout
    assert "param_sha256" in proc.stdout


def test_cli_exit_codes(stored, monkeypatch, capsys):
    monkeypatch.setattr(V, "_datasets", lambda runs, data_dir: synthetic_for(runs))
    assert cli.main(["verify", str(stored), "--workers", "1"]) == 0
    assert "2 of 2 runs match bit for bit" in capsys.readouterr().out
    rewrite_parts(stored, lambda rows: rows[0].update(param_sha256="0" * 64))
    assert cli.main(["verify", str(stored), "--workers", "1"]) == 6
    out = capsys.readouterr()
    assert "MISMATCH run" in out.out and "param_sha256: stored 000" in out.out
    assert "did not reproduce bit for bit" in out.err


def test_report_folder_finds_its_runs(tmp_path, stored):
    report = tmp_path / "reports" / "small"
    report.mkdir(parents=True)
    (report / "README.md").write_text("# report\n")
    with pytest.raises(Exception, match="give the results folder"):
        V.find_store(report)
    assert V.find_store(report, results=stored.parent) == [stored]
    assert V.find_store(stored.parent) == [stored]


@pytest.mark.mnist
def test_a_shipped_run_retrained_in_the_default_mode_gives_its_stored_bits(tmp_path, mnist_dir):
    """Seed 0 of chollet2017_first_network (784-512-10, 5 epochs on real MNIST), trained here with no mode named,
    stores what reports/_runs holds for it, value for value: the shipped runs are the default mode's, and a user's
    `hpstudy run` on any x86-64-v3 CPU continues them (the runs were made on an Intel Xeon; CI may be an AMD)."""
    from hpstudy import data as hdata
    from hpstudy.runner import run_study
    from hpstudy.study import load_study

    root = Path(__file__).resolve().parent.parent
    study = load_study(root / "studies" / "chollet2017_first_network.toml")
    load = lambda: hdata.load_mnist(mnist_dir, study.meta.get("validation", "test"), download=False)  # noqa: E731
    report = run_study(study, range(1), load, tmp_path, progress=False)
    fresh = store.read_runs(report.directory)
    assert len(fresh) == 1 and json.loads(fresh["environment"].iloc[0])["numerics"] == "portable-v2"
    shipped = store.read_runs(root / "reports" / "_runs" / study.name).set_index("run_id", drop=False)
    assert V.compare(shipped.loc[fresh["run_id"].iloc[0]], fresh.iloc[0].to_dict()) == []
