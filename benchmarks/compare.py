"""hpstudy's engine against the frameworks the papers used, in one invocation on one machine (issue 4).

Workload: the grid study's 784-128-128-10 ReLU MLP, dropout 0.2 after each hidden layer, Adam (lr 1e-3),
softmax cross-entropy, one epoch of MNIST (60,000 images) per measurement, validation on the 10,000 test
images at the end of the epoch, at batch 32 and 64, through
  (a) hpstudy's reproducible chunked engine, through its single-core worker processes, with 1, 8 and 40 runs;
  (b) PyTorch on the CPU (optional: `pip install torch`), the same model, Adam, and the same batch order
      as hpstudy's run of seed 0;
  (c) Keras `fit` (TensorFlow), where TensorFlow is importable here or in the interpreter given by
      --keras-python / $HPSTUDY_KERAS_PYTHON (a separate environment with TensorFlow), in the same
      batch order, with Keras' default compilation and with jit_compile=True.
Compile and trace time is excluded everywhere (measured apart for hpstudy). Each measurement is repeated
(--repeats) and reported as median with best and worst; ratios are medians over medians.

--end-to-end adds the whole grid study: wall time of `hpstudy run studies/naragundkar2024_grid.toml --seeds 10`
into a fresh results folder against Keras running the 8 configurations once as the paper did, in the
same sitting, alternating, with the same cores: both confined to one core, then both on the whole machine;
reported per run and per study (Keras measured where TensorFlow is available; otherwise an ESTIMATE from
the notes' measured Keras rate, clearly labelled). It takes many minutes on a quiet machine.

    python benchmarks/compare.py [--data-dir DIR] [--repeats 3] [--quick] [--end-to-end]

Writes benchmarks/results.json and benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

HERE = Path(__file__).resolve().parent
NOTES_KERAS_RATE = (540.0, 640.0)  # ../shared/notes/performance.md: Keras fit, batch 32, this machine type


# ----------------------------------------------------------------------------------------------- hpstudy


def hpstudy_order(workload: C.Workload, n_train: int, seed: int = 0):
    """The training order of hpstudy's run `seed` in its first epoch (flattened, padding dropped)."""
    import jax
    import numpy as np

    from hpstudy.training import engine

    config = workload.config()
    key = engine.root_key(config, seed)
    _, data_key, _ = jax.random.split(key, 3)
    idx, mask = engine.epoch_batches(config, jax.random.fold_in(data_key, 0), n_train)
    idx, mask = np.asarray(idx).reshape(-1), np.asarray(mask).reshape(-1) > 0
    return idx[mask]


def run_hpstudy(workload: C.Workload, dataset, device, runs: list[int], repeats: int) -> dict:
    """Compile time in this process; model-steps/s through hpstudy's single-core worker processes."""
    program, compile_s = C.hpstudy_compile(workload, device)
    out = {"compile_seconds": compile_s, "chunk_width": program.width, "by_runs": {}}
    n_train, n_val = int(device.x_train.shape[0]), int(device.x_val.shape[0])
    with C.hpstudy_pool(dataset) as pool:
        out["workers"] = pool.workers
        print(
            f"hpstudy {workload.name}: width {program.width}, compile {compile_s:.1f} s, {pool.workers} workers",
            flush=True,
        )
        C.hpstudy_pool_warmup(workload, pool)
        for n in runs:
            out["by_runs"][str(n)] = C.hpstudy_pool_rate(workload, pool, n, repeats, n_train, n_val)
            print_rate(n, out["by_runs"][str(n)])
    return out


def print_rate(n: int, r: dict) -> None:
    """One line per measurement."""
    s = r["model_steps_per_s"]
    print(
        f"  {n} runs: {C.fmt_rate(s['median'])} model-steps/s (best {C.fmt_rate(s['best'])}, worst {C.fmt_rate(s['worst'])})",
        flush=True,
    )


# ----------------------------------------------------------------------------------------------- PyTorch


def run_torch(workload: C.Workload, data_dir: str, order, repeats: int, cores: int) -> dict:
    """PyTorch in its own process (torch_peer.py), with as many threads as cores and with one thread: on a
    shared machine a busy second core makes PyTorch's OpenMP threads wait on each other, so both are kept
    and the faster is the peer."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"PyTorch is not importable ({exc}); `pip install torch` to include it"}
    import numpy as np

    out: dict = {"by_threads": {}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "order.npy"
        np.save(path, order)
        for threads in sorted({cores, 1}, reverse=True):
            proc = subprocess.run(
                [
                    sys.executable,
                    str(HERE / "torch_peer.py"),
                    "--data-dir",
                    data_dir,
                    "--batch",
                    str(workload.batch_size),
                    "--order",
                    str(path),
                    "--threads",
                    str(threads),
                    "--repeats",
                    str(repeats),
                ],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                return {"skipped": f"the PyTorch peer failed: {proc.stderr[-1500:]}"}
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["model_steps_per_s"] = C.summary(r.pop("rates"))
            out["by_threads"][str(threads)] = r
    best = max(out["by_threads"].values(), key=lambda r: r["model_steps_per_s"]["median"])
    out.update(
        version=best["version"],
        threads=best["threads"],
        steps=best["steps"],
        adam=best["adam"],
        model_steps_per_s=best["model_steps_per_s"],
    )
    return out


# ------------------------------------------------------------------------------------------------- Keras


def keras_python(arg: str | None) -> tuple[str | None, str]:
    """An interpreter with TensorFlow: this one, --keras-python, or $HPSTUDY_KERAS_PYTHON."""
    try:
        import tensorflow  # noqa: F401

        return sys.executable, "this interpreter"
    except ImportError:
        pass
    failures = []
    for candidate, where in (
        (arg, "--keras-python"),
        (os.environ.get("HPSTUDY_KERAS_PYTHON"), "$HPSTUDY_KERAS_PYTHON"),
    ):
        if candidate and Path(candidate).exists():
            probe = subprocess.run([candidate, "-c", "import tensorflow, keras"], capture_output=True, text=True)
            if probe.returncode == 0:
                return candidate, where
            failures.append(
                f"{where}={candidate} cannot import tensorflow and keras: {C.strip_ansi(probe.stderr).strip()[-300:]}"
            )
        elif candidate:
            failures.append(f"{where}={candidate} does not exist")
    return None, "TensorFlow is not importable here, and no interpreter with it was given (--keras-python)" + (
        "; " + "; ".join(failures) if failures else ""
    )


def run_keras_peer(python: str, args: list[str], cores: str | None = None) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [python, str(HERE / "keras_peer.py"), *args]
    proc = subprocess.run(
        ["taskset", "-c", cores, *cmd] if cores is not None else cmd, capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        return {"skipped": f"the Keras peer failed: {C.strip_ansi(proc.stderr)[-1500:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_keras(python: str, data_dir: str, workload: C.Workload, order, n_train: int, repeats: int) -> dict:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "order.npy"
        np.save(path, order)
        out = run_keras_peer(
            python,
            [
                "rate",
                "--data-dir",
                data_dir,
                "--batch",
                str(workload.batch_size),
                "--order",
                str(path),
                "--n-train",
                str(n_train),
                "--repeats",
                str(repeats),
            ],
        )
    for mode in out.get("modes", {}).values():
        mode["model_steps_per_s"] = C.summary(mode.pop("rates"))
    return out


# -------------------------------------------------------------------------------------------- end to end


# Both sides run with the same cores: one core (hpstudy: one worker; Keras: its threads confined to the same
# core), then the whole machine (hpstudy: one worker per core; Keras: as many threads as it likes).
E2E_SETTINGS = (("one core", "0", 1), ("whole machine", None, None))


def e2e_settings(which: str) -> tuple:
    """E2E_SETTINGS, or only its "one core" or "whole machine" entry."""
    return {"both": E2E_SETTINGS, "one": E2E_SETTINGS[:1], "whole": E2E_SETTINGS[1:]}[which]


def _pinned(cmd: list[str], cores: str | None) -> list[str]:
    """`cmd` confined to `cores` (taskset) where given."""
    return ["taskset", "-c", cores, *cmd] if cores is not None else cmd


def _hpstudy_grid(
    data_dir: str, seeds: int, cores: str | None, workers: int | None, results: Path, cache: Path, numerics: str
) -> dict:
    """Wall seconds and runs of `hpstudy run` of the grid study into a fresh results folder."""
    import pandas as pd

    study = C.ROOT / "studies" / "naragundkar2024_grid.toml"
    cmd = [
        sys.executable,
        "-m",
        "hpstudy.cli",
        "run",
        str(study),
        "--seeds",
        str(seeds),
        "--results",
        str(results),
        "--data-dir",
        data_dir,
        "--numerics",
        numerics,
    ]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    env = {**os.environ, "HPSTUDY_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    proc = subprocess.run(_pinned(cmd, cores), capture_output=True, text=True, env=env, cwd=C.ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"hpstudy run failed:\n{C.strip_ansi(proc.stderr)[-3000:]}")
    runs = pd.concat([pd.read_parquet(p) for p in (results / "naragundkar2024_grid").glob("part-*.parquet")])
    return {
        "wall_seconds": seconds,
        "runs": len(runs),
        "epochs_run_mean": float(runs["epochs_run"].mean()),
        "hashes": dict(zip(runs["run_id"], runs["param_sha256"])),
    }


def end_to_end(
    data_dir: str,
    keras_py: str | None,
    seeds: int,
    rounds: int = 2,
    numerics: str = "portable",
    settings: tuple = E2E_SETTINGS,
) -> dict:
    """`hpstudy run` of the grid study (`seeds` seeds) against Keras running its 8 configurations once, in
    the same sitting with the same cores, alternating round by round; per core and for the whole machine.

    The figure to quote is per run: (hpstudy seconds / hpstudy runs) / (Keras seconds / 8). Round 1 of
    hpstudy compiles (cold cache); later rounds load the compiled programs (warm cache). `numerics`:
    hpstudy's numerics mode; `settings`: which of E2E_SETTINGS to run.
    """
    out: dict = {
        "study": "studies/naragundkar2024_grid.toml",
        "seeds": seeds,
        "rounds": rounds,
        "numerics": numerics,
        "settings": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for label, cores, workers in settings:
            cache = Path(tmp) / f"jax-cache-{label.replace(' ', '-')}"
            block: dict = {"cores": cores or "all", "hpstudy": [], "keras": []}
            for round_ in range(rounds):
                h = _hpstudy_grid(data_dir, seeds, cores, workers, Path(tmp) / f"r-{label}-{round_}", cache, numerics)
                block["hpstudy"].append({k: v for k, v in h.items() if k != "hashes"})
                block.setdefault("hashes", h["hashes"])
                block["same_bits_every_round"] = (
                    block.get("same_bits_every_round", True) and h["hashes"] == block["hashes"]
                )
                print(
                    f"end to end, {label}, round {round_ + 1}: hpstudy {h['wall_seconds']:.1f} s for {h['runs']} runs",
                    flush=True,
                )
                if keras_py:
                    k = run_keras_peer(keras_py, ["grid", "--data-dir", data_dir], cores)
                    block["keras"].append({"measured": True, **k})
                    print(
                        f"end to end, {label}, round {round_ + 1}: Keras {k.get('seconds_all', float('nan')):.1f} s "
                        "for the 8 configurations once",
                        flush=True,
                    )
            block.pop("hashes")
            hp = sorted(r["wall_seconds"] for r in block["hpstudy"])
            hp_runs = block["hpstudy"][0]["runs"]
            if block["keras"] and all("seconds_all" in k for k in block["keras"]):
                ks = sorted(k["seconds_all"] for k in block["keras"])
                block["keras_seconds_median"] = ks[len(ks) // 2]
            else:
                # ESTIMATE where TensorFlow is not available: the notes' measured Keras fit rate (batch 32) for
                # every step the 8 configurations take at 5 epochs; labelled as such wherever it is printed.
                steps = sum(4 * 5 * -(-C.N_TRAIN // b) for b in (32, 64))
                block["keras_estimate"] = {
                    "ESTIMATE": True,
                    "steps": steps,
                    "basis": "notes' Keras fit rate 540-640 steps/s (batch 32), 5 epochs each",
                }
                block["keras_seconds_median"] = steps / (sum(NOTES_KERAS_RATE) / 2)
            block["hpstudy_seconds_median"] = hp[len(hp) // 2]
            block["hpstudy_seconds_per_run"] = block["hpstudy_seconds_median"] / hp_runs
            block["keras_seconds_per_run"] = block["keras_seconds_median"] / 8
            block["per_run_ratio_hpstudy_over_keras"] = (
                block["hpstudy_seconds_per_run"] / block["keras_seconds_per_run"]
            )
            block["study_ratio_hpstudy_over_keras"] = block["hpstudy_seconds_median"] / block["keras_seconds_median"]
            out["settings"][label] = block
    return out


# ---------------------------------------------------------------------------------------------- reporting

ENGINE_NOTES = [
    "- Threefry (every random draw: initialisation, shuffles, dropout masks) is lowered on CPU with JAX's own "
    "unrolled rule instead of a rolled `fori_loop`: identical bits (the same integer operations; tested), about "
    "2x faster draws and about half the compile time (hpstudy/training/compilation.py).",
    "- The loss picks each row's log-probability with take_along_axis as before, but its gradient is a product "
    "with one-hot labels instead of a scatter-add (a serial loop on XLA:CPU): identical bits.",
    "- Every step's dropout key is derived in one vectorised hash before the epoch's scan: the same keys.",
    "- Chunks whose runs all have dropout 0 compile without dropout layers (no masks drawn): the same values.",
    "- Where the validation set is the test set, the final test metrics are the last (or, restoring, the best) "
    "epoch's validation metrics instead of a second evaluation of the same parameters on the same images: "
    "identical numbers in every case checked.",
    "- Every training process is pinned to one core before JAX starts, and `hpstudy run` starts one such worker "
    "process per usable core, each training whole chunks (hpstudy/training/parallel.py). XLA:CPU splits work by the "
    "cores a process may use, so before this a run's bits depended on the machine's core count (`taskset -c 0` "
    "gave other hashes); now they do not, and two single-core processes train more model-steps/s than one "
    "two-thread process (small per-step kernels pay for every hand-over to a second thread). New bits for "
    "every study (the shipped runs were made again).",
    "- Chunk width rule, re-measured on one core: about 8 M multiply-adds per chunk step, a power of two in "
    "[1, 4]. The grid network at batch 32 gets 2 (faster per core than 1 or 4), batch 64 gets 1, the "
    "784-30-10 network at batch 10 gets 4 (as fast as 1; 8 is slower).",
    "- JAX's persistent compilation cache (under ~/.cache/hpstudy/jax/<cpu>, or $HPSTUDY_CACHE_DIR; off with "
    "HPSTUDY_CACHE_DIR=off), enabled by `hpstudy run`: a second process loads every program instead of compiling.",
    "- The images stay uint8 on the device; each step gathers its rows once and converts them in the same fused "
    "kernel. The per-step profile (grid network, batch 32, 4 runs, two threads, fastest instance of each kernel, "
    "quiet machine, measured before the two changes above): matrix products about 64% of the step, the Keras-Adam "
    "update about 18%, dropout masks about 10% (since then drawn once per step and carried, not drawn again for "
    "the backward pass), input conversion 2%. The matrix products themselves run at about 60% of peak; the rest "
    "bounds the whole well below issue 4's 60% of peak.",
]


def pct(x: float, peak: float) -> str:
    return f"{100 * x / peak:.1f}%"


def end_to_end_lines(e2e: dict) -> list[str]:
    """The end-to-end comparison as Markdown lines."""
    lines = [
        "",
        f"## End to end: the grid study, {e2e['seeds']} seeds, against Keras running it once",
        "",
        f"Same sitting, same cores, alternating hpstudy (numerics mode {e2e.get('numerics', 'portable')}) and "
        f"Keras, {e2e['rounds']} round(s) (medians; hpstudy's first round compiles, later rounds load the compiled "
        "programs):",
        "",
    ]
    lines += [
        "| cores | hpstudy, all runs | Keras, 8 configurations once | per run: hpstudy / Keras | whole study / Keras once |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, b in e2e["settings"].items():
        estimate = " (ESTIMATE: no TensorFlow)" if "keras_estimate" in b else ""
        lines.append(
            f"| {label} | {b['hpstudy_seconds_median']:.1f} s ({b['hpstudy'][0]['runs']} runs) | "
            f"{b['keras_seconds_median']:.1f} s{estimate} | {b['per_run_ratio_hpstudy_over_keras']:.2f} | "
            f"{b['study_ratio_hpstudy_over_keras']:.2f} |"
        )
    return lines


def markdown(res: dict) -> str:
    m = res["machine"]
    peak = m["fp32_peak_gflops"]
    lines = [
        "# hpstudy vs PyTorch vs Keras on this machine",
        "",
        f"Generated by `python benchmarks/compare.py{' --quick' if res['quick'] else ''}"
        f"{' --end-to-end' if res.get('end_to_end') else ''}` at {res['when']} "
        f"({res['repeats']} repeats per measurement; median, with best and worst).",
        "",
        f"- CPU: {m['cpu_model']}, {m['physical_cores']} cores, {m['isa']}. FP32 peak = {m['peak_formula']}.",
        f"- Load average during the run: {res['load_average_start']} at the start, {res['load_average_end']} at the end "
        "(the machine is shared: other processes were running; medians and the spread show it).",
        f"- Software: jax {res['environment']['packages'].get('jax')}, jaxlib {res['environment']['packages'].get('jaxlib')}"
        + (f", PyTorch {res['peers'].get('torch_version')}" if res["peers"].get("torch_version") else "")
        + (
            f", TensorFlow {res['peers'].get('keras_tf_version')} / Keras {res['peers'].get('keras_version')} ({res['peers'].get('keras_python')})"
            if res["peers"].get("keras_version")
            else ""
        )
        + ".",
        f"- GPU: {m['gpu']}.",
        f"- Workload: 784-128-128-10 ReLU MLP, dropout 0.2, Adam lr 1e-3, softmax cross-entropy; one epoch of "
        f"{res['train_images']:,} MNIST images plus validation on the 10,000 test images per measurement; "
        "compile/trace time excluded.",
        "- A model-step is one optimizer step of one real run (padding runs in a chunk do not count). "
        "GFLOP/s counts the matrix products only (forward, weight gradients, input gradients of layers 2-3, "
        f"and the validation forward pass): {C.GRID32.train_flop_per_sample():,} FLOP per training sample, "
        f"{C.GRID32.eval_flop_per_sample():,} per validation sample.",
        "",
    ]
    for batch, rows in res["table"].items():
        lines += [f"## Batch {batch}", ""]
        peers = [p for p in ("PyTorch", "Keras", "Keras jit") if any(r["impl"] == p for r in rows)]
        head = (
            "| implementation | runs | model-steps/s median (best-worst) | spread | samples/s | GFLOP/s | % of FP32 peak | "
            + " | ".join(f"x {p}" for p in peers)
            + " |"
        )
        lines += [head, "|" + "---|" * (7 + len(peers))]
        for r in rows:
            ratios = " | ".join(f"{r['ratios'][p]:.2f}" if r["ratios"].get(p) else "-" for p in peers)
            lines.append(
                f"| {r['impl']} | {r['runs']} | {C.fmt_rate(r['median'])} ({C.fmt_rate(r['best'])}-{C.fmt_rate(r['worst'])}) | "
                f"{r['spread_pct']:.0f}% | {C.fmt_rate(r['median'] * int(batch))} | {r['gflops']:.1f} | {pct(r['gflops'], peak)} | {ratios} |"
            )
        lines.append("")
    lines += ["\"x PEER\" = this row's median model-steps/s divided by the peer's (above 1: faster than the peer).", ""]
    for note in res["notes"]:
        lines.append(f"- {note}")
    if res.get("end_to_end") and "settings" in res["end_to_end"]:
        lines += end_to_end_lines(res["end_to_end"])
    lines += ["", "## What the engine does to be fast, and what it costs in bits", "", *ENGINE_NOTES]
    eng = HERE / "engine.json"
    if eng.exists():
        e = json.loads(eng.read_text())
        lines += ["", "## Engine benchmark (`benchmarks/engine.py`)", ""]
        for w in e.get("workloads", {}).values():
            parts = [
                f"{n} runs: {C.fmt_rate(r['model_steps_per_s']['median'])} ({C.fmt_rate(r['model_steps_per_s']['best'])}-"
                f"{C.fmt_rate(r['model_steps_per_s']['worst'])})"
                for n, r in w["by_runs"].items()
            ]
            lines.append(
                f"- {w['workload']}, chunk width {w['chunk_width']}, compile {w['compile_seconds']:.1f} s: "
                + "; ".join(parts)
                + " model-steps/s (median (best-worst))."
            )
        pc = e.get("persistent_cache")
        if pc:
            lines.append(
                f"- Persistent compilation cache, two fresh processes: the first compiled {pc['cold']['misses']} programs "
                f"({pc['cold']['compile_seconds']:.1f} s for the chunk program), the second compiled none "
                f"({pc['warm']['hits']} cache hits, chunk program ready in {pc['warm']['compile_seconds']:.2f} s) and trained "
                f"to the same parameter hashes: {'OK' if pc['ok'] else 'FAILED'}."
            )
        lines.append(f"- Measured {e.get('machine', {}).get('load_average')} load average at its start.")
    lines += [
        "",
        "## How to reproduce",
        "",
        "```",
        "python -m venv .venv && .venv/bin/pip install -e '.[test,bench]'   # bench: PyTorch (CPU)",
        "export HPSTUDY_DATA_DIR=../shared/data/mnist                      # or --data-dir DIR",
        ".venv/bin/python benchmarks/engine.py --cache-check   # -> benchmarks/engine.json",
        ".venv/bin/python benchmarks/compare.py                # -> benchmarks/results.json, results.md",
        ".venv/bin/python benchmarks/compare.py --end-to-end   # + the grid study end to end (several minutes)",
        "# Keras needs TensorFlow: it is used from this interpreter if importable, else from",
        "# --keras-python PY (or $HPSTUDY_KERAS_PYTHON).",
        "```",
        "",
    ]
    lines += ["Raw numbers, every sample and the machine description: `benchmarks/results.json`.", ""]
    return "\n".join(lines)


def build_table(res: dict) -> dict:
    table = {}
    for batch, block in res["batches"].items():
        wl = C.GRID32 if batch == "32" else C.GRID64
        rows = []
        for n, r in block["hpstudy"]["by_runs"].items():
            s = r["model_steps_per_s"]
            rows.append(
                {
                    "impl": f"hpstudy ({r['workers']} single-core workers, chunk width {r['chunk_width']})",
                    "runs": int(n),
                    "median": s["median"],
                    "best": s["best"],
                    "worst": s["worst"],
                    "spread_pct": s["spread_pct"],
                    "gflops": r["gflops_median"],
                }
            )
        flop_step = wl.batch_size * wl.train_flop_per_sample()
        eval_flop = 10000 * wl.eval_flop_per_sample()

        def peer_row(name: str, summary: dict, steps: int) -> dict:
            seconds_med = steps / summary["median"]
            gflops = (steps * flop_step + eval_flop) / seconds_med / 1e9  # noqa: B023 - called within this iteration
            return {
                "impl": name,
                "runs": 1,
                "median": summary["median"],
                "best": summary["best"],
                "worst": summary["worst"],
                "spread_pct": summary["spread_pct"],
                "gflops": gflops,
            }

        t = block.get("torch", {})
        if "model_steps_per_s" in t:
            row = peer_row("PyTorch", t["model_steps_per_s"], t["steps"])
            row["impl"] = "PyTorch"
            row["note"] = f"{t['threads']} thread(s), the faster of {sorted(t['by_threads'])}"
            rows.append(row)
            for th, r in t["by_threads"].items():
                if int(th) != t["threads"]:
                    other = peer_row(f"PyTorch, {th} thread(s)", r["model_steps_per_s"], r["steps"])
                    rows.append(other)
        k = block.get("keras", {})
        for mode, name in (("default", "Keras"), ("jit_compile", "Keras jit")):
            if mode in k.get("modes", {}):
                rows.append(peer_row(name, k["modes"][mode]["model_steps_per_s"], k["steps"]))
        medians = {r["impl"]: r["median"] for r in rows}
        for r in rows:
            r["ratios"] = {
                p: r["median"] / medians[p]
                for p in ("PyTorch", "Keras", "Keras jit")
                if p in medians and p != r["impl"]
            }
        table[batch] = rows
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("HPSTUDY_DATA_DIR"),
        help="MNIST folder (else $HPSTUDY_DATA_DIR, then the cache)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", default="1,8,40", help="hpstudy runs per measurement (default 1,8,40)")
    parser.add_argument("--batches", default="32,64")
    parser.add_argument("--quick", action="store_true", help="train on the first 12,000 images only")
    parser.add_argument("--keras-python", help="a Python interpreter with TensorFlow for the Keras peer")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-keras", action="store_true")
    parser.add_argument("--end-to-end", action="store_true", help="also time the whole grid study (minutes)")
    parser.add_argument("--e2e-seeds", type=int, default=10)
    parser.add_argument("--e2e-rounds", type=int, default=2, help="alternating rounds of the end-to-end comparison")
    parser.add_argument(
        "--end-to-end-only",
        action="store_true",
        help="only the end-to-end comparison, written to benchmarks/end_to_end.json (or --e2e-out)",
    )
    parser.add_argument("--e2e-out", default=str(HERE / "end_to_end.json"))
    parser.add_argument("--numerics", default="portable", help="hpstudy's numerics mode in the end-to-end runs")
    parser.add_argument(
        "--e2e-cores",
        choices=("both", "one", "whole"),
        default="both",
        help="end to end on one core, on the whole machine, or both (default)",
    )
    parser.add_argument("--render", action="store_true", help="only re-write results.md from an existing results.json")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    parser.add_argument("--md", default=str(HERE / "results.md"))
    args = parser.parse_args(argv)

    if args.render:
        res = json.loads(Path(args.out).read_text())
        Path(args.md).write_text(markdown(res))
        print(Path(args.md).read_text())
        return 0

    from hpstudy import data as hdata

    data_dir = args.data_dir or str(hdata.default_cache_dir())
    if args.end_to_end_only:
        keras_py, keras_where = keras_python(args.keras_python)
        print(f"Keras: {keras_py or keras_where}", flush=True)
        res = {
            "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": C.machine(),
            "environment": C.env_summary(),
            "keras_python": keras_py or keras_where,
            "notes": [],
            "end_to_end": end_to_end(
                data_dir, keras_py, args.e2e_seeds, args.e2e_rounds, args.numerics, e2e_settings(args.e2e_cores)
            ),
        }
        res["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        C.write_json(Path(args.e2e_out), res)
        print("\n".join(end_to_end_lines(res["end_to_end"])))
        return 0

    from hpstudy.training import engine

    mach = C.machine()
    print(f"{mach['cpu_model']}: {mach['peak_formula']}; load {mach['load_average']}", flush=True)
    dataset = C.subset(C.load_mnist(args.data_dir), 12000 if args.quick else None)
    device = engine.device_data(dataset)
    n_train = len(dataset.train)
    keras_py, keras_where = (None, "--no-keras") if args.no_keras else keras_python(args.keras_python)
    res: dict = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": mach,
        "environment": C.env_summary(),
        "quick": args.quick,
        "repeats": args.repeats,
        "train_images": n_train,
        "load_average_start": mach["load_average"],
        "batches": {},
        "peers": {},
        "notes": [],
    }
    if keras_py is None:
        res["notes"].append(f"Keras skipped: {keras_where}.")
        print(f"Keras skipped: {keras_where}", flush=True)
    runs = [int(x) for x in args.runs.split(",") if x]
    for batch in (int(b) for b in args.batches.split(",")):
        wl = C.GRID32 if batch == 32 else C.GRID64 if batch == 64 else None
        if wl is None:
            raise SystemExit(f"--batches: only 32 and 64 are defined workloads, not {batch}")
        block: dict = {"hpstudy": run_hpstudy(wl, dataset, device, runs, args.repeats)}
        order = hpstudy_order(wl, n_train)
        if not args.no_torch:
            block["torch"] = run_torch(wl, data_dir, order, args.repeats, mach["physical_cores"])
            if "skipped" in block["torch"]:
                res["notes"].append(f"PyTorch skipped: {block['torch']['skipped']}")
            else:
                res["peers"]["torch_version"] = block["torch"]["version"]
                for th, r in block["torch"]["by_threads"].items():
                    print(
                        f"PyTorch b{batch}, {th} thread(s): {C.fmt_rate(r['model_steps_per_s']['median'])} model-steps/s",
                        flush=True,
                    )
        if keras_py:
            block["keras"] = run_keras(keras_py, data_dir, wl, order, n_train if args.quick else 0, args.repeats)
            if "skipped" in block["keras"]:
                res["notes"].append(f"Keras failed: {block['keras']['skipped']}")
            else:
                res["peers"].update(
                    keras_version=block["keras"]["keras"],
                    keras_tf_version=block["keras"]["tensorflow"],
                    keras_python=keras_py,
                )
                for mode, m in block["keras"]["modes"].items():
                    print(
                        f"Keras ({mode}) b{batch}: {C.fmt_rate(m['model_steps_per_s']['median'])} model-steps/s",
                        flush=True,
                    )
        res["batches"][str(batch)] = block
    res["notes"] += [
        "hpstudy with 1 run still computes a whole chunk (the width is chosen from shapes only, never from the "
        "number of runs, so that a run's bits never depend on how many runs share its study): its rate is the "
        "chunk's divided by the width.",
        "PyTorch: one model in its own process (benchmarks/torch_peer.py), torch.optim.Adam (fused) with eps 1e-7 "
        "(PyTorch adds epsilon after the bias correction, Keras before it: the same cost), batches in hpstudy's "
        "order for seed 0, pixels converted from uint8 per batch as hpstudy does; run with as many threads as "
        "cores and with 1 thread, the faster being the 'PyTorch' row the ratios use (on a busy machine PyTorch's "
        "OpenMP threads wait on each other).",
        "Keras: model.fit on float32 pixels in hpstudy's order (shuffle=False), validation_data = the test set, "
        "after a warm-up fit that traces the train and test functions; 'Keras' is the default compile (what the "
        "papers ran), 'Keras jit' is jit_compile=True (XLA).",
        "The % of peak counts only matrix-product FLOPs; the optimizer, activations, dropout masks and the loss are "
        "real work that is not counted, so it understates the arithmetic done.",
    ]
    if args.end_to_end:
        res["end_to_end"] = end_to_end(
            data_dir, keras_py, args.e2e_seeds, args.e2e_rounds, args.numerics, e2e_settings(args.e2e_cores)
        )
    res["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    res["table"] = build_table(res)
    C.write_json(Path(args.out), res)
    Path(args.md).write_text(markdown(res))
    print(f"\nwritten to {args.out} and {args.md}\n")
    print(Path(args.md).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
