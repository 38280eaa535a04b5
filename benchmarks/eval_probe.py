"""Which products of the evaluation depend on the CPU under portable numerics (docs/reproducibility.md,
"Evaluation values and a run's slot").

Hashes, under portable settings in a fresh single-core process, the stages of a 784-30-10 sigmoid MLP's
evaluation (softmax cross-entropy, as the Keras flavour) on `rows` random MNIST-like images: the first
product (rows x 784 @ 784 x 30), the hidden activations, the second product (rows x 30 @ 30 x 10), the
per-example losses and their mean; plus one training step's loss and gradients at batch 125 (the
training side, which must not depend on the CPU). It also reads the caches the CPU reports through cpuid,
as Eigen's queryCacheSizes does (leaf 4 on Intel, leaves 0x80000005/6 on AMD), and prints the k-blocking
(kc) that Eigen's computeProductBlockingSizes would choose from them. Run it natively and under
qemu-user emulating other CPUs, then compare the JSON files:

    python benchmarks/eval_probe.py --label native --out benchmarks/eval_probe_native.json
    $HPSTUDY_QEMU -cpu EPYC-Milan .venv/bin/python benchmarks/eval_probe.py --label EPYC-Milan \\
        --out benchmarks/eval_probe_EPYC-Milan.json
    python benchmarks/eval_probe.py --compare benchmarks/eval_probe_*.json
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import mmap
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# cpuid(leaf, subleaf, uint32 out[4]) as x86-64 machine code (System V ABI: rdi, rsi, rdx). Under qemu-user
# the instruction is emulated, so this reads the emulated model's table, exactly what Eigen reads there.
_CPUID_CODE = bytes.fromhex(
    "53"  # push rbx
    "89f8"  # mov eax, edi
    "89f1"  # mov ecx, esi
    "4989d0"  # mov r8, rdx
    "0fa2"  # cpuid
    "418900"  # mov [r8], eax
    "41895804"  # mov [r8+4], ebx
    "41894808"  # mov [r8+8], ecx
    "4189500c"  # mov [r8+12], edx
    "5b"  # pop rbx
    "c3"  # ret
)


def cpuid_function():
    """A callable cpuid(leaf, subleaf) -> (eax, ebx, ecx, edx)."""
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(_CPUID_CODE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))(address)

    def cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        out = (ctypes.c_uint32 * 4)()
        fn(leaf, subleaf, out)
        return tuple(out)

    cpuid._keep = buf  # the code page lives as long as the function
    return cpuid


def eigen_cache_sizes() -> dict:
    """L1/L2/L3 data cache sizes in bytes as Eigen's queryCacheSizes reads them (Eigen/src/Core/util/Memory.h):
    Intel: cpuid leaf 4, one subleaf per cache; AMD: leaves 0x80000005 (L1) and 0x80000006 (L2, L3)."""
    cpuid = cpuid_function()
    max_leaf, b, c, d = cpuid(0)
    vendor = b"".join(x.to_bytes(4, "little") for x in (b, d, c)).decode()
    out = {"vendor": vendor, "max_leaf": max_leaf}
    if vendor == "GenuineIntel" and max_leaf >= 4:
        caches = []
        l1 = l2 = l3 = 0
        for i in range(16):
            a, b, c, _ = cpuid(4, i)
            kind = a & 0x1F
            if kind == 0:
                break
            level = (a >> 5) & 7
            size = (((b >> 22) & 0x3FF) + 1) * (((b >> 12) & 0x3FF) + 1) * ((b & 0xFFF) + 1) * (c + 1)
            caches.append({"level": level, "type": kind, "bytes": size})
            if kind in (1, 3):  # data or unified, as Eigen counts them
                if level == 1:
                    l1 = size
                elif level == 2:
                    l2 = size
                elif level == 3:
                    l3 = size
        out.update(leaf4=caches, l1=l1, l2=l2, l3=l3)
    elif vendor == "AuthenticAMD":
        _, _, c5, _ = cpuid(0x80000005)
        _, _, c6, d6 = cpuid(0x80000006)
        out.update(l1=(c5 >> 24) * 1024, l2=(c6 >> 16) * 1024, l3=((d6 & 0xFFFC0000) >> 18) * 512 * 1024)
    return out


def eigen_kc(l1: int, k: int, mr: int = 24, nr: int = 4, size: int = 4, peeling: int = 8) -> int:
    """The depth block kc of Eigen's single-threaded computeProductBlockingSizes for a float product of
    depth k (GeneralBlockPanelKernel.h; mr = 3 AVX packets of 8 floats, nr = 4: Eigen built for AVX with
    16 vector registers, as jaxlib's x86 wheels are; an assumption, not read from the binary)."""
    k_div = mr * size + nr * size
    k_sub = mr * nr * size
    max_kc = max(((l1 - k_sub) // k_div) & ~(peeling - 1), 1)
    if k <= max_kc:
        return k
    rem = k % max_kc
    return max_kc if rem == 0 else max_kc - peeling * ((max_kc - 1 - rem) // (peeling * (k // max_kc + 1)))


def sha(a) -> str:
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(np.asarray(a)).tobytes()).hexdigest()[:16]


def probe(rows_list: list[int]) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((784, 30)) / 28).astype(np.float32)
    b1 = (rng.standard_normal(30) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((30, 10)) / np.sqrt(30)).astype(np.float32)
    b2 = (rng.standard_normal(10) * 0.1).astype(np.float32)
    images = (rng.integers(0, 256, (max(rows_list), 784)) * (rng.random((max(rows_list), 784)) < 0.2)).astype(
        np.float32
    ) / np.float32(255)
    labels = rng.integers(0, 10, max(rows_list)).astype(np.int32)

    @jax.jit
    def stages(x, y, w1, b1, w2, b2):
        z1 = x @ w1
        h = jax.nn.sigmoid(z1 + b1)
        z2 = h @ w2
        logits = z2 + b2
        per_example = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1)[:, 0]
        return {"dot1_784": z1, "sigmoid": h, "dot2_30": z2, "per_example": per_example, "mean": jnp.mean(per_example)}

    @jax.jit
    def train_grads(x, y, w1, b1, w2, b2):
        def loss(p):
            h = jax.nn.sigmoid(x @ p[0] + p[1])
            logits = h @ p[2] + p[3]
            return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1)[:, 0])

        return jax.value_and_grad(loss)((w1, b1, w2, b2))

    out = {}
    for rows in rows_list:
        values = stages(images[:rows], labels[:rows], w1, b1, w2, b2)
        out[f"eval_rows{rows}"] = {name: sha(v) for name, v in values.items()}
        out[f"eval_rows{rows}"]["mean_value"] = float(values["mean"])
        # the same products without the rest of the program around them
        out[f"eval_rows{rows}"]["plain_dot1_784"] = sha(jax.jit(jnp.matmul)(images[:rows], w1))
    # The engine evaluates a chunk of runs at once: jax.vmap over the runs' parameters, the images shared,
    # so the first product becomes rows x 784 @ 784 x (width * 30) (width = 1, 2, 4 as in the shipped stores).
    for width in (2, 4):
        stack = [np.stack([a * np.float32(1 + 0.01 * i) for i in range(width)]) for a in (w1, b1, w2, b2)]
        chunked = jax.jit(jax.vmap(stages, in_axes=(None, None, 0, 0, 0, 0)))
        for rows in rows_list:
            values = chunked(images[:rows], labels[:rows], *stack)
            key = f"eval_rows{rows}_width{width}"
            out[key] = {name: sha(v) for name, v in values.items()}
            out[key]["mean_value"] = [float(v) for v in values["mean"]]
    # The same run's evaluation in slot 0 and in slot 1 of a chunk of 2, and alone: equal if the chunk's
    # composition does not matter (the project's guarantee).
    other = [a * np.float32(1.01) for a in (w1, b1, w2, b2)]
    chunked = jax.jit(jax.vmap(stages, in_axes=(None, None, 0, 0, 0, 0)))
    for rows in rows_list:
        x, y = images[:rows], labels[:rows]
        first = chunked(x, y, *[np.stack([a, o]) for a, o in zip((w1, b1, w2, b2), other)])
        second = chunked(x, y, *[np.stack([o, a]) for a, o in zip((w1, b1, w2, b2), other)])
        alone = stages(x, y, w1, b1, w2, b2)
        out[f"slots_rows{rows}"] = {
            name: [sha(first[name][0]), sha(second[name][1]), sha(alone[name])] for name in alone
        }

    # The candidate fix: each run its own product (the images broadcast to the chunk, or a lax.map over the
    # runs) instead of one shared product; equal in both slots and to the run alone if it works.
    def first(x, w):
        return x @ w

    for name, fn in (
        ("broadcast", lambda x, w: jax.vmap(first)(jnp.broadcast_to(x, (w.shape[0], *x.shape)), w)),
        ("lax_map", lambda x, w: jax.lax.map(lambda wi: first(x, wi), w)),
    ):
        fn = jax.jit(fn)
        for rows in rows_list:
            x = images[:rows]
            slot0, slot1 = fn(x, np.stack([w1, other[0]]))[0], fn(x, np.stack([other[0], w1]))[1]
            out[f"fix_{name}_rows{rows}"] = {"dot1_784": [sha(slot0), sha(slot1), sha(jax.jit(first)(x, w1))]}
    value, grads = train_grads(images[:125], labels[:125], w1, b1, w2, b2)
    out["train_step_b125"] = {"loss": sha(value), "grads": [sha(g) for g in grads]}
    return out


def compare(paths: list[str]) -> None:
    runs = {Path(p).stem: json.loads(Path(p).read_text()) for p in paths}
    names = list(runs)
    first = runs[names[0]]["hashes"]
    print("caches:", {n: (r["cpuid"].get("l1"), r["cpuid"].get("l2"), r["kc_784"]) for n, r in runs.items()})
    for key in first:
        for stage in first[key]:
            vals = [str(runs[n]["hashes"].get(key, {}).get(stage)) for n in names]
            present = [v for v in vals if v != "None"]
            flag = "same" if len(set(present)) == 1 else "DIFFER"
            flag = flag if len(present) == len(vals) else flag + "?"  # "?": missing from an older file
            print(f"{key:18s} {stage:15s} {flag:6s} " + " ".join(v[:8] for v in vals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="native")
    parser.add_argument("--out")
    parser.add_argument("--rows", default="125,250,1000,10000")
    parser.add_argument("--mode", default="portable")
    parser.add_argument(
        "--all-cores", action="store_true", help="do not pin to one core (JAX's thread pool gets them all)"
    )
    parser.add_argument("--cpuid-only", action="store_true", help="print the caches Eigen would read, nothing else")
    parser.add_argument("--compare", nargs="+", help="JSON files of earlier runs: print which hashes differ")
    args = parser.parse_args()
    if args.compare:
        compare(args.compare)
        return
    if args.cpuid_only:
        caches = eigen_cache_sizes()
        print(
            json.dumps({"label": args.label, "cpuid": caches, "kc_784": eigen_kc(caches.get("l1") or 16 * 1024, 784)})
        )
        return
    from hpstudy.training import numerics

    if args.all_cores:
        assert numerics.apply(args.mode), "JAX started before the numerics settings"
    else:
        assert numerics.prepare_process(args.mode), "JAX started before the numerics settings"
    caches = eigen_cache_sizes()
    result = {
        "label": args.label,
        "mode": args.mode,
        "cores": "all" if args.all_cores else 1,
        "cpuid": caches,
        "kc_784": eigen_kc(caches.get("l1") or 16 * 1024, 784),
        "kc_30": eigen_kc(caches.get("l1") or 16 * 1024, 30),
        "features": sorted(k for k, v in numerics.cpu_features().items() if v and k.startswith("AVX")),
        "hashes": probe([int(r) for r in args.rows.split(",")]),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
