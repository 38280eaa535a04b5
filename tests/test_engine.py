"""Engine pieces against plain-Python transcriptions of the reference behaviour."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from hpstudy.config import EarlyStopping, RunConfig
from hpstudy.training import engine


def keras_reference(values, patience, min_delta):
    """Keras 3 EarlyStopping.on_epoch_end for mode 'min': the epoch index at which training stops, or None."""
    best, wait = float("inf"), 0
    for epoch, current in enumerate(values):
        wait += 1
        if current + min_delta < best:
            best, wait = current, 0
            continue
        if wait >= patience and epoch > 0:
            return epoch
    return None


def sklearn_reference(values, n_iter_no_change, tol):
    """scikit-learn MLP's _update_no_improvement_count on the training loss: stop epoch or None."""
    best, count = float("inf"), 0
    for epoch, loss in enumerate(values):
        count = count + 1 if loss > best - tol else 0
        best = min(best, loss)
        if count > n_iter_no_change:
            return epoch
    return None


def engine_stop_epoch(es: EarlyStopping, values):
    """Drive engine.early_stopping_update over a sequence of monitored values."""
    state = engine.RunState(
        None,
        None,
        None,
        jnp.array(jnp.inf, jnp.float32),
        jnp.array(0),
        jnp.array(False),
        jnp.array(0),
        jnp.array(-1),
        None,
        None,
    )
    for epoch, v in enumerate(values):
        metrics = engine.EpochMetrics(jnp.float32(v), jnp.float32(0), jnp.float32(v), jnp.float32(0))
        _, best, wait, stop = engine.early_stopping_update(es, state, metrics, jnp.int32(epoch))
        if bool(stop):
            return epoch
        state = state._replace(best=best, wait=wait)
    return None


@pytest.mark.parametrize("patience", [0, 1, 2, 3])
@pytest.mark.parametrize("min_delta", [0.0, 0.0625])  # exact in binary: ties compare alike in float32 and float64
def test_keras_early_stopping_matches_callback(patience, min_delta):
    rng = np.random.default_rng(patience * 10 + int(min_delta * 16))
    es = EarlyStopping(monitor="val_loss", patience=patience, min_delta=min_delta)
    stops = []
    for _ in range(40):
        values = (rng.integers(0, 64, size=8) / 64).tolist()
        stops.append(engine_stop_epoch(es, values))
        assert stops[-1] == keras_reference(values, patience, min_delta), values
    assert any(s is not None for s in stops)  # the sequences really exercise stopping


@pytest.mark.parametrize("n_iter_no_change", [0, 2])
def test_sklearn_stopping_matches_reference(n_iter_no_change):
    rng = np.random.default_rng(n_iter_no_change)
    es = EarlyStopping(monitor="train_loss", patience=n_iter_no_change, min_delta=0.0625, rule="sklearn")
    for _ in range(40):
        values = (rng.integers(0, 64, size=10) / 64).tolist()
        assert engine_stop_epoch(es, values) == sklearn_reference(values, n_iter_no_change, 0.0625), values


def test_keras_patience_zero_stops_at_first_worse_epoch():
    es = EarlyStopping(monitor="val_loss", patience=0)
    assert engine_stop_epoch(es, [0.5, 0.4, 0.45, 0.3]) == 2
    assert engine_stop_epoch(es, [0.5, 0.4, 0.3, 0.2]) is None


def test_epoch_batches_cover_every_example_once_with_partial_last_batch():
    config = RunConfig(batch_size=64)
    idx, mask = engine.epoch_batches(config, jnp.array([0, 7], jnp.uint32), 500)
    assert idx.shape == (8, 64) and float(mask.sum()) == 500
    assert float(mask[-1].sum()) == 500 - 7 * 64
    real = np.asarray(idx)[np.asarray(mask) > 0]
    assert sorted(real.tolist()) == list(range(500))


def test_chunk_width_depends_only_on_static_shapes():
    base = RunConfig(hidden=(128, 128), batch_size=32)
    widths = {
        engine.chunk_width(dataclasses.replace(base, learning_rate=lr, dropout=d))
        for lr in (1e-4, 1e-2, 1.0)
        for d in (0.0, 0.3)
    }
    assert len(widths) == 1
    for hidden in ((30,), (128, 128), (512, 512, 512, 512, 512)):
        for batch in (10, 32, 200):
            w = engine.chunk_width(RunConfig(hidden=hidden, batch_size=batch))
            assert 1 <= w <= 512 and w & (w - 1) == 0  # a power of two


def test_chunk_width_is_a_function_of_the_device_kind_and_the_cpu_rule_is_unchanged():
    """The CPU widths documented in docs/design.md (every stored run's bits depend on them) stay as they were;
    this CPU process uses the CPU rule; the GPU rule gives wider chunks, never narrower."""
    grid = RunConfig(hidden=(128, 128), batch_size=32)
    small = RunConfig(hidden=(30,), batch_size=10)
    cases = {
        grid: (2, 256),
        small: (4, 256),
        dataclasses.replace(grid, batch_size=64): (1, 128),
        dataclasses.replace(grid, batch_size=128): (1, 64),
        RunConfig(hidden=(32, 32), batch_size=64): (4, 256),
        RunConfig(hidden=(512,) * 5, batch_size=128): (1, 8),
    }
    for config, (cpu, gpu) in cases.items():
        assert engine.chunk_width(config) == engine.chunk_width(config, "cpu") == cpu
        assert engine.device_chunk_width(config) == cpu  # JAX runs on the CPU here
        assert engine.chunk_width(config, "gpu") == engine.chunk_width(config, "tpu") == gpu
        assert gpu >= cpu and gpu & (gpu - 1) == 0


def test_a_failing_worker_raises_a_clear_error_in_the_parent():
    """A run that fails inside a worker process surfaces in the parent as an EngineError that carries the
    worker's own message, instead of hanging or being lost."""
    from hpstudy.errors import EngineError
    from hpstudy.runs import RunSpec
    from hpstudy.training import parallel
    from tests.conftest import synthetic_dataset

    bad = RunSpec(RunConfig(hidden=(8,), batch_size=64, epochs=1, optimizer="no_such_optimizer"), 0)
    with pytest.raises(EngineError, match="no_such_optimizer"):
        parallel.execute_parallel([bad], synthetic_dataset(), lambda results: None, workers=1)


def test_work_is_split_into_parts_of_whole_chunks_largest_first():
    from hpstudy.runs import RunSpec
    from hpstudy.training import parallel

    big = RunConfig(hidden=(32, 32), batch_size=64, epochs=3)
    small = RunConfig(hidden=(32, 32), batch_size=64, epochs=1)
    width = engine.chunk_width(big)
    specs = [RunSpec(small, s) for s in range(3)] + [RunSpec(big, s) for s in range(5 * width)]
    parts = parallel.plan_parts(specs, workers=2, n_train=500)
    assert sorted(s.run_id for part in parts for s in part) == sorted(s.run_id for s in specs)  # each run once
    assert [len(p) for p in parts] == [3 * width, 2 * width, 3]  # whole chunks; the 3-epoch group first
    assert all(len({s.config.static() for s in part}) == 1 for part in parts)
