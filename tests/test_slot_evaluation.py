"""A run's evaluation values do not depend on its slot in a chunk nor on the runs beside it
(docs/reproducibility.md, "Evaluation values and a run's slot").

They once did: the engine evaluated a chunk with jax.vmap over the runs' parameters on images every lane
shared, XLA made each layer one product over all runs' columns, and a run's columns got other bits in
slot 0, in slot 1 and alone (`hpstudy verify` found it on fabrizio2021_batch: equal parameters, 1 ulp in
val_loss). The parameters were never affected: each run trains on its own batches. Now each lane evaluates
its own copy of the images. The parameter-hash tests (tests/test_reproducibility.py) cannot see this, so
here every value a run stores is compared, bit for bit, on real MNIST at the shape where it was found.
"""

from __future__ import annotations

import numpy as np
import pytest

from hpstudy import data as hdata
from hpstudy.config import RunConfig
from hpstudy.runs import RunSpec
from hpstudy.training import engine

# The shape where `hpstudy verify --sample 8` found it on fabrizio2021_batch: 784-30-10 sigmoid, batch 125.
CONFIG = RunConfig(
    hidden=(30,), activation="sigmoid", optimizer="sgd", learning_rate=0.1, batch_size=125, epochs=2, flavour="keras"
)


def _values(seeds: list[int], dataset, width: int) -> dict[int, tuple]:
    """Every value a run stores that evaluation gives (and its parameter hash), per seed, in one chunk."""
    device = engine.device_data(dataset)
    out: dict[int, tuple] = {}

    def on_chunk(results):
        for r in results:
            history = {k: np.asarray(v, np.float64).tobytes() for k, v in sorted(r.history.items())}
            out[r.spec.seed] = (
                r.param_sha256,
                history,
                np.float64(r.test_loss).tobytes(),
                np.float64(r.test_accuracy).tobytes(),
                r.test_predictions,
            )

    engine.execute([RunSpec(CONFIG, s) for s in seeds], lambda _: device, on_chunk, width_rule=lambda _: width)
    return out


@pytest.mark.parametrize("validation", ["test", "holdout:10000"])
def test_evaluation_values_do_not_depend_on_the_slot(mnist_dir, validation):
    # The chunk width is part of a run's identity (a product batched over 2 lanes may take another kernel
    # than one over 4), so slots are compared at the width the rule gives, with the run alone in its chunk.
    dataset = hdata.load_dataset("mnist", str(mnist_dir), validation)
    width = engine.chunk_width(CONFIG.static())
    assert width >= 2
    alone = _values([1], dataset, width)[1]
    company = [0, 2, 3, 4, 5, 6][: width - 1]
    for slot in (0, 1, width - 1):
        seeds = company[:slot] + [1] + company[slot:]
        other = _values(seeds, dataset, width)[1]
        assert other[0] == alone[0], f"slot {slot} of {width}: parameters differ from the run alone"
        for field in alone[1]:
            assert other[1][field] == alone[1][field], f"slot {slot}: history {field!r} differs from the run alone"
        assert other[2:] == alone[2:], f"slot {slot}: test loss, accuracy or predictions differ from the run alone"
    # the comparison can fail: another seed's values are other bytes
    assert _values([2], dataset, width)[2][1]["val_loss"] != alone[1]["val_loss"]
