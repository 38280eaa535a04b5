"""The Keras peer of benchmarks/compare.py. Needs only NumPy and TensorFlow (Keras 3), not hpstudy, so it
can run in a separate environment that has TensorFlow:

    PY_WITH_TF benchmarks/keras_peer.py rate --data-dir DIR --batch 32 --order order.npy --repeats 3
    PY_WITH_TF benchmarks/keras_peer.py grid --data-dir DIR

`rate`: model-steps/s of Keras `fit` for one epoch of the grid study's model (784-128-128-10 ReLU, dropout
0.2, Adam lr 1e-3, softmax cross-entropy from logits), with validation on the test set as the paper did,
in the batch order given (hpstudy's order for seed 0), after a warm-up fit that traces the train and
test functions; with Keras' default compilation and with jit_compile=True (XLA).
`grid`: the grid study as the paper ran it: each of the 8 configurations once, 5 epochs, EarlyStopping on
val_loss (Keras defaults: patience 0), shuffle=True; wall seconds of each fit and in all.
Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path, "rb").read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(data_dir: str):
    d = Path(data_dir)
    xtr = read_idx(d / "train-images-idx3-ubyte.gz").reshape(-1, 784).astype("float32") / 255.0
    ytr = read_idx(d / "train-labels-idx1-ubyte.gz").astype("int32")
    xte = read_idx(d / "t10k-images-idx3-ubyte.gz").reshape(-1, 784).astype("float32") / 255.0
    yte = read_idx(d / "t10k-labels-idx1-ubyte.gz").astype("int32")
    return xtr, ytr, xte, yte


def build(keras, lr: float, dropout: float, jit):
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(dropout),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(dropout),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit,
    )
    return model


def rate(args) -> dict:
    import keras
    import tensorflow as tf

    xtr, ytr, xte, yte = load(args.data_dir)
    if args.n_train:
        xtr, ytr = xtr[: args.n_train], ytr[: args.n_train]
    order = np.load(args.order) if args.order else np.arange(len(xtr))
    x, y = xtr[order], ytr[order]
    steps = -(-len(x) // args.batch)
    out = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "steps": steps,
        "modes": {},
    }
    for label, jit in (("default", "auto"), ("jit_compile", True)):
        model = build(keras, 1e-3, 0.2, jit)
        start = time.perf_counter()
        model.fit(
            x[: 20 * args.batch + 7],
            y[: 20 * args.batch + 7],
            batch_size=args.batch,
            epochs=1,
            shuffle=False,
            validation_data=(xte, yte),
            verbose=0,
        )  # traces train/test functions, partial batch included
        warm = time.perf_counter() - start
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            model.fit(x, y, batch_size=args.batch, epochs=1, shuffle=False, validation_data=(xte, yte), verbose=0)
            seconds.append(time.perf_counter() - start)
        out["modes"][label] = {"seconds": seconds, "rates": [steps / s for s in seconds], "warmup_seconds": warm}
    return out


def grid(args) -> dict:
    import keras
    import tensorflow as tf

    xtr, ytr, xte, yte = load(args.data_dir)
    configs = [(lr, b, d) for lr in (0.001, 0.01) for b in (32, 64) for d in (0.2, 0.3)]
    rows = []
    total_start = time.perf_counter()
    for lr, b, d in configs:
        keras.utils.set_random_seed(0)
        start = time.perf_counter()
        model = build(keras, lr, d, "auto")
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=0)
        hist = model.fit(
            xtr, ytr, batch_size=b, epochs=5, shuffle=True, validation_data=(xte, yte), callbacks=[stop], verbose=0
        )
        seconds = time.perf_counter() - start
        loss, acc = model.evaluate(xte, yte, verbose=0)
        rows.append(
            {
                "learning_rate": lr,
                "batch_size": b,
                "dropout": d,
                "epochs_run": len(hist.history["loss"]),
                "fit_seconds": seconds,
                "test_accuracy": acc,
                "test_loss": loss,
            }
        )
        print(
            f"keras lr={lr} batch={b} dropout={d}: {len(hist.history['loss'])} epochs in {seconds:.1f} s, "
            f"test accuracy {acc:.4f}",
            file=sys.stderr,
            flush=True,
        )
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "configs": rows,
        "seconds_fit_total": sum(r["fit_seconds"] for r in rows),
        "seconds_all": time.perf_counter() - total_start,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("rate", "grid"))
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--order", help=".npy file with the training order (default: natural order)")
    parser.add_argument("--n-train", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = rate(args) if args.mode == "rate" else grid(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
