"""Command line: `hpstudy run`, `list`, `show`, `report`, `new`, `verify`, `merge`, `compact`. A thin layer
over hpstudy.api (and hpstudy.storeops)."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from hpstudy import api
from hpstudy.api import STUDIES_DIR
from hpstudy.errors import DataError, HpstudyError, OutputError, StoreError, StudyError
from hpstudy.training import numerics

DATASET_HELP = (
    "run the study's design on another dataset: mnist, fashion_mnist, tfds:NAME or npz:PATH "
    "(stored as the study NAME.DATASET; the paper's numbers are not compared)"
)


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


def ask(what: str) -> bool:
    """Ask on the terminal whether to start a large run; False (refuse) when there is no terminal."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    print(f"{what}.", file=sys.stderr)
    try:
        return input("Start it? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def cmd_run(args: argparse.Namespace) -> int:
    """Run every missing (trial, seed) of a study and store each finished chunk."""
    runs = api.run(
        args.study,
        args.seeds,
        args.results,
        data_dir=args.data_dir,
        download=not args.no_download,
        workers=args.workers,
        max_epochs=args.max_epochs,
        dataset=args.dataset,
        yes=args.yes,
        confirm=ask,
        wait=args.wait,
        numerics_mode=args.numerics,
        allow_mixed=args.allow_mixed,
        shard=args.shard,
        scheduler=args.scheduler,
    )
    r = runs.attrs["run"]
    print(
        f"{r['study']}: {r['trials']} trials x {len(r['seeds'])} seeds"
        + (f", shard {r['shard']}: {r['total']} of them; " if r.get("shard") else f" = {r['total']} runs; ")
        + f"{r['already_stored']} were already stored, {r['computed']} computed"
        + (f" in {r['seconds']:.1f} s ({r['seconds'] / r['computed']:.2f} s per run)" if r["computed"] else "")
        + f"; results in {r['directory']}"
    )
    summary = runs.groupby("trial_id")["test_accuracy"].agg(["count", "mean", "std"])
    summary.columns = ["runs", "mean test acc", "std"]
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Every study file with its trials, runs per seed and stored runs; a bad file or store is marked."""
    from hpstudy import store
    from hpstudy.study import load_study

    try:
        is_folder = Path(args.studies).is_dir()
    except OSError:  # a name too long for the file system, say
        is_folder = False
    if not is_folder:
        raise StudyError(
            f"--studies {args.studies} is not a folder; pass the folder that holds the study files "
            f"(default: ./{STUDIES_DIR})."
        )
    results = api.folder_arg("results", args.results, api.DEFAULT_RESULTS)
    paths = sorted(Path(args.studies).glob("*.toml"))
    print(f"{'study':<34} {'design':<7} {'trials':>6} {'runs/seed':>9} {'stored':>7}")
    problems: list[HpstudyError] = []
    for path in paths:
        try:
            study = load_study(path)
        except (StudyError, DataError) as exc:  # one bad file (or its missing .npz data) must not hide the others
            problems.append(exc)
            print(f"{path.stem:<34} {'INVALID':<7}")
            continue
        try:
            stored = str(store.validate(store.study_dir(results, study.name), study.name))
        except StoreError as exc:  # nor one bad store
            problems.append(exc)
            stored = "CORRUPT"
        print(f"{study.name:<34} {study.design_kind:<7} {len(study.trials):>6} {len(study.trials):>9} {stored:>7}")
    for exc in problems:
        print(f"hpstudy: error: {exc}", file=sys.stderr)
    return max((exc.exit_code for exc in problems), default=0)


def cmd_show(args: argparse.Namespace) -> int:
    """A study's trials, runs per seed, stored runs and the estimated time of what is missing."""
    from hpstudy import budget, store
    from hpstudy.reporting.build import describe_seeds
    from hpstudy.training.parallel import default_workers

    study = api.variant(args.study, args.dataset, args.max_epochs)
    seeds, todo, estimate = api.plan(study, args.seeds, args.results, args.workers)
    directory = store.study_dir(args.results, study.name)
    stored = store.read_runs(directory, study.name, ["run_id", "seed"]) if directory.is_dir() else None
    meta = study.meta
    print(f"{study.name}: {meta.get('title', '')}".rstrip(": "))
    print(f"  file        {study.path}")
    print(f"  dataset     {meta.get('dataset', 'mnist')}, validation {study.validation}")
    print(
        f"  design      {study.design_kind}, {len(study.trials)} trials = {len(study.trials)} runs per seed; "
        f"default seeds {study.default_seeds}"
    )
    if stored is None or len(stored) == 0:
        print(f"  stored      none in {directory}")
    else:
        print(f"  stored      {len(stored)} runs in {directory} (seeds {describe_seeds(sorted(set(stored['seed'])))})")
    print(
        f"  to run      seeds {describe_seeds(list(seeds))}: {len(todo)} of {len(study.trials) * len(seeds)} runs missing"
        + (
            f", about {budget.duration(estimate.seconds)} with {args.workers or default_workers()} worker(s) "
            f"({'rate measured on this study' if estimate.measured else 'rate measured on the shipped studies'})"
            if todo
            else ""
        )
    )
    import pandas as pd

    from hpstudy.reporting.analysis import format_value

    table = pd.DataFrame(
        [
            # tuples as the reports write them: 128x128, and (name, value) pairs as decay=0.9, eps=1e-08
            {k: (format_value(k, v) if isinstance(v, tuple) else v) for k, v in t.values.items()}
            for t in study.trials
        ],
        index=[t.trial_id if study.design_kind == "random" else i + 1 for i, t in enumerate(study.trials)],
    )
    print("  trials" + ("" if len(table.columns) else ": one, the base configuration"))
    if len(table.columns):
        print("\n".join("    " + line for line in table.to_string().splitlines()))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write OUT/<study>/ (README, tables, figures) from the study's stored runs."""
    study = api.variant(args.study, args.dataset, args.max_epochs)
    start = time.perf_counter()
    target = api.report(study, args.results, args.out, args.seeds, force=args.force)
    print(f"{study.name}: report written to {target} in {time.perf_counter() - start:.1f} s")
    return 0


def _is_file(path: str) -> bool:
    """Whether `path` is a file (False for a path the file system cannot even look up)."""
    try:
        return Path(path).is_file()
    except OSError:
        return False


def cmd_verify(args: argparse.Namespace) -> int:
    """Train stored runs again and compare every stored value bit for bit; exit 0 only if all match."""
    from hpstudy.errors import VerificationError
    from hpstudy.training.parallel import default_workers
    from hpstudy.verify import LOCK_FILE, verify

    if args.lock is not None and not _is_file(args.lock):
        raise StudyError(f"--lock {args.lock} is not a file; pass a lock file (the repository's requirements.lock).")
    outcome = verify(
        args.path,
        args.sample,
        args.data_dir,
        workers=args.workers or default_workers(),
        results=args.results,
        lock_path=Path(args.lock) if args.lock else LOCK_FILE,
        add_predictions=args.add_predictions,
        amend_evaluation=args.amend_evaluation,
    )
    amended_ids = {rid for a in outcome.amended for rid in a.run_ids}
    for m in outcome.mismatches:
        label = "AMENDED" if m.run_id in amended_ids else "MISMATCH"
        print(f"{label} run {m.run_id} {m.field}: stored {m.stored}, now {m.now}")
    print(
        f"{outcome.matched} of {outcome.checked} runs match bit for bit"
        + (
            f"; {outcome.amended_runs} more reproduced their training, evaluation values amended"
            if outcome.amended
            else ""
        )
        + (
            f"; {len(outcome.environment)} environment differences (above)"
            if outcome.environment
            else "; environment as recorded"
        )
    )
    for amended in outcome.amended:
        print(
            f"{amended.directory}: evaluation values of {amended.runs} runs amended ({amended.values} fields, "
            f"in {len(amended.parts_written)} parts); every old and new value is in {amended.directory}/amendments.jsonl"
        )
    for added in outcome.added:
        print(
            f"{added.directory}: test-set predictions added to {added.runs_added} runs in {len(added.parts_written)} "
            f"parts; {added.already} runs had them; {len(added.left)} runs left without (not reproduced)"
        )
    if not outcome.ok:
        raise VerificationError(
            f"{outcome.checked - outcome.matched - outcome.amended_runs} of {outcome.checked} runs did not "
            "reproduce bit for bit"
            + (" (and were not amended: not only evaluation values differ)." if outcome.amended else ".")
        )
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    """Write a commented template study file that validates."""
    from hpstudy.template import new_study

    path = new_study(args.name, args.file, flavour=args.flavour)
    print(f"wrote {path}: edit it, check it with `hpstudy show {path}`, then `hpstudy run {path}`.")
    return 0


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("hpstudy")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def cmd_merge(args: argparse.Namespace) -> int:
    """Combine stores (say, the shards of a job array) into OUT."""
    from hpstudy.storeops import merge

    report = merge(args.out, args.stores, allow_mixed=args.allow_mixed)
    print(
        f"{report.directory}: {report.runs} runs; {report.written} written, "
        f"{report.duplicates} identical copies taken once"
    )
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    """Rewrite a store's small parts into a few large ones, values unchanged."""
    from hpstudy.storeops import compact

    report = compact(args.store, args.runs_per_part)
    print(f"{report.directory}: {report.runs} runs in {report.parts_after} parts (were {report.parts_before})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="hpstudy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"hpstudy {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    study_help = "study file, or the name of one in ./studies/"
    results_help = f"results folder (default: ./{api.DEFAULT_RESULTS})"

    run = sub.add_parser("run", help="run (or resume, or extend with seeds) a study")
    run.add_argument("study", help=study_help)
    run.add_argument("--seeds", help="N for seeds 0..N-1, or A:B for seeds A..B-1 (default: the study's)")
    run.add_argument(
        "--data-dir", help="folder holding the dataset's four .gz files (else $HPSTUDY_DATA_DIR, then the cache)"
    )
    run.add_argument("--results", default=api.DEFAULT_RESULTS, help=results_help)
    run.add_argument("--max-epochs", type=positive_int, help="smoke test: cap epochs (stored as a separate study)")
    run.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="training processes, one core each (default and maximum: one per usable core); results do not depend on it",
    )
    run.add_argument("--dataset", help=DATASET_HELP)
    run.add_argument("--no-download", action="store_true", help="never download the dataset")
    run.add_argument(
        "--yes", action="store_true", help="start even a run estimated above 10,000 runs or 4 hours without asking"
    )
    run.add_argument(
        "--wait", action="store_true", help="if another process is running this study, wait for it instead of stopping"
    )
    run.add_argument(
        "--numerics",
        choices=numerics.MODES,
        default=None,
        help="portable-v2 (the default): the same bits on any x86-64 CPU with AVX2+FMA, at about native speed; "
        "portable: the same promise, other bits, 1.5-2x slower (the earlier default); native: bits valid on the "
        "same kind of CPU only; fixed-order: the same bits on x86-64 (with FMA) and aarch64 (ARM, Apple silicon), "
        "slower. Recorded with each run; without this option, seeds added to a store keep its runs' mode",
    )
    run.add_argument(
        "--allow-mixed",
        action="store_true",
        help="store runs beside runs made in another numeric environment (refused by default)",
    )
    run.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="train on this Dask cluster (tcp://HOST:8786; needs hpstudy[dask]); the store stays here",
    )
    run.add_argument(
        "--shard",
        metavar="I/N",
        help="only shard I of N (0 <= I < N), chosen by run identity: N array jobs, N stores, then `hpstudy merge`",
    )
    run.set_defaults(func=cmd_run)

    ver = sub.add_parser("verify", help="train stored runs again and compare every stored value bit for bit")
    ver.add_argument("path", help="a study's store, a results folder, or a report folder")
    ver.add_argument("--sample", type=positive_int, help="verify K runs of each store (a fixed, deterministic choice)")
    ver.add_argument(
        "--data-dir",
        help="folder holding the four MNIST .gz files, or a runs' .npz file (else $HPSTUDY_DATA_DIR, then the cache)",
    )
    ver.add_argument("--results", help="results folder holding a report folder's runs (default: the report's ../_runs)")
    ver.add_argument(
        "--workers", type=positive_int, default=None, help="training processes (default: one per usable core)"
    )
    ver.add_argument(
        "--lock", help="lock file to compare the installed packages with (default: the repository's requirements.lock)"
    )
    ver.add_argument(
        "--add-predictions",
        action="store_true",
        help="add the test-set predictions of every run found equal in every stored value to its store",
    )
    ver.add_argument(
        "--amend-evaluation",
        metavar="REASON",
        help="replace the stored evaluation values (validation and test losses, accuracies, predictions) of runs "
        "whose training reproduced bit for bit but whose evaluation did not; every old and new value is logged "
        "with REASON in the store's amendments.jsonl",
    )
    ver.set_defaults(func=cmd_verify)

    lst = sub.add_parser("list", help="list the studies and how many runs are stored")
    lst.add_argument("--studies", default=str(STUDIES_DIR), help="folder of study files (default: ./studies)")
    lst.add_argument("--results", default=api.DEFAULT_RESULTS, help=results_help)
    lst.set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="a study's trials, runs per seed, stored runs and estimated time")
    show.add_argument("study", help=study_help)
    show.add_argument("--seeds", help="the seeds to estimate for (default: the study's)")
    show.add_argument("--results", default=api.DEFAULT_RESULTS, help=results_help)
    show.add_argument("--max-epochs", type=positive_int, help="show the smoke-test study of `run --max-epochs N`")
    show.add_argument("--dataset", help=DATASET_HELP)
    show.add_argument("--workers", type=positive_int, default=None, help="workers to estimate the time for")
    show.set_defaults(func=cmd_show)

    mrg = sub.add_parser("merge", help="combine stores (e.g. the shards of a job array) into one")
    mrg.add_argument("out", help="the store to merge into: RESULTS/<study> (created if needed)")
    mrg.add_argument("stores", nargs="+", help="stores to merge: each a RESULTS/<study> folder")
    mrg.add_argument(
        "--allow-mixed",
        action="store_true",
        help="merge runs made in different numeric environments side by side (refused by default)",
    )
    mrg.set_defaults(func=cmd_merge)

    cmp_ = sub.add_parser("compact", help="rewrite a store's many small parts into a few large ones (values unchanged)")
    cmp_.add_argument("store", help="the store: RESULTS/<study>")
    cmp_.add_argument("--runs-per-part", type=positive_int, default=20_000, help="runs per part (default: 20000)")
    cmp_.set_defaults(func=cmd_compact)

    rep = sub.add_parser("report", help="write the report (README, tables, figures) of a study's stored runs")
    rep.add_argument("study", help=study_help)
    rep.add_argument("--results", default=api.DEFAULT_RESULTS, help=results_help)
    rep.add_argument(
        "--out",
        default=api.DEFAULT_OUT,
        help=f"reports folder; the report goes to OUT/<study>/ (default: ./{api.DEFAULT_OUT})",
    )
    rep.add_argument("--seeds", help="only seeds 0..N-1 (N) or A..B-1 (A:B) (default: every stored seed)")
    rep.add_argument("--max-epochs", type=positive_int, help="report the smoke-test study of `run --max-epochs N`")
    rep.add_argument("--dataset", help=DATASET_HELP)
    rep.add_argument(
        "--force",
        action="store_true",
        help="move files in OUT/<study>/ that no report wrote (or that were edited) to a dated backup "
        "folder beside it, instead of refusing",
    )
    rep.set_defaults(func=cmd_report)

    new = sub.add_parser("new", help="write a commented template study file")
    new.add_argument("name", help="the study's name (letters, digits, '_', '-', '.')")
    new.add_argument("--file", help=f"where to write it (default: {STUDIES_DIR}/NAME.toml)")
    new.add_argument(
        "--flavour",
        default="keras",
        choices=("keras", "pytorch", "sklearn", "nielsen"),
        help="the library whose usual settings the template starts from (default: keras)",
    )
    new.set_defaults(func=cmd_new)
    return parser


# Options whose value may start with '-' (`--shard -1/3`, `--seeds -3`): argparse would take it for an
# option and say only "expected one argument"; joined as --option=VALUE, the value gets its own message.
VALUE_OPTIONS = ("--shard", "--seeds", "--workers", "--max-epochs", "--sample", "--runs-per-part")


def _join_dashed_values(argv: list[str]) -> list[str]:
    """`--shard -1/3` as `--shard=-1/3`, for the options in VALUE_OPTIONS."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if (
            argv[i] in VALUE_OPTIONS
            and i + 1 < len(argv)
            and argv[i + 1][:1] == "-"
            and argv[i + 1][:2] != "--"
            and argv[i + 1] != "-h"
        ):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point: user-facing errors become one message on stderr and a non-zero exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(_join_dashed_values(argv))
    try:
        return args.func(args)
    except HpstudyError as exc:
        message = re.sub(r"\s*\n\s*", " ", str(exc).strip())  # one line, whatever a library's text held
        print(f"hpstudy: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("hpstudy: interrupted; nothing was left half-written.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # a path no check above foresaw (too long, a link loop, no permission): one line
        from hpstudy.store import _why

        where = f" {exc.filename}" if exc.filename else ""
        print(f"hpstudy: error: cannot use the path{where}: {_why(exc)}. Nothing was written.", file=sys.stderr)
        return OutputError.exit_code


if __name__ == "__main__":
    sys.exit(main())
