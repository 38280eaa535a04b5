"""`hpstudy verify`: train stored runs again and compare every stored value with the new one, bit for bit.

Before training, the environment recorded with the runs is compared with this one (packages, numerics
mode and settings, ISA floor, device, chunk width, dataset) and with the lock file, and every difference
is named: a mismatch that follows is then explained, not a mystery. Runs are retrained in the numerics
mode they were made in, through the same executor as `hpstudy run`, and nothing is written to the store,
except with add_predictions (`--add-predictions`): then the test-set predictions of the runs found equal in
every stored value are added to their parts (hpstudy/predictions.py), and nothing for any other run; or
with amend_evaluation (`--amend-evaluation REASON`): then the runs whose training reproduced bit for bit
but whose evaluation values did not get the new evaluation values, each old and new value written to the
store's amendment log with the reason (hpstudy/amend.py). A run with any other difference is never amended.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from hpstudy import store
from hpstudy.config import RunConfig
from hpstudy.errors import StoreError, StudyError
from hpstudy.runs import HISTORY_FIELDS, RunSpec

# Every stored value that training determines. Timing and the environment record are not results.
COMPARED = (
    "run_id",
    "param_sha256",
    "epochs_run",
    "best_epoch",
    *HISTORY_FIELDS,
    "final_train_loss",
    "final_train_accuracy",
    "final_val_loss",
    "final_val_accuracy",
    "best_val_accuracy",
    "test_loss",
    "test_accuracy",
    "chunk_width",
    "group_id",
)
LOCK_FILE = Path(__file__).resolve().parent.parent / "requirements.lock"


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """One stored value that training again did not reproduce."""

    run_id: str
    field: str
    stored: object
    now: object


@dataclasses.dataclass
class Outcome:
    """What a verification found."""

    checked: int = 0
    matched: int = 0
    environment: list[str] = dataclasses.field(default_factory=list)
    mismatches: list[Mismatch] = dataclasses.field(default_factory=list)
    added: list = dataclasses.field(default_factory=list)  # predictions.Added per store (add_predictions)
    amended: list = dataclasses.field(default_factory=list)  # amend.Amended per store (amend_evaluation)

    @property
    def amended_runs(self) -> int:
        return sum(a.runs for a in self.amended)

    @property
    def ok(self) -> bool:
        """Every checked run matched, or differed only in evaluation values that were amended."""
        return self.checked > 0 and self.matched + self.amended_runs == self.checked


def evaluation_only(found: list[Mismatch]) -> bool:
    """Whether a run's differences are all in what evaluation gives (its training reproduced)."""
    from hpstudy.amend import EVALUATION_FIELDS

    return bool(found) and all(m.field in EVALUATION_FIELDS for m in found)


def find_store(path: str | Path, results: str | Path | None = None) -> list[Path]:
    """The study stores `path` names: a store, a results folder of stores, or a report folder (whose
    runs are in `results`/<study>, else in the shipped layout's ../_runs/<study>)."""
    path = Path(path)
    if not path.is_dir():
        raise StoreError(f"{path} is not a folder; expected a study's store, a results folder or a report folder.")
    if any(path.glob("part-*.parquet")):
        return [path]
    stores = sorted(p for p in path.iterdir() if p.is_dir() and any(p.glob("part-*.parquet")))
    if stores:
        return stores
    if (path / "README.md").is_file():
        for candidate in ([Path(results) / path.name] if results else []) + [path.parent / "_runs" / path.name]:
            if any(candidate.glob("part-*.parquet")):
                return [candidate]
        raise StoreError(
            f"{path} looks like a report folder, but its runs are not in "
            f"{(Path(results) / path.name) if results else path.parent / '_runs' / path.name}; "
            "give the results folder they were stored in with --results."
        )
    raise StoreError(f"{path} holds no stored runs (no part-*.parquet in it or in its subfolders).")


def check_report_runs(folder: Path, stores: list[Path], stored: list[pd.DataFrame]) -> None:
    """StoreError when a report folder lists runs it was made from that its store no longer holds (a
    report made before reports listed their runs is checked against whatever is stored)."""
    from hpstudy.reporting.outputs import read_run_list

    listed = read_run_list(folder) if (folder / "README.md").is_file() else None
    if listed is None:
        return
    present = {rid for runs in stored for rid in runs["run_id"]}
    missing = sorted(set(listed) - present)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise StoreError(
            f"the report {folder} was made from {len(listed)} runs, and {len(missing)} of them are not in "
            f"{', '.join(map(str, stores))}: {shown}. Restore them (from version control, or `hpstudy run` the study "
            "with the same seeds into that folder) and verify again; nothing was trained."
        )


def sample(runs: pd.DataFrame, k: int | None) -> pd.DataFrame:
    """All runs, or a deterministic sample of k: the k smallest run ids (ids are hashes, so this spreads
    over trials and seeds, and the same store always gives the same sample)."""
    ordered = runs.sort_values("run_id", kind="stable")
    return ordered if k is None else ordered.head(k)


def read_lock(path: Path = LOCK_FILE) -> dict[str, str]:
    """{distribution: version} from a pip-compile / uv lock file (lines `name==version`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyError(f"--lock {path} cannot be read ({exc}); pass a lock file (requirements.lock).") from exc
    versions = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;\\]+)", line.strip())
        if match:
            versions[_normal(match.group(1))] = match.group(3)
    if not versions:
        raise StudyError(
            f"--lock {path} is not a lock file: no line of the form name==version in it; pass the "
            "repository's requirements.lock (or a pip-compile / uv lock file)."
        )
    return versions


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_differences(lock: dict[str, str]) -> list[tuple[str, str, str | None]]:
    """(distribution, locked version, installed version or None) wherever they differ."""
    from hpstudy.environment import installed_versions

    installed = installed_versions(lock)
    return [(name, version, installed[name]) for name, version in sorted(lock.items()) if installed[name] != version]


def environment_lines(runs: pd.DataFrame, lock_path: Path | None) -> list[str]:
    """Every bit-deciding difference between the runs' recorded environments and this one, as lines."""
    from hpstudy.environment import differences, fingerprint

    lines = []
    for text, group in runs.groupby("environment", sort=True):
        recorded = json.loads(text)
        mode = recorded.get("numerics") or "native"
        for field, old, new in differences(recorded, fingerprint(mode)):
            lines.append(f"{field}: recorded {old!r} ({len(group)} runs), here {new!r}")
    width = _width_lines(runs)
    lines += width
    if lock_path is not None:
        if lock_path.is_file():
            for name, locked, installed in lock_differences(read_lock(lock_path)):
                lines.append(f"package {name}: lock file {locked}, installed {installed or 'not installed'}")
        else:
            lines.append(f"lock file {lock_path} not found: installed versions not checked against it")
    return lines


def _width_lines(runs: pd.DataFrame) -> list[str]:
    """Runs whose recorded chunk width differs from what this version's width rule gives."""
    from hpstudy.training.engine import chunk_width

    lines = []
    for (config_text, width), group in runs.groupby(["config", "chunk_width"], sort=True):
        now = chunk_width(RunConfig.from_canonical(config_text).static())
        if int(width) != now:
            lines.append(f"chunk width: recorded {int(width)}, here {now} ({len(group)} runs)")
    return lines


def _bits(value) -> object:
    """A value in a form whose equality is bit equality (floats by their IEEE-754 bytes)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_bits(v) for v in value)
    if isinstance(value, (float, np.floating)):
        return struct.pack("<d", float(value))
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def _show(value) -> object:
    if isinstance(value, np.ndarray):
        return [float(v) for v in value]
    if isinstance(value, float) and not math.isnan(value):
        return repr(value)
    return value


def _has(stored: pd.Series, field: str) -> bool:
    """Whether the stored run holds `field` (prediction columns: absent from older runs and parts)."""
    return field in stored.index and isinstance(stored[field], bytes)


def compare(stored: pd.Series, now: dict) -> list[Mismatch]:
    """Every compared field whose stored value differs from the new one, bit for bit; the test-set
    predictions too where the run has them stored."""
    found = [
        Mismatch(stored["run_id"], field, _show(stored[field]), _show(now[field]))
        for field in COMPARED
        if _bits(stored[field]) != _bits(now[field])
    ]
    for field in store.PREDICTION_COLUMNS:
        if _has(stored, field) and stored[field] != now.get(field):
            differ = sum(a != b for a, b in zip(stored[field], now.get(field) or b""))
            found.append(Mismatch(stored["run_id"], field, f"{len(stored[field])} bytes", f"{differ} bytes differ"))
    return found


def _datasets(runs: pd.DataFrame, data_dir):
    """{(dataset, validation): Dataset} for the runs' configurations."""
    from hpstudy import data as hdata

    loaded = {}
    for config_text in runs["config"].unique():
        config = RunConfig.from_canonical(config_text)
        key = (config.dataset, config.validation)
        if key in loaded:
            continue
        loaded[key] = hdata.load_dataset(config.dataset, data_dir, config.validation, download=False)
    return loaded


def verify(
    path: str | Path,
    k: int | None = None,
    data_dir: str | None = None,
    workers: int = 1,
    results: str | Path | None = None,
    lock_path: Path | None = LOCK_FILE,
    progress: bool = True,
    load_data=None,
    add_predictions: bool = False,
    amend_evaluation: str | None = None,
) -> Outcome:
    """Retrain the stored runs under `path` (or a deterministic sample of k per store) and compare.

    load_data: optional {(dataset, validation): Dataset} maker for tests (default: the real files).
    add_predictions: afterwards, add the test-set predictions of every run found equal in every stored
    value, on the dataset it was recorded with, to the parts whose runs all were (hpstudy/predictions.py).
    amend_evaluation: the reason (required, written to the log) for replacing the stored evaluation values
    of runs whose every other value reproduced (hpstudy/amend.py); refused where the environment differs
    from the recorded one, since the new values must come from the environment the runs were made in.
    """
    if amend_evaluation is not None and not amend_evaluation.strip():
        raise StudyError("--amend-evaluation needs a reason (it is written to the store's amendment log).")
    if amend_evaluation is not None and add_predictions:
        raise StudyError("--amend-evaluation and --add-predictions are separate passes; run one, then the other.")
    if amend_evaluation is not None:
        from hpstudy.amend import amend_store, code_version

        version = code_version()  # the code this process trains with: read now, not when the log is written
    from hpstudy.environment import fingerprint
    from hpstudy.predictions import consistent
    from hpstudy.runner import prepare_training, train

    outcome = Outcome()
    if lock_path is not None and lock_path.is_file():
        read_lock(lock_path)  # a lock file that is not one fails before anything is trained
    stores = find_store(path, results)
    stored = [store.read_runs(s) for s in stores]
    if stores != [Path(path)]:
        check_report_runs(Path(path), stores, stored)
    chosen = [sample(runs_, k).assign(_store=str(s)) for s, runs_ in zip(stores, stored)]
    runs = pd.concat(chosen, ignore_index=True)
    if runs.empty:
        raise StoreError(f"{path} holds no runs to verify.")
    modes = {json.loads(t).get("numerics") or "native" for t in runs["environment"]}
    if len(modes) > 1:
        raise StoreError(
            f"{path} holds runs of several numerics modes ({', '.join(sorted(modes))}); verify each store apart."
        )
    mode = modes.pop()
    in_process = prepare_training(workers, mode)  # before anything starts JAX in this process
    fingerprint(mode)
    outcome.environment = environment_lines(runs, lock_path)
    datasets = (load_data or (lambda r: _datasets(r, data_dir)))(runs)
    for fp_recorded, group in runs.groupby("dataset_fingerprint"):
        here = {d.fingerprint for d in datasets.values()}
        if fp_recorded not in here:
            outcome.environment.append(
                f"dataset fingerprint: recorded {fp_recorded} ({len(group)} runs), here {', '.join(sorted(here))}"
            )
    for line in outcome.environment:
        print(f"environment differs: {line}", file=sys.stderr)
    if amend_evaluation is not None and outcome.environment:
        raise StoreError(
            f"not amending {path}: this environment differs from the recorded one (above), so new evaluation "
            "values would not be the ones its runs' own environment gives. Nothing was trained or written."
        )
    # keyed by what the run is, not by its stored id: a changed identity rule shows as a run_id mismatch
    rows = {(RunConfig.from_canonical(row["config"]).canonical(), int(row["seed"])): row for _, row in runs.iterrows()}
    reproduced: dict[str, tuple[bytes, bytes]] = {}  # run id: (predictions, correct bits), every value equal
    amended: dict[Path, object] = {}  # store: amend.Amended, over every chunk amended so far
    with tqdm(total=len(runs), unit="run", desc="verify", file=sys.stderr, disable=not progress) as bar:
        for (dataset_name, validation), dataset in datasets.items():
            specs = [
                RunSpec(RunConfig.from_canonical(config), seed, row["trial_id"])
                for (config, seed), row in rows.items()
                if (row_config := RunConfig.from_canonical(config)).dataset == dataset_name
                and row_config.validation == validation
            ]

            def on_chunk(results_, dataset=dataset) -> None:
                to_amend: dict[Path, tuple[dict, dict]] = {}  # store: ({run id: stored}, {run id: new values})
                for result in results_:
                    row = rows[(result.spec.config.canonical(), result.spec.seed)]
                    now = store.to_record(result, row["study"], row["study_sha256"], dataset.fingerprint, {})
                    found = compare(row, now)
                    if amend_evaluation is not None and evaluation_only(found):
                        old, new = to_amend.setdefault(Path(row["_store"]), ({}, {}))
                        old[row["run_id"]] = {m.field: row[m.field] for m in found}
                        new[row["run_id"]] = {m.field: now[m.field] for m in found}
                    if (
                        not found
                        and row["dataset_fingerprint"] == dataset.fingerprint
                        and result.test_predictions
                        and consistent(result.test_correct, len(result.test_predictions), row["test_accuracy"])
                    ):
                        reproduced[row["run_id"]] = (result.test_predictions, result.test_correct)
                    outcome.checked += 1
                    outcome.matched += not found
                    outcome.mismatches.extend(found)
                # Written chunk by chunk, so that an interrupted pass keeps what it has re-made (a rerun finds
                # those runs equal and goes on with the rest).
                for directory, (old, new) in sorted(to_amend.items()):
                    amended[directory] = amend_store(
                        directory, old, new, amend_evaluation, version, amended.get(directory)
                    )
                bar.update(len(results_))

            try:
                train(specs, dataset, on_chunk, workers, mode, in_process)
            finally:
                outcome.amended = [amended[d] for d in sorted(amended)]
    if add_predictions:
        from hpstudy.predictions import add_to_store

        outcome.added = [add_to_store(s, reproduced) for s in stores]
    return outcome
