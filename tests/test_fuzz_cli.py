"""Fuzzing the real command: a few hundred generated study files and argument lists (a seeded generator,
so a failure names a case that reproduces), each run through `hpstudy.cli.main` in this process.

Every case must end with an exit code that docs/errors.md lists (or 0, or argparse's 2), no traceback,
at most one error line, and the stored runs and study files unchanged. Nothing trains: loading a dataset
is replaced by a DataError, so a case that passes every check stops there (exit 3), as a run without its
data would.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import time
from pathlib import Path

import pytest

from hpstudy import cli, store
from hpstudy import data as hdata
from hpstudy.errors import DataError
from hpstudy.reporting import figures
from hpstudy.reporting.build import synthetic_records
from hpstudy.study import load_study
from tests.conftest import FACTORS, SMALL_STUDY

ROOT = Path(__file__).resolve().parent.parent
CASES = int(os.environ.get("HPSTUDY_FUZZ_CASES", 300))  # more, locally, to hunt
SEED = int(os.environ.get("HPSTUDY_FUZZ_SEED", 20261206))
# The exit codes docs/errors.md documents (its table), and 0; argparse's usage errors exit 2 as well.
DOC_CODES = {int(c) for c in re.findall(r"^\| (\d+) \| `", (ROOT / "docs" / "errors.md").read_text(), re.M)} | {0}

VALUES = [
    "0",
    "1",
    "2",
    "-1",
    "-3",
    "3:2",
    "2:5",
    "1:",
    ":",
    "a",
    "",
    " ",
    "1.5",
    "nan",
    "1e300",
    "99999999999",
    "0:18446744073709551616",
    "-1/3",
    "3/3",
    "0/2",
    "1/0",
    "a/b",
    "x" * 300,
    "ü∂\u202e",
    "--",
    "\x7f",
    "/nonexistent",
    "~no_such_user/x",
    "../..",
    ".",
    "notaurl",
]
TOKENS = [
    '"x"',
    "-1",
    "0",
    "1",
    "1e300",
    "-1e300",
    "nan",
    "inf",
    "[]",
    "[0]",
    "[100000000]",
    "{}",
    '""',
    "true",
    "10000000000000000000000000000000",
    '"../.."',
    '"a/b"',
    '[1, "a"]',
    "0.5",
    "{ a = 1 }",
    '"tfds:x"',
]


def _mutate_study(rng: random.Random) -> str:
    """The small study file with up to three random edits: values replaced, lines dropped, doubled, cut."""
    lines = SMALL_STUDY.format(factors=FACTORS).splitlines()
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        i = rng.randrange(len(lines))
        edit = rng.random()
        if edit < 0.5 and "=" in lines[i]:
            lines[i] = lines[i].split("=", 1)[0] + "= " + rng.choice(TOKENS)
        elif edit < 0.6:
            del lines[i]
        elif edit < 0.7:
            lines.insert(i, lines[i])
        elif edit < 0.8:
            lines.insert(i, f"{rng.choice(['lr', 'seeds', 'epochs', 'name', 'zzz'])} = {rng.choice(TOKENS)}")
        elif edit < 0.9:
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
        else:
            lines.insert(
                i,
                rng.choice(
                    [
                        "[published]",
                        "[[published]]\ntest_accuracy = 9716",
                        "[study",
                        "\x00",
                        "=",
                        '[design.space]\nlearning_rate = { type = "float", low = 1, high = 0 }',
                    ]
                ),
            )
        if not lines:
            break
    return "\n".join(lines) + "\n"


def _options(rng: random.Random, command: str, paths: dict[str, Path]) -> list[str]:
    """Random options for a subcommand: mostly its own, sometimes another's, values from VALUES or paths."""
    own = {
        "run": [
            "--seeds",
            "--workers",
            "--max-epochs",
            "--dataset",
            "--shard",
            "--results",
            "--data-dir",
            "--numerics",
            "--scheduler",
            "--yes",
            "--no-download",
            "--allow-mixed",
            "--wait",
        ],
        "show": ["--seeds", "--workers", "--max-epochs", "--dataset", "--results"],
        "report": ["--seeds", "--max-epochs", "--dataset", "--results", "--out"],
        "list": ["--studies", "--results"],
        "verify": ["--sample", "--workers", "--lock", "--results", "--data-dir"],
        "merge": ["--allow-mixed"],
        "compact": ["--runs-per-part"],
        "new": ["--file"],
    }[command]
    argv: list[str] = []
    for _ in range(rng.randint(0, 4)):
        option = rng.choice(own) if rng.random() < 0.9 else rng.choice(["--bogus", "-x", "--seeds", "--force"])
        argv.append(option)
        if option in ("--yes", "--no-download", "--allow-mixed", "--wait", "--force"):
            continue
        if option == "--scheduler":  # a reachable-looking address would wait 30 s for a cluster
            argv.append(rng.choice(["notaurl", ""]))
        elif option in ("--results", "--out", "--data-dir", "--studies", "--lock", "--file") and rng.random() < 0.6:
            argv.append(str(rng.choice(list(paths.values()))))
        else:
            argv.append(rng.choice(VALUES))
    return argv


def generate(rng: random.Random, case: int, paths: dict[str, Path]) -> list[str]:
    """One argument list; may write a mutated study file into paths['scratch']."""
    command = rng.choice(["run", "run", "show", "show", "report", "list", "verify", "merge", "compact", "new"])
    if command in ("run", "show", "report"):
        if rng.random() < 0.7:
            study = paths["scratch"] / f"case{case}.toml"
            study.write_bytes(_mutate_study(rng).encode("utf-8", "surrogateescape"))
        else:
            study = rng.choice([paths["studies"] / "small.toml", paths["scratch"], "small", "nonexistent", ""])
        extra = ["--results", str(paths["results"])] if command != "run" else ["--results", str(paths["scratch"] / "r")]
        if command == "report":
            extra += ["--out", str(paths["scratch"] / "out")]
        return [command, str(study), *extra, *_options(rng, command, paths)]
    if command == "list":
        return [command, "--studies", str(paths["studies"]), *_options(rng, command, paths)]
    if command == "verify":
        return [
            command,
            str(rng.choice([paths["store"], paths["results"], paths["scratch"], "/nonexistent"])),
            *_options(rng, command, paths),
        ]
    if command == "merge":
        sources = [
            str(rng.choice([paths["store"], paths["scratch"], paths["results"], "/nonexistent"]))
            for _ in range(rng.randint(0, 2))
        ]
        return [
            command,
            str(paths["scratch"] / "merged" / rng.choice(["small", "other", ""])),
            *sources,
            *_options(rng, command, paths),
        ]
    if command == "compact":
        return [
            command,
            str(rng.choice([paths["store"], paths["scratch"], "/nonexistent"])),
            *_options(rng, command, paths),
        ]
    return [
        command,
        rng.choice(["mine", "", "..", "a/b", "x" * 200, "-1"]),
        "--file",
        str(paths["scratch"] / rng.choice(["new.toml", "sub/new.toml", ""])),
        *_options(rng, command, paths),
    ]


def _stored(paths: dict[str, Path]) -> dict[str, str]:
    """SHA-256 of every file in the results folder and of every study file (lock files are not stored data;
    a report written into the studies folder by `--out` is the user's choice, not a change to a study)."""
    files = [p for p in sorted(paths["results"].rglob("*")) if p.name not in (".lock", ".compaction.lock")]
    return {
        p.as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in [*files, *sorted(paths["studies"].glob("*.toml"))]
        if p.is_file()
    }


def _no_data(*args, **kwargs):
    raise DataError("fuzz: no dataset here (a case that passed every check stops before training).")


def test_generated_inputs_never_crash_and_never_change_stored_runs(tmp_path, monkeypatch, capsys):
    paths = {
        "studies": tmp_path / "studies",
        "results": tmp_path / "results",
        "scratch": tmp_path / "scratch",
        "missing": tmp_path / "missing",
    }
    for folder in ("studies", "scratch"):
        paths[folder].mkdir()
    (paths["studies"] / "small.toml").write_text(SMALL_STUDY.format(factors=FACTORS))
    study = load_study(paths["studies"] / "small.toml")
    paths["store"] = store.study_dir(paths["results"], study.name)
    store.write_chunk(paths["store"], synthetic_records(study, range(1)))  # one part: compact has nothing to do
    (paths["scratch"] / "work").mkdir()
    monkeypatch.chdir(paths["scratch"] / "work")
    monkeypatch.setattr(hdata, "load_dataset", _no_data)
    monkeypatch.setattr(figures, "make_figures", lambda a, directory: [])  # reports without figures: fast
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(hdata.ENV_DATA_DIR, raising=False)
    before = _stored(paths)
    rng = random.Random(SEED)
    seen: dict[int, int] = {}
    start = time.perf_counter()
    for case in range(CASES):
        argv = generate(rng, case, paths)
        capsys.readouterr()
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse: usage errors (2) and --help (0), as the command would exit
            code = exc.code
        except BaseException as exc:  # anything else would be a traceback
            pytest.fail(f"case {case} {argv!r} raised {exc!r}")
        err = capsys.readouterr().err
        seen[code] = seen.get(code, 0) + 1
        context = f"case {case}: hpstudy {' '.join(map(repr, argv))}\n{err}"
        assert code in DOC_CODES, context
        assert "Traceback" not in err, context
        if argv[0] != "list":  # list names every bad study file and store it meets, one line each
            assert len([line for line in err.splitlines() if "error:" in line]) <= 1, context
        assert _stored(paths) == before, f"stored files changed by {context}"
    print(f"fuzz: {CASES} cases in {time.perf_counter() - start:.1f} s, exit codes {dict(sorted(seen.items()))}")
    assert time.perf_counter() - start < 120
    # the generator reaches the checks it is meant to: study files, arguments, data, and success
    assert {0, 2, 3, 4} <= set(seen), seen
