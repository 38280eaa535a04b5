"""Shapes come from the data: no module but hpstudy/data.py holds an MNIST size, and every size the engine,
the workers, the estimates, the study checks and the reports use is the dataset's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hpstudy import budget
from hpstudy import data as hdata
from hpstudy.config import RunConfig
from hpstudy.errors import DataError
from hpstudy.runs import RunSpec
from hpstudy.training import engine, parallel

PACKAGE = Path(__file__).resolve().parent.parent / "hpstudy"
# MNIST's inputs (784), training-set size (60,000) and test-set size (10,000), as Python would spell them.
MNIST_SIZES = re.compile(r"(?<![\w.])(784|60_?000|10_?000)(?![\w.])")
# Lines where such a number means something else (each with why), matched by their text.
NOT_DATASET_SIZES = {
    "CONFIRM_RUNS = 10_000": "a number of runs that needs --yes",
    "n_resamples: int = 10_000": "bootstrap resamples",
}
# A 100-class 32x32x3 dataset as a .npz content name (hpstudy/npz_source.py): 5,000 training, 1,000 test images.
COLOUR = "npz:0123456789abcdef:32x32x3:100:5000:1000"


def test_no_module_but_data_py_holds_an_mnist_size():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).as_posix() == "data.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if MNIST_SIZES.search(line) and not any(text in line for text in NOT_DATASET_SIZES):
                found.append(f"hpstudy/{path.relative_to(PACKAGE).as_posix()}:{number}: {line.strip()}")
    assert not found, "MNIST sizes written outside hpstudy/data.py (read them from data.shape_of):\n" + "\n".join(found)


def test_the_grep_finds_what_it_looks_for():
    assert all(MNIST_SIZES.search(text) for text in ("sizes = (784, *h)", "n = 60000", "60_000 - k", "return 10_000"))
    assert not any(MNIST_SIZES.search(text) for text in ("7840", "100_000", "x10000y", "0.784", "10,000 runs"))


def test_shapes_of_each_kind_of_dataset():
    mnist = hdata.shape_of("mnist")
    assert (mnist.image, mnist.inputs, mnist.classes, mnist.n_train, mnist.n_test) == (
        (28, 28, 1),
        784,
        10,
        60000,
        10000,
    )
    assert hdata.shape_of("fashion_mnist") == mnist
    colour = hdata.shape_of(COLOUR)
    assert (colour.inputs, colour.classes, colour.n_train, colour.n_test) == (3072, 100, 5000, 1000)
    assert colour.fit_images("holdout:500") == 4500 and colour.eval_images("holdout:500") == 500
    assert colour.fit_images("test") == colour.fit_images("none") == 5000 and colour.eval_images("test") == 1000
    with pytest.raises(DataError, match="'cifar10' is unknown"):
        hdata.shape_of("cifar10")


def test_estimates_chunk_widths_and_worker_plans_use_the_dataset_s_sizes():
    mnist = RunConfig(hidden=(32,), batch_size=100, epochs=2)
    colour = RunConfig(dataset=COLOUR, hidden=(32,), batch_size=100, epochs=2, validation="holdout:1000")
    assert budget.macs((32,), "mnist") == 784 * 32 + 32 * 10
    assert budget.work(colour) == 2 * 4000 * (3072 * 32 + 32 * 100)
    assert budget.work(mnist) == 2 * 60000 * (784 * 32 + 32 * 10)
    assert (engine.chunk_width(mnist), engine.chunk_width(colour)) == (2, 1)  # 2.6 M and 10 M multiply-adds a step
    # the costlier network's part is planned first, whatever the order of the runs
    specs = [RunSpec(mnist, 0, "a"), RunSpec(colour, 0, "b")]
    assert [part[0].trial_id for part in parallel.plan_parts(specs, 2, 500)] == ["b", "a"]


def test_the_engine_refuses_data_of_another_shape_than_the_runs_name():
    data = engine.device_data(hdata.synthetic(n_train=20, n_test=10))
    spec = RunSpec(RunConfig(dataset=COLOUR, hidden=(4,), batch_size=10, epochs=1), 0, "t")
    with pytest.raises(ValueError, match="take 3072 inputs per image, but the data given has 784"):
        engine.execute([spec], lambda _: data, lambda results: None)
