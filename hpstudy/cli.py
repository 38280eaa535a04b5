"""Command line: `hpstudy run`, `hpstudy list`, `hpstudy report`, `hpstudy verify`, `hpstudy merge`,
`hpstudy compact`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hpstudy.errors import HpstudyError, StudyError

STUDIES_DIR = Path("studies")


def resolve_study_path(arg: str) -> Path:
    """A study given as a path, or as a name found in ./studies/."""
    path = Path(arg)
    if path.exists() or path.suffix == ".toml":
        return path
    candidate = STUDIES_DIR / f"{arg}.toml"
    if candidate.exists():
        return candidate
    raise StudyError(f"study {arg!r} not found: no such file, and no {candidate}.")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    """Run every missing (trial, seed) of a study and store each finished chunk."""
    from hpstudy import data as hdata
    from hpstudy import store
    from hpstudy.parallel import default_workers
    from hpstudy.runner import run_study
    from hpstudy.storeops import parse_shard
    from hpstudy.study import load_study, parse_seeds

    study = load_study(resolve_study_path(args.study))
    if args.max_epochs is not None:
        if args.max_epochs < 1:
            raise StudyError(f"--max-epochs {args.max_epochs} is invalid; expected an integer >= 1.")
        study = study.with_max_epochs(args.max_epochs)
    seeds = parse_seeds(args.seeds, study.default_seeds)
    if args.workers is None:
        args.workers = default_workers()
    validation = study.meta.get("validation", "test")
    shard = parse_shard(args.shard) if args.shard is not None else None
    report = run_study(
        study,
        seeds,
        lambda: hdata.load_mnist(args.data_dir, validation, download=not args.no_download),
        args.results,
        workers=args.workers,
        shard=shard,
        scheduler=args.scheduler,
        numerics_mode=args.numerics,
        allow_mixed=args.allow_mixed,
    )
    print(f"{study.name}: {len(study.trials)} trials x {len(seeds)} seeds"
          + (f", shard {shard}: {report.total} of them" if shard else f" = {report.total} runs") + "; "
          f"{report.already_stored} were already stored, {report.computed} computed"
          + (f" in {report.seconds:.1f} s ({report.seconds / report.computed:.2f} s per run)" if report.computed else "")
          + f"; results in {report.directory}")
    runs = store.read_runs(report.directory)
    runs = runs[runs["seed"].isin(list(seeds))]
    summary = runs.groupby("trial_id")["test_accuracy"].agg(["count", "mean", "std"])
    summary.columns = ["runs", "mean test acc", "std"]
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Every study file with its trials, runs per seed and stored runs."""
    from hpstudy import store
    from hpstudy.study import load_study

    paths = sorted(Path(args.studies).glob("*.toml"))
    print(f"{'study':<34} {'design':<7} {'trials':>6} {'runs/seed':>9} {'stored':>7}")
    invalid = []
    for path in paths:
        try:
            study = load_study(path)
        except StudyError as exc:  # one bad file must not hide the others
            invalid.append(str(exc))
            print(f"{path.stem:<34} {'INVALID':<7}")
            continue
        stored = len(store.stored_ids(store.study_dir(args.results, study.name)))
        print(f"{study.name:<34} {study.design_kind:<7} {len(study.trials):>6} {len(study.trials):>9} {stored:>7}")
    for message in invalid:
        print(f"hpstudy: error: {message}", file=sys.stderr)
    return StudyError.exit_code if invalid else 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write reports/<study>/ (README, tables, figures) from the study's stored runs."""
    from hpstudy.report import write_report
    from hpstudy.study import load_study, parse_seeds

    study = load_study(resolve_study_path(args.study))
    seeds = parse_seeds(args.seeds, study.default_seeds) if args.seeds is not None else None
    start = time.perf_counter()
    target = write_report(study, args.results, args.out, seeds)
    print(f"{study.name}: report written to {target} in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """Combine stores (say, the shards of a job array) into OUT."""
    from hpstudy.storeops import merge

    report = merge(args.out, args.stores)
    print(f"{report.directory}: {report.runs} runs; {report.written} written, "
          f"{report.duplicates} identical copies taken once")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    """Rewrite a store's parts into a few large ones, values unchanged."""
    from hpstudy.storeops import compact

    report = compact(args.store, args.runs_per_part)
    print(f"{report.directory}: {report.runs} runs in {report.parts_after} parts (were {report.parts_before})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Train stored runs again and compare every stored value bit for bit; exit 0 only if all match."""
    from hpstudy.errors import VerificationError
    from hpstudy.parallel import default_workers
    from hpstudy.verify import LOCK_FILE, verify

    outcome = verify(
        args.path, args.sample, args.data_dir, workers=args.workers or default_workers(), results=args.results,
        lock_path=Path(args.lock) if args.lock else LOCK_FILE,
    )
    for m in outcome.mismatches:
        print(f"MISMATCH run {m.run_id} {m.field}: stored {m.stored}, now {m.now}")
    print(f"{outcome.matched} of {outcome.checked} runs match bit for bit"
          + (f"; {len(outcome.environment)} environment differences (above)" if outcome.environment else "; environment as recorded"))
    if not outcome.ok:
        raise VerificationError(f"{outcome.checked - outcome.matched} of {outcome.checked} runs did not reproduce bit for bit.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="hpstudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume, or extend with seeds) a study")
    run.add_argument("study", help="study file, or the name of one in ./studies/")
    run.add_argument("--seeds", help="N for seeds 0..N-1, or A:B for seeds A..B-1 (default: the study's)")
    run.add_argument("--data-dir", help="folder holding the four MNIST .gz files (else $HPSTUDY_DATA_DIR, then the cache)")
    run.add_argument("--results", default="results", help="results folder (default: ./results)")
    run.add_argument("--max-epochs", type=int, help="smoke test: cap epochs (stored as a separate study)")
    run.add_argument("--workers", type=positive_int, default=None,
                     help="training processes, one core each (default: one per usable core); results do not depend on it")
    run.add_argument("--no-download", action="store_true", help="never download the dataset")
    run.add_argument("--numerics", choices=("portable", "native"), default="portable",
                     help="portable (default): the same bits on any x86-64 CPU with AVX2+FMA; native: faster, "
                          "bits valid on the same kind of CPU only (recorded with each run)")
    run.add_argument("--allow-mixed", action="store_true",
                     help="store runs beside runs made in another numeric environment (refused by default)")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="train on this Dask cluster (tcp://HOST:8786; needs hpstudy[dask]); the store stays here")
    run.add_argument("--shard", metavar="I/N",
                     help="only shard I of N (0 <= I < N), chosen by run identity: N array jobs, N stores, then `hpstudy merge`")
    run.set_defaults(func=cmd_run)
    ver = sub.add_parser("verify", help="train stored runs again and compare every stored value bit for bit")
    ver.add_argument("path", help="a study's store, a results folder, or a report folder")
    ver.add_argument("--sample", type=positive_int, help="verify K runs of each store (a fixed, deterministic choice)")
    ver.add_argument("--data-dir", help="folder holding the four MNIST .gz files (else $HPSTUDY_DATA_DIR, then the cache)")
    ver.add_argument("--results", help="results folder holding a report folder's runs (default: the report's ../_runs)")
    ver.add_argument("--workers", type=positive_int, default=None, help="training processes (default: one per usable core)")
    ver.add_argument("--lock", help="lock file to compare the installed packages with (default: the repository's requirements.lock)")
    ver.set_defaults(func=cmd_verify)
    lst = sub.add_parser("list", help="list the studies and how many runs are stored")
    lst.add_argument("--studies", default=str(STUDIES_DIR), help="folder of study files (default: ./studies)")
    lst.add_argument("--results", default="results", help="results folder (default: ./results)")
    lst.set_defaults(func=cmd_list)
    rep = sub.add_parser("report", help="write the report (README, tables, figures) of a study's stored runs")
    rep.add_argument("study", help="study file, or the name of one in ./studies/")
    rep.add_argument("--results", default="results", help="results folder (default: ./results)")
    rep.add_argument("--out", default="reports", help="reports folder; the report goes to OUT/<study>/ (default: ./reports)")
    rep.add_argument("--seeds", help="only seeds 0..N-1 (N) or A..B-1 (A:B) (default: every stored seed)")
    rep.set_defaults(func=cmd_report)
    mrg = sub.add_parser("merge", help="combine stores (e.g. the shards of a job array) into one")
    mrg.add_argument("out", help="the store to merge into: RESULTS/<study> (created if needed)")
    mrg.add_argument("stores", nargs="+", help="stores to merge: each a RESULTS/<study> folder")
    mrg.set_defaults(func=cmd_merge)
    cmp_ = sub.add_parser("compact", help="rewrite a store's many small parts into a few large ones (values unchanged)")
    cmp_.add_argument("store", help="the store: RESULTS/<study>")
    cmp_.add_argument("--runs-per-part", type=positive_int, default=20_000, help="runs per part (default: 20000)")
    cmp_.set_defaults(func=cmd_compact)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: user-facing errors become one message on stderr and a non-zero exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HpstudyError as exc:
        print(f"hpstudy: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
