"""Two stores of the same studies, made in two numerics modes: do their results differ beyond seed noise?

    git worktree add /tmp/before COMMIT        # the repository when its shipped runs were in the old mode
    python benchmarks/compare_stores.py /tmp/before/reports/_runs reports/_runs --out benchmarks/mode_switch.json

The same run (run id: configuration and seed) starts from the same initial parameters and sees the same batches
and dropout masks in either mode; only the arithmetic's rounding differs. So each configuration's test accuracies
are compared paired by seed (hpstudy.reporting.stats.compare: paired t-test and its confidence interval), and the
p-values are Holm-adjusted within each study and over all studies' configurations together (the question "did the
switch change any result" asks of them all). Configurations whose runs differ by the same amount in every seed
(most often: the same accuracy in both modes) have no spread to test and are left out of the counts. Prints one
line per study and one for all, and writes every figure to --out.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from hpstudy import store
from hpstudy.reporting import stats

COLUMNS = ["run_id", "trial_id", "seed", "test_accuracy", "environment"]


def load(folder: Path):
    """The runs of one store, indexed by run id, with the numerics mode each was made in."""
    runs = store.read_runs(folder, columns=COLUMNS).set_index("run_id")
    runs["mode"] = runs["environment"].map(lambda text: json.loads(text).get("numerics"))
    return runs.drop(columns="environment")


def compare_study(before: Path, after: Path, confidence: float = 0.95) -> dict:
    """Per configuration, the paired difference after - before in test accuracy; the study's Holm-adjusted p."""
    old_all, new_all = load(before), load(after)
    shared = old_all.index.intersection(new_all.index)
    old, new = old_all.loc[shared], new_all.loc[shared]
    trials, pvalues = [], []
    for trial in sorted(set(old["trial_id"])):
        ids = sorted(old.index[old["trial_id"] == trial], key=lambda rid: int(old.at[rid, "seed"]))
        a, b = new.loc[ids, "test_accuracy"].to_numpy(float), old.loc[ids, "test_accuracy"].to_numpy(float)
        d = stats.compare(a, b, paired=True, confidence=confidence)
        trials.append(
            {
                "trial_id": trial,
                "seeds": len(ids),
                "mean_difference": d.mean_diff,
                "ci": [d.ci_low, d.ci_high],
                "p": d.t_pvalue,
            }
        )
        pvalues.append(d.t_pvalue)
    adjusted = stats.holm(pvalues) if trials else np.array([])
    for entry, p in zip(trials, adjusted):
        entry["holm_p"] = None if math.isnan(p) else float(p)
        entry["p"] = None if math.isnan(entry["p"]) else entry["p"]
    tested = [e["holm_p"] for e in trials if e["holm_p"] is not None]
    overall = stats.compare(new["test_accuracy"].to_numpy(float), old["test_accuracy"].to_numpy(float), paired=True)
    return {
        "modes": {"before": sorted(set(old["mode"])), "after": sorted(set(new["mode"]))},
        "runs": int(len(shared)),
        "runs_only_before": int(len(old_all) - len(shared)),
        "runs_only_after": int(len(new_all) - len(shared)),
        "trials": len(trials),
        "trials_tested": len(tested),
        "same_test_accuracy_runs": int((new["test_accuracy"] == old["test_accuracy"]).sum()),
        "mean_test_accuracy": {
            "before": float(old["test_accuracy"].mean()),
            "after": float(new["test_accuracy"].mean()),
        },
        "mean_difference": overall.mean_diff,
        "mean_difference_ci": [overall.ci_low, overall.ci_high],
        "smallest_holm_p": min(tested) if tested else None,
        "trials_below_0.05_after_holm": sum(p < 0.05 for p in tested),
        "per_trial": trials,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="results folder of the stores made in the old mode")
    parser.add_argument("after", type=Path, help="results folder of the same studies' stores in the new mode")
    parser.add_argument("--out", type=Path, help="JSON file for every figure")
    args = parser.parse_args()
    results = {}
    for folder in sorted(p for p in args.after.iterdir() if p.is_dir() and (args.before / p.name).is_dir()):
        r = results[folder.name] = compare_study(args.before / folder.name, folder)
        lo, hi = (100 * x for x in r["mean_difference_ci"])
        smallest = "none tested" if r["smallest_holm_p"] is None else f"{r['smallest_holm_p']:.2f}"
        print(
            f"{folder.name}: {r['runs']} runs ({'/'.join(r['modes']['before'])} -> {'/'.join(r['modes']['after'])}), "
            f"mean test accuracy {100 * r['mean_test_accuracy']['before']:.2f} -> "
            f"{100 * r['mean_test_accuracy']['after']:.2f} ({100 * r['mean_difference']:+.3f} points, "
            f"95% CI {lo:+.3f} to {hi:+.3f}); {r['trials']} configurations, smallest Holm-adjusted p {smallest}, "
            f"{r['trials_below_0.05_after_holm']} below 0.05"
        )
    tested = [(name, e) for name, r in results.items() for e in r["per_trial"] if e["p"] is not None]
    adjusted = stats.holm([e["p"] for _, e in tested]) if tested else np.array([])
    smallest = min(adjusted, default=math.nan)
    results["all"] = {
        "trials_tested": len(tested),
        "smallest_holm_p": None if math.isnan(smallest) else float(smallest),
        "trials_below_0.05_after_holm": int((adjusted < 0.05).sum()),
    }
    print(
        f"all: {len(tested)} configurations tested, smallest Holm-adjusted p over all of them {smallest:.2f}, "
        f"{results['all']['trials_below_0.05_after_holm']} below 0.05"
    )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
