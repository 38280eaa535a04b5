"""On real MNIST: the grid study's architecture learns what it should in one epoch."""

from __future__ import annotations

import pytest

from hpstudy import data as hdata
from hpstudy.config import RunConfig
from hpstudy.training import engine


@pytest.mark.mnist
def test_grid_architecture_one_epoch_reaches_95_percent(mnist_dir):
    config = RunConfig(
        hidden=(128, 128),
        activation="relu",
        dropout=0.2,
        optimizer="adam_keras",
        learning_rate=1e-3,
        batch_size=32,
        epochs=1,
    )
    device = engine.device_data(hdata.load_mnist(mnist_dir, "test", download=False))
    results = []
    engine.execute([engine.RunSpec(config, s) for s in range(2)], lambda _: device, results.extend)
    accuracies = [r.test_accuracy for r in results]
    assert len(accuracies) == 2 and all(a >= 0.95 for a in accuracies), accuracies
    assert results[0].param_sha256 != results[1].param_sha256
