"""The PyTorch peer of benchmarks/compare.py, in its own process (no JAX thread pools beside it).

    python benchmarks/torch_peer.py --data-dir DIR --batch 32 --order order.npy --threads 2 --repeats 3

Model-steps/s of one epoch of the grid study's model (784-128-128-10 ReLU, dropout 0.2, Adam lr 1e-3 with
eps 1e-7, cross-entropy on logits) on the CPU in the given batch order, pixels converted from uint8 per
batch, then validation on the 10,000 test images, after a short warm-up. Prints one JSON object on the
last line of stdout.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path, "rb").read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--order", required=True)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden", default="128,128")
    parser.add_argument("--dropout", type=float, default=0.2)
    args = parser.parse_args()

    import torch

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    d = Path(args.data_dir)
    order = np.load(args.order)
    x_train = torch.from_numpy(read_idx(d / "train-images-idx3-ubyte.gz").reshape(-1, 784).copy())
    y_train = torch.from_numpy(read_idx(d / "train-labels-idx1-ubyte.gz").astype(np.int64))
    x_test = torch.from_numpy(read_idx(d / "t10k-images-idx3-ubyte.gz").reshape(-1, 784).copy()).float().div_(255.0)
    y_test = torch.from_numpy(read_idx(d / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    b = args.batch
    batches = [torch.from_numpy(order[i : i + b].astype(np.int64)) for i in range(0, len(order), b)]
    sizes = (784, *(int(h) for h in args.hidden.split(",")), 10)
    layers: list = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers += [torch.nn.ReLU(), torch.nn.Dropout(args.dropout)]
    model = torch.nn.Sequential(*layers)
    try:  # PyTorch's fastest CPU Adam; eps 1e-7 as Keras (PyTorch places it after the bias correction)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7, fused=True)
        adam = "fused"
    except (RuntimeError, TypeError):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7, foreach=True)
        adam = "foreach"
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch(batch_list) -> None:
        model.train()
        for idx in batch_list:
            x = x_train[idx].float().div_(255.0)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y_train[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(x_test)
            loss_fn(logits, y_test).item()
            (logits.argmax(1) == y_test).float().mean().item()

    epoch(batches[:50])  # warm-up: allocator, thread pool
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        epoch(batches)
        seconds.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "version": torch.__version__,
                "threads": torch.get_num_threads(),
                "adam": adam,
                "steps": len(batches),
                "seconds": seconds,
                "rates": [len(batches) / s for s in seconds],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
