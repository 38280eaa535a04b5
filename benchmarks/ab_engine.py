"""A/B: the working tree's engine against the engine of a git revision, same workload, alternating processes.

    python benchmarks/ab_engine.py [--rev HEAD] [--runs 8] [--batch 32] [--rounds 2] [--data-dir DIR]

Each round runs one process per side (the revision's `hpstudy` package is exported with `git archive`
into a temporary folder and put first on PYTHONPATH). A process trains `--runs` runs of the grid network
for one epoch through `engine.execute` twice: the first call includes compiling, the second is timed.
Alternating the sides round by round keeps a shared machine's load fair to both. Prints model-steps/s,
compile seconds and the first run's parameter hash per side (equal hashes: equal bits).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, os, sys, time
from hpstudy import data as hdata
from hpstudy.training import engine
from hpstudy.config import RunConfig
runs, batch, data_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] or None
device = engine.device_data(hdata.load_mnist(data_dir, "test", download=False))
config = RunConfig(hidden=(128, 128), dropout=0.2, batch_size=batch, epochs=1)
specs = [engine.RunSpec(config, s) for s in range(runs)]
out = []
start = time.perf_counter(); engine.execute(specs, lambda _: device, out.extend); first = time.perf_counter() - start
out.clear()
start = time.perf_counter(); engine.execute(specs, lambda _: device, out.extend); second = time.perf_counter() - start
by_id = {r.spec.run_id: r for r in out}
print(json.dumps({"rate": runs * -(-60000 // batch) / second, "compile_seconds": out[0].compile_seconds,
                  "width": out[0].chunk_width, "hash": by_id[specs[0].run_id].param_sha256,
                  "engine": engine.__file__, "load": os.getloadavg()[0]}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data-dir", default=os.environ.get("HPSTUDY_DATA_DIR", ""))
    args = parser.parse_args()
    if args.data_dir:
        args.data_dir = str(Path(args.data_dir).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "archive", args.rev, "hpstudy"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        sides = {f"{args.rev}": tmp, "working tree": str(ROOT)}
        samples: dict[str, list[dict]] = {k: [] for k in sides}
        env0 = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env0["HPSTUDY_CACHE_DIR"] = "off"
        for _ in range(args.rounds):
            for label, path in sides.items():
                proc = subprocess.run(
                    [sys.executable, "-c", CHILD, str(args.runs), str(args.batch), args.data_dir],
                    capture_output=True,
                    text=True,
                    env={**env0, "PYTHONPATH": path},
                    cwd=tmp,
                )
                if proc.returncode != 0:
                    raise SystemExit(f"{label} failed:\n{proc.stderr[-3000:]}")
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                samples[label].append(r)
                print(
                    f"{label:>14}: {r['rate']:7.0f} model-steps/s, compile {r['compile_seconds']:.1f} s, "
                    f"width {r['width']}, hash {r['hash'][:12]}, load {r['load']:.2f}",
                    flush=True,
                )
    med = {k: statistics.median(s["rate"] for s in v) for k, v in samples.items()}
    a, b = med[args.rev], med["working tree"]
    print(
        f"median: {args.rev} {a:.0f}, working tree {b:.0f} model-steps/s: x{b / a:.2f}; "
        f"same bits: {samples[args.rev][0]['hash'] == samples['working tree'][0]['hash']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
