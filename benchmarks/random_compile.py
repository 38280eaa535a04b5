"""Compiles and wall time of the random search with and without width buckets (design.width_buckets).

Runs `hpstudy run studies/vallepalli2024_search.toml --max-epochs 1 --seeds 1 --workers 1` on real MNIST
twice, each into a fresh store with the persistent compilation cache off: as shipped (one compile group
per trial: every trial has widths of its own), and with `width_buckets = [512]` added to its design
(every hidden layer padded to 512 masked units, so trials of equal depth and batch size share a
program). Prints compile groups, compile seconds (summed over the groups) and wall seconds of each, and
writes benchmarks/random_compile.json. Padding changes the runs (their identity includes the bucket),
so the two stores hold different runs.

    nice -n 19 .venv/bin/python benchmarks/random_compile.py [--data-dir DIR] [--buckets 512 [--buckets 128,256,512]]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "studies" / "vallepalli2024_search.toml"


def run(study: Path, results: Path, data_dir: str | None) -> tuple[float, dict]:
    """Wall seconds of one `hpstudy run`, and its compile groups and compile seconds from the store."""
    from hpstudy import store

    cmd = [
        sys.executable,
        "-m",
        "hpstudy.cli",
        "run",
        str(study),
        "--max-epochs",
        "1",
        "--seeds",
        "1",
        "--workers",
        "1",
        "--results",
        str(results),
        "--no-download",
    ]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "HPSTUDY_CACHE_DIR": "off"}, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    (directory,) = [d for d in results.iterdir() if d.is_dir()]
    runs = store.read_runs(directory)
    per_group = runs.groupby("group_id")["compile_seconds"].first()
    return wall, {
        "runs": len(runs),
        "compile_groups": len(per_group),
        "compile_seconds": round(float(per_group.sum()), 1),
        "wall_seconds": round(wall, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder holding the four MNIST .gz files (else $HPSTUDY_DATA_DIR)")
    parser.add_argument(
        "--buckets",
        action="append",
        help="width buckets, comma-separated; repeat to compare several sets (default: 512)",
    )
    args = parser.parse_args()
    bucket_sets = [[int(b) for b in text.split(",")] for text in (args.buckets or ["512"])]
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = [("as shipped (no buckets)", STUDY)]
        for i, buckets in enumerate(bucket_sets):
            bucketed = tmp / f"set{i}" / "vallepalli2024_search.toml"
            bucketed.parent.mkdir()
            bucketed.write_text(
                STUDY.read_text().replace('kind = "random"\n', f'kind = "random"\nwidth_buckets = {buckets}\n', 1)
            )
            cases.append((f"width_buckets = {buckets}", bucketed))
        for name, path in cases:
            _, figures[name] = run(path, tmp / name.replace(" ", "_").replace(",", ""), args.data_dir)
            f = figures[name]
            print(
                f"{name}: {f['runs']} runs, {f['compile_groups']} compile groups, {f['compile_seconds']:.1f} s "
                f"compiling, {f['wall_seconds']:.1f} s wall",
                flush=True,
            )
    result = {
        "what": "hpstudy run vallepalli2024_search --max-epochs 1 --seeds 1 --workers 1, real MNIST, "
        "compilation cache off: compile groups, compile seconds (summed over groups), wall seconds",
        "cases": figures,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    C.write_json(ROOT / "benchmarks" / "random_compile.json", result, sort_keys=True)
    print("written to benchmarks/random_compile.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
