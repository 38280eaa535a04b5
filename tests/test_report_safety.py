"""`hpstudy report` never touches what it did not write: not through its file list (a manifest tracked in
git, so untrusted), not a user's own files in the report folder, not through a symbolic link.

Each case checks the exit code, the message, and that every file outside the report (hashes of their
bytes) is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from hpstudy import cli, store
from hpstudy.errors import OutputError
from hpstudy.reporting.build import write_report
from hpstudy.reporting.outputs import MANIFEST, safe_relative
from hpstudy.reporting.synthetic import synthetic_records
from hpstudy.study import load_study

ROOT = Path(__file__).resolve().parent.parent
GRID = ROOT / "studies" / "naragundkar2024_grid.toml"
NAME = "naragundkar2024_grid"


def hashes(folder: Path, skip: Path | None = None) -> dict[str, str]:
    """SHA-256 of every file under `folder` (hidden ones too, links by their target text), except under `skip`."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        if p.is_symlink():
            out[p.relative_to(folder).as_posix()] = "link:" + os.readlink(p)
        elif p.is_file():
            out[p.relative_to(folder).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(autouse=True)
def one_figure(monkeypatch):
    """One small figure instead of the full set (seconds each): these tests are about which files a report
    touches, not about what its figures show (tests/test_figures.py)."""
    from hpstudy.reporting import figures

    def make(a, directory: Path) -> list[tuple[str, str]]:
        (directory / "by_learning_rate.png").write_bytes(b"a figure")
        return [("by_learning_rate", "Test accuracy by learning rate.")]

    monkeypatch.setattr(figures, "make_figures", make)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A results folder with synthetic runs of the grid study (2 seeds)."""
    results = tmp_path_factory.mktemp("stored") / "results"
    study = load_study(GRID)
    store.write_chunk(store.study_dir(results, study.name), synthetic_records(study, range(2)))
    return results


def report(results: Path, out: Path, capsys, *extra: str) -> tuple[int, str]:
    """Exit code and stderr of `hpstudy report` of the grid study."""
    code = cli.main(["report", str(GRID), "--results", str(results), "--out", str(out), *extra])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "entry, ok",
    [
        ("README.md", True),
        ("figures/a.png", True),
        ("../x", False),
        ("/etc/passwd", False),
        ("a/../b", False),
        ("./a", False),
        ("a//b", False),
        ("", False),
        ("a\\..\\b", False),
        (3, False),
        ("a/", False),
    ],
)
def test_manifest_entries_must_be_plain_relative_paths(entry, ok):
    assert (safe_relative(entry) is not None) == ok


def test_manifest_listing_files_outside_the_report_deletes_nothing(results, tmp_path, capsys):
    out = tmp_path / "out"
    target = write_report(load_study(GRID), results, out)
    other = tmp_path / "other"
    other.mkdir()
    keep = other / "keep.txt"
    keep.write_text("the user's")
    digest = hashlib.sha256(keep.read_bytes()).hexdigest()
    (target / "link").symlink_to(other, target_is_directory=True)  # a folder link out of the report
    (target / "alias.txt").symlink_to(keep)  # a file link out of the report
    manifest = json.loads((target / MANIFEST).read_text())
    # the worst case: each entry lists the right hash, so only the path rules can save the file
    manifest.update({"../other/keep.txt": digest, str(keep): digest, "link/keep.txt": digest, "alias.txt": digest})
    (target / MANIFEST).write_text(json.dumps(manifest))
    before = hashes(tmp_path, skip=target)
    code, err = report(results, out, capsys)
    assert code == 0, err
    assert "'../other/keep.txt', which is not a plain relative path" in err and f"{str(keep)!r}, which" in err
    assert "Traceback" not in err
    assert hashes(tmp_path, skip=target) == before  # everything outside the report, byte for byte
    assert keep.read_text() == "the user's" and (target / "link").is_symlink() and (target / "alias.txt").is_symlink()
    assert "../other/keep.txt" not in json.loads((target / MANIFEST).read_text())


@pytest.mark.parametrize(
    "mine", [["README.md"], ["table.csv", "table.md", "table.tex"], ["figures/by_learning_rate.png"]]
)
def test_users_own_files_in_the_report_folder_are_refused(results, tmp_path, capsys, mine):
    out = tmp_path / "out"
    for rel in mine:
        (out / NAME / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / NAME / rel).write_text(f"my {rel}")
    before = hashes(tmp_path)
    code, err = report(results, out, capsys)
    assert code == OutputError.exit_code == 7
    assert all(rel in err for rel in mine) and "did not write" in err and "--out" in err and "--force" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert hashes(tmp_path) == before  # nothing written at all


def test_a_report_file_edited_since_is_refused_and_force_backs_it_up(results, tmp_path, capsys):
    out = tmp_path / "out"
    target = write_report(load_study(GRID), results, out)
    (target / "table.md").write_text("my edits")
    (target / "notes.txt").write_text("my notes")  # not in the way: stays where it is
    before = hashes(tmp_path)
    code, err = report(results, out, capsys)
    assert code == 7 and "table.md" in err and "README.md" not in err
    assert hashes(tmp_path) == before
    code, err = report(results, out, capsys, "--force")
    assert code == 0, err
    backups = sorted(out.glob(f"{NAME}.backup-*"))
    assert len(backups) == 1 and hashes(backups[0]) == {"table.md": before[f"out/{NAME}/table.md"]}
    assert (target / "notes.txt").read_text() == "my notes"
    assert (target / "table.md").read_text() != "my edits"
    code, err = report(results, out, capsys)  # the report's own files again: replaced without a word
    assert code == 0 and err == ""


def test_report_folder_that_is_a_symlink_is_refused(results, tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "README.md").write_text("the victim's")
    out = tmp_path / "out"
    out.mkdir()
    (out / NAME).symlink_to(victim, target_is_directory=True)
    before = hashes(tmp_path)
    for extra in ((), ("--force",)):
        code, err = report(results, out, capsys, *extra)
        assert code == OutputError.exit_code and "is a symbolic link" in err and str(victim) in err
        assert len(err.strip().splitlines()) == 1
        assert hashes(tmp_path) == before


def test_a_symlinked_subfolder_of_the_report_is_refused(results, tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "by_learning_rate.png").write_text("the victim's")
    out = tmp_path / "out"
    (out / NAME).mkdir(parents=True)
    (out / NAME / "figures").symlink_to(victim, target_is_directory=True)
    before = hashes(tmp_path)
    code, err = report(results, out, capsys)
    assert code == 7 and "figures" in err and "did not write" in err
    assert hashes(tmp_path) == before
    code, err = report(results, out, capsys, "--force")  # the link is moved aside, never followed
    assert code == 0, err
    assert (victim / "by_learning_rate.png").read_text() == "the victim's"
    assert (out / NAME / "figures").is_dir() and not (out / NAME / "figures").is_symlink()
    assert next(out.glob(f"{NAME}.backup-*/figures")).is_symlink()


@pytest.mark.parametrize("inside", [False, True])
def test_a_report_is_never_written_into_a_results_store(results, tmp_path, capsys, inside):
    out = results / NAME if inside else results  # --out RESULTS/<study>, or --out RESULTS itself
    before = hashes(results)
    code, err = report(results, out, capsys)
    assert code == OutputError.exit_code and "holds stored runs (part-*.parquet)" in err and "another --out" in err
    assert hashes(results) == before
