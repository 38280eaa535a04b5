"""Synthetic runs for tests and benchmarks: fake but schema-valid stored records (no training)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

from hpstudy import store
from hpstudy.config import run_id
from hpstudy.study import Study

_FAKE_ENV = {
    "python": "3.11.2",
    "packages": {
        "flax": "0.12.8",
        "hpstudy": "0.1.0",
        "jax": "0.10.2",
        "jaxlib": "0.10.2",
        "numpy": "2.4.6",
        "optax": "0.2.8",
    },
    "xla_flags": "",
    "x64": False,
    "platform": "Linux-synthetic",
    "cpu_model": "Synthetic CPU",
    "isa": ["avx2", "fma"],
    "backend": "cpu",
    "device_kind": "cpu",
    "device_count": 1,
}


def _fake_lr_optimum(config) -> float:
    if config.optimizer.startswith("adam"):
        return 1e-3
    if config.loss == "sigmoid_quadratic":
        return 1.0
    return 0.02 if config.momentum > 0 else 0.1


def synthetic_records(study: Study, seeds: Sequence[int], seed: int = 0) -> list[dict]:
    """Fake but schema-valid records (store.to_record of a made-up RunResult) for every (trial, seed).

    Accuracy falls off with the distance of the learning rate from a flavour-dependent optimum, with
    dropout and with small batches' noise; every run has its own noise drawn from its run id. Nielsen's
    flavour with ReLU "fails" (NaN loss, chance accuracy) as it did in the paper.
    """
    from hpstudy.runs import RunResult

    records = []
    for t in study.trials:
        c = t.config
        trial_rng = np.random.default_rng([seed, int(hashlib.sha256(t.trial_id.encode()).hexdigest()[:8], 16)])
        trial_shift = trial_rng.normal(0, 0.002)
        failed = c.flavour == "nielsen" and c.activation == "relu"
        for s in seeds:
            spec_id = run_id(c, s)
            rng = np.random.default_rng([seed, int(spec_id[:8], 16)])
            dist = abs(math.log10(c.learning_rate / _fake_lr_optimum(c)))
            acc = 0.978 - 0.01 * dist**2 - 0.02 * c.dropout - (0.006 if c.activation == "sigmoid" else 0.0)
            acc += 0.001 * math.log2(max(sum(c.hidden), 1) / 128) + trial_shift + rng.normal(0, 0.0025)
            acc = float(min(max(acc, 0.1), 0.995))
            epochs = c.epochs if c.early_stopping is None else int(rng.integers(max(1, c.epochs - 3), c.epochs + 1))
            e = np.arange(1, epochs + 1)
            rise = np.array([1 - math.exp(-1.3 * k) for k in e])  # scalar exp: the same bits on every CPU
            val_acc = acc - (1 - rise) * 0.08 + rng.normal(0, 0.001, epochs)
            train_acc = val_acc + 0.004 * e / epochs
            val_loss = 0.08 + (1 - val_acc) * 2.2 + rng.normal(0, 0.003, epochs)
            train_loss = val_loss - 0.02 * e / epochs
            if failed:
                val_acc = train_acc = np.full(epochs, 0.098)
                val_loss = train_loss = np.full(epochs, math.nan)
            history = {
                "train_loss": [float(x) for x in train_loss],
                "train_accuracy": [float(x) for x in np.clip(train_acc, 0, 1)],
                "val_loss": [float(x) for x in val_loss],
                "val_accuracy": [float(x) for x in np.clip(val_acc, 0, 1)],
            }
            result = RunResult(
                spec=_spec(c, s, t.trial_id),
                history=history,
                epochs_run=epochs,
                best_epoch=int(np.argmax(history["val_accuracy"])) + 1,
                test_loss=float(history["val_loss"][-1]),
                test_accuracy=float(history["val_accuracy"][-1]),
                param_sha256=hashlib.sha256(f"{spec_id}|params".encode()).hexdigest(),
                chunk_width=8 if max(c.hidden) <= 128 else 4,
                group_id=c.group_id(),
                seconds=float(
                    study.data_shape.fit_images(c.validation)
                    / c.batch_size
                    * 2e-4
                    * c.epochs
                    * (1 + 0.05 * rng.random())
                ),
                compile_seconds=1.5,
            )
            records.append(store.to_record(result, study.name, study.sha256, "synthetic-mnist-fingerprint", _FAKE_ENV))
    return records


def _spec(config, seed: int, trial_id: str):
    from hpstudy.runs import RunSpec

    return RunSpec(config, int(seed), trial_id)
