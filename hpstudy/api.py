"""The Python API (for notebooks and scripts); the `hpstudy` command is a thin layer over it.

    import hpstudy
    study = hpstudy.load_study("naragundkar2024_grid")
    runs = hpstudy.run(study, seeds=3)           # a pandas DataFrame, one row per run
    table = hpstudy.summarize(study)             # one row per configuration: mean, CI, published
    figs = hpstudy.plots(study)                  # {name: matplotlib Figure}
    hpstudy.report(study)                        # results/_reports/<study>/

Importing this module is cheap and never imports JAX: training processes must be able to set up their
environment before JAX loads, so everything heavy is imported inside the functions that need it.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hpstudy.errors import Interrupted, StudyError, TooBigError

STUDIES_DIR = Path("studies")
DEFAULT_RESULTS = "results"
DEFAULT_OUT = "results/_reports"  # the same as hpstudy.reporting.build.DEFAULT_OUT (not imported: it loads pandas)


def resolve_study_path(arg: str | os.PathLike, studies: str | os.PathLike = STUDIES_DIR) -> Path:
    """A study given as a path, or as a name found in ./studies/ (a near miss gets a did-you-mean)."""
    if not isinstance(arg, (str, os.PathLike)) or not str(arg).strip():
        raise StudyError(f"study={arg!r} is invalid; expected a study file, or the name of one in {studies}/.")
    path = Path(arg)
    candidate = Path(studies) / f"{arg}.toml"
    if path.is_dir():  # a folder named like the study (its results, say) must not hide the study file
        if path.suffix != ".toml" and candidate.is_file():
            return candidate
        raise StudyError(
            f"{path} is a folder, not a study file; give the study file's path (NAME.toml), or "
            f"the name of a file in {studies}/."
        )
    if path.exists() or path.suffix == ".toml":
        return path
    if candidate.exists():
        return candidate
    from hpstudy.study import closest

    names = [p.stem for p in Path(studies).glob("*.toml")]
    near = closest(str(arg), names) or next(iter(difflib.get_close_matches(str(arg), names, n=1)), None)
    hint = f" Did you mean '{near}'?" if near else (f" Known studies: {', '.join(sorted(names))}." if names else "")
    raise StudyError(f"study {str(arg)!r} not found: no such file, and no {candidate}.{hint}")


def load_study(name_or_path, studies: str | os.PathLike = STUDIES_DIR):
    """A validated Study from a path, or a name in ./studies/; a Study passes through unchanged."""
    from hpstudy.study import Study
    from hpstudy.study import load_study as _load

    if isinstance(name_or_path, Study):
        return name_or_path
    return _load(resolve_study_path(name_or_path, studies))


def variant(study, dataset: str | None = None, max_epochs: int | None = None):
    """The study, on another dataset and/or with epochs capped (each a study of its own in the store)."""
    study = load_study(study)
    if dataset is not None:
        study = study.with_dataset(dataset)
    if max_epochs is not None:
        if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
            raise StudyError(f"--max-epochs {max_epochs} is invalid; expected an integer >= 1.")
        study = study.with_max_epochs(max_epochs)
    return study


# Seeds are stored as 64-bit integers (store.py's seed column): larger ones could not be written.
MAX_SEED = 2**63 - 1


def _seeds(study, seeds) -> range:
    """seeds: None (the study's default), N, 'N', 'A:B', or a range."""
    from hpstudy.study import parse_seeds

    if isinstance(seeds, range):
        if seeds.stop <= seeds.start or seeds.step != 1 or seeds.start < 0:
            raise StudyError(f"seeds={seeds!r} is invalid; expected a non-empty range of seeds >= 0 with step 1.")
        chosen = seeds
    elif seeds is None or isinstance(seeds, str) or (isinstance(seeds, int) and not isinstance(seeds, bool)):
        chosen = parse_seeds(None if seeds is None else str(seeds), study.default_seeds)
    else:
        raise StudyError(f"seeds={seeds!r} (--seeds) is invalid; expected N, 'N', 'A:B' or a range.")
    if chosen.stop - 1 > MAX_SEED:
        raise StudyError(
            f"--seeds {seeds if not isinstance(seeds, range) else chosen}: seed {chosen.stop - 1:,} is "
            f"too large; seeds are stored as 64-bit integers, at most {MAX_SEED:,}."
        )
    return chosen


def _count(seeds: range) -> int:
    """How many seeds (len() of a range overflows past 2**63)."""
    return seeds.stop - seeds.start


def _positive(name: str, value, default=None):
    """An integer >= 1 given for parameter `name` (None: `default`); StudyError naming the parameter."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StudyError(f"{name}={value!r} (--{name.replace('_', '-')}) is invalid; expected an integer >= 1.")
    return value


def folder_arg(name: str, value, default: str) -> Path:
    """A folder given for parameter `name` (None: `default`); StudyError for an empty string or a non-path."""
    if value is None:
        return Path(default)
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise StudyError(f"{name}={value!r} (--{name}) is invalid; expected a folder (default: {default}).")
    return Path(value)


def _flag(name: str, value) -> bool:
    """A bool given for parameter `name`."""
    if not isinstance(value, bool):
        raise StudyError(f"{name}={value!r} is invalid; expected True or False.")
    return value


def _shard(value):
    """shard: None, 'I/N', (I, N) or a storeops.Shard, as a Shard (or None)."""
    from hpstudy.storeops import Shard, parse_shard

    if value is None or isinstance(value, Shard):
        return value
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return parse_shard(f"{value[0]}/{value[1]}")
    if isinstance(value, str):
        return parse_shard(value)
    raise StudyError(f"shard={value!r} (--shard) is invalid; expected 'I/N', a pair (I, N) or a storeops.Shard.")


def _run_seeds(study, seeds) -> range:
    """The seeds of a run of `study`; TooBigError for more than budget.MAX_RUNS runs, before any list of
    runs is made."""
    from hpstudy import budget

    seeds = _seeds(study, seeds)
    total = len(study.trials) * _count(seeds)
    if total > budget.MAX_RUNS:
        raise TooBigError(
            f"{study.name}: {len(study.trials):,} trials x {_count(seeds):,} seeds = {total:,} runs; hpstudy runs at "
            f"most {budget.MAX_RUNS:,} runs per call. Ask for fewer seeds (--seeds A:B adds more later, same bits)."
        )
    return seeds


def plan(study, seeds=None, results: str | os.PathLike = DEFAULT_RESULTS, workers: int | None = None, shard=None):
    """(seeds, runs still missing, Estimate of their time) of running `study` over `seeds` (only the runs of
    `shard`, a storeops.Shard, if given); nothing runs.

    More than budget.MAX_RUNS runs in one call is a TooBigError, raised before any list of runs is made.
    """
    from hpstudy import budget, store
    from hpstudy.training.parallel import default_workers

    study = load_study(study)
    seeds = _run_seeds(study, seeds)
    results = folder_arg("results", results, DEFAULT_RESULTS)
    directory = store.study_dir(results, study.name)
    columns = ["run_id", "seconds", "epochs_run", "hp.hidden", "hp.validation", "hp.dataset"]  # what the estimate needs
    stored = store.read_runs(directory, study.name, columns) if directory.is_dir() else None
    done = set() if stored is None else set(stored["run_id"])
    todo = [
        spec for spec in study.runs(seeds) if spec.run_id not in done and (shard is None or shard.holds(spec.run_id))
    ]
    estimate = budget.estimate([s.config for s in todo], workers or default_workers(), stored)
    return seeds, todo, estimate


def check_memory(study) -> None:
    """TooBigError for a network whose parameters alone could not fit in this machine's memory (refused
    before any data is loaded, however the run is confirmed)."""
    from hpstudy import budget

    memory = budget.physical_memory()
    nets = {(t.config.pad_hidden or t.config.hidden, t.config.dataset) for t in study.trials}
    widest = max(nets, key=lambda net: budget.parameters(*net), default=None)
    if memory is None or widest is None or budget.memory_bytes(*widest) <= memory:
        return
    raise TooBigError(
        f"{study.name}: hidden = {list(widest[0])} has {budget.parameters(*widest):,} parameters; training one run "
        f"needs at least {budget.memory_bytes(*widest) / 2**30:,.1f} GiB of memory, and this machine has "
        f"{memory / 2**30:,.1f} GiB. Use narrower hidden layers."
    )


def run(
    study,
    seeds=None,
    results: str | os.PathLike = DEFAULT_RESULTS,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    workers: int | None = None,
    max_epochs: int | None = None,
    dataset: str | None = None,
    yes: bool = False,
    confirm: Callable[[str], bool] | None = None,
    wait: bool = False,
    numerics_mode: str | None = None,
    allow_mixed: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    shard=None,
    scheduler=None,
):
    """Compute every missing run of `study` over `seeds` and return the runs of those seeds (a DataFrame).

    Runs already stored are not computed again; the result of each run does not depend on any of these
    arguments. `dataset` runs the study's design on another dataset (see Study.with_dataset), and
    `max_epochs` caps training for a smoke test; each is stored as a study of its own. A run estimated
    above the thresholds of hpstudy/budget.py needs yes=True, or `confirm` (called with a description)
    returning True; else TooBigError. `workers` above the usable cores is
    capped with a warning through `log`. A second process on the same store raises LockedError, or waits
    with wait=True. `numerics_mode` and `allow_mixed`: see hpstudy/training/numerics.py and runner.check_mixing;
    numerics_mode=None trains in the mode of the runs already stored, else in the default (runner.resolve_mode).
    Ctrl-C raises Interrupted, saying how many runs are stored and how to resume. `shard` ("I/N" or a
    storeops.Shard): only that shard's runs, for job arrays (`hpstudy merge` combines the stores).
    `scheduler`: a Dask scheduler address or distributed.Client to train on (hpstudy/training/distributed.py).
    The frame's attrs["run"] says what this call did (total, already_stored, computed, seconds, directory).
    """
    from hpstudy import budget, runner, store
    from hpstudy import data as hdata
    from hpstudy.training import numerics
    from hpstudy.training.compilation import cache_base
    from hpstudy.training.parallel import default_workers, usable_cores

    log = log or (lambda text: print(text, file=sys.stderr))
    study = variant(study, dataset, max_epochs)
    results = folder_arg("results", results, DEFAULT_RESULTS)
    workers = _positive("workers", workers)
    shard = _shard(shard)
    for name, value in (
        ("download", download),
        ("yes", yes),
        ("wait", wait),
        ("allow_mixed", allow_mixed),
        ("progress", progress),
    ):
        _flag(name, value)
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise StudyError(f"data_dir={data_dir!r} (--data-dir) is invalid; expected a folder.")
    if scheduler is not None and isinstance(scheduler, str) and not scheduler.strip():
        raise StudyError("scheduler='' (--scheduler) is invalid; expected a Dask scheduler address (tcp://HOST:8786).")
    check_memory(study)
    cache_base()  # a bad HPSTUDY_CACHE_DIR fails here, not in a worker after the data is loaded
    store.check_writable(store.study_dir(results, study.name))  # before estimating, loading or training
    client, opened = None, False
    if scheduler is not None:  # reach the cluster first: a wrong address fails before anything is planned
        from hpstudy.training.distributed import connect

        client, opened = connect(scheduler)
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        where = f"{workers} Dask worker(s) at {client.scheduler.address}"
    else:
        cores = len(usable_cores())
        if workers is None:
            workers = default_workers()
        elif workers > cores:
            log(
                f"hpstudy: warning: --workers {workers} is more than the {cores} usable cores; using {cores} "
                "(more processes than cores only compete for them; results are the same)."
            )
            workers = cores
        where = f"{workers} worker(s)"
    directory = store.study_dir(results, study.name)
    validation = study.validation
    seeds = _run_seeds(study, seeds)
    in_shard = runner.run_specs(study, seeds, shard)
    # The store is read once (runner.StoreSession): the estimate, the runs to compute and the frame returned
    # all come from that read and the runs this call stores.
    session = runner.StoreSession(
        directory,
        study.name,
        in_shard,
        wait,
        lambda pid: log(f"hpstudy: waiting for pid {pid}, which is running this study into {directory} ..."),
        columns=None,
    )
    try:
        with session:
            todo = session.todo
            estimate = budget.estimate([s.config for s in todo], workers, session.contents.runs)
            if todo and estimate.needs_confirmation() and not yes:
                what = (
                    f"{study.name}: {estimate.describe()} with {where} "
                    f"({'measured on this study' if estimate.measured else 'rate measured on the shipped studies'})"
                )
                if confirm is None or not confirm(what):
                    raise TooBigError(
                        f"{what}. That is above {budget_limits()}; pass --yes (yes=True) to start it, "
                        "or ask for fewer seeds or a smaller design."
                    )
            mode = runner.resolve_mode(numerics_mode, session.contents)
            if todo and progress:
                log(
                    f"{study.name}: {estimate.describe()} with {where} to compute "
                    f"({len(in_shard) - len(todo)} already stored)"
                )
            if todo and numerics_mode is None and mode != numerics.DEFAULT_MODE:
                log(
                    f"hpstudy: numerics mode {mode!r}, the mode of the runs stored in {directory} (the default, "
                    f"{numerics.DEFAULT_MODE!r}, would give other bits; pass --numerics to choose)"
                )
            report = runner.run_study(
                study,
                seeds,
                lambda: hdata.load_dataset(study.meta.get("dataset", "mnist"), data_dir, validation, download=download),
                results,
                progress=progress,
                workers=workers,
                numerics_mode=mode,
                allow_mixed=allow_mixed,
                wait=wait,
                shard=shard,
                scheduler=client,
                session=session,
            )
    except KeyboardInterrupt:
        stored = store.validate(directory, study.name) if directory.is_dir() else 0
        raise Interrupted(
            f"interrupted. {stored} runs of {study.name} are stored in {directory}; run the same command again "
            "to compute only the missing ones (the finished ones keep their bits)."
        ) from None
    finally:
        if opened:
            client.close()
    wanted = {spec.run_id for spec in in_shard}  # not runs of configurations the file no longer has
    runs = report.stored.runs
    runs = runs[runs["run_id"].isin(wanted)].reset_index(drop=True)
    runs.attrs["run"] = {
        "study": study.name,
        "trials": len(study.trials),
        "seeds": seeds,
        "total": report.total,
        "already_stored": report.already_stored,
        "computed": report.computed,
        "seconds": report.seconds,
        "directory": report.directory,
        "shard": None if shard is None else str(shard),
    }
    return runs


def budget_limits() -> str:
    """The confirmation thresholds, for messages."""
    from hpstudy import budget

    return f"{budget.CONFIRM_RUNS:,} runs or {budget.duration(budget.CONFIRM_SECONDS)}"


def results(study, results: str | os.PathLike = DEFAULT_RESULTS, seeds: Sequence[int] | None = None):
    """The stored runs of `study` that its file still describes (a DataFrame), checked part by part."""
    return _stored(study, results, seeds)


def _stored(study, results, seeds):
    from hpstudy.reporting.build import load_runs

    study = load_study(study)
    results = folder_arg("results", results, DEFAULT_RESULTS)
    return load_runs(study, results, _seed_list(study, seeds), checked=True)  # one pass, every part checked


def _seed_list(study, seeds) -> list[int] | None:
    """The seeds to read (None: every stored one); more than any store can hold is a TooBigError."""
    from hpstudy import budget

    if seeds is None:
        return None
    chosen = _seeds(study, seeds)
    if _count(chosen) > budget.MAX_RUNS:
        raise TooBigError(
            f"--seeds {seeds}: {_count(chosen):,} seeds; a store holds at most {budget.MAX_RUNS:,} runs "
            "per call of `hpstudy run`, so ask for the seeds that were run (or leave --seeds out for all)."
        )
    return list(chosen)


def analysis(study, results: str | os.PathLike = DEFAULT_RESULTS, seeds=None):
    """The report's analysis (hpstudy.reporting.analysis.Analysis) of the stored runs."""
    from hpstudy.reporting.build import analyze

    study = load_study(study)
    return analyze(study, _stored(study, results, seeds))


def summarize(study, results: str | os.PathLike = DEFAULT_RESULTS, seeds=None):
    """One row per configuration: the report's table (mean, intervals, the published value) as a DataFrame."""
    from hpstudy.reporting import tables

    return tables.table_frame(analysis(study, results, seeds))


def plots(study, results: str | os.PathLike = DEFAULT_RESULTS, seeds=None) -> dict:
    """The report's figures as matplotlib Figures, by name (nothing is written)."""
    import matplotlib as mpl

    from hpstudy.reporting import figures as F

    a = analysis(study, results, seeds)
    out = {}
    with mpl.rc_context(F.STYLE):
        for stem, _caption, build in F.plan(a):
            fig = build(a)
            if fig is not None:
                out[stem] = fig
    return out


def report(
    study,
    results: str | os.PathLike = DEFAULT_RESULTS,
    out: str | os.PathLike = DEFAULT_OUT,
    seeds=None,
    force: bool = False,
) -> Path:
    """Write OUT/<study>/ (README, tables, figures) from the stored runs; the folder written. Files there
    that no report wrote are refused, or with force=True moved to a dated backup first."""
    from hpstudy.reporting.build import write_report

    study = load_study(study)
    results = folder_arg("results", results, DEFAULT_RESULTS)
    out = folder_arg("out", out, DEFAULT_OUT)
    return write_report(study, results, out, _seed_list(study, seeds), force=_flag("force", force))
