"""Numerics mode portable-v2 (hpstudy/training/numerics.py, model.TransposedGradDense) as a whole study: its runs
repeat bit for bit in a fresh process, do not depend on the runs beside them in a chunk, and differ from portable
mode's (other products, so the comparisons can fail). Across CPUs: tests/test_cross_cpu.py -k portable_v2."""

from __future__ import annotations

import numpy as np
import pytest
from test_fixed_order_mode import differing, study_file, train

from hpstudy.training import numerics

pytestmark = pytest.mark.skipif(not numerics.is_x86_64(), reason="portable-v2 is defined for x86-64 only")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("portable_v2_mode")
    study = study_file(tmp)
    return {
        "first": train(tmp, "first", numerics.PORTABLE_V2, study),
        "again": train(tmp, "again", numerics.PORTABLE_V2, study),
        "3_seeds": train(tmp, "3_seeds", numerics.PORTABLE_V2, study_file(tmp, seeds=3)),
        "portable": train(tmp, "portable", "portable", study),
    }


def test_portable_v2_runs_repeat_and_differ_from_portable_mode(trained):
    """Every stored value of both runs (Keras' Adam and SGD, dropout) equal in a second process; portable
    mode's runs of the same study have other parameters; the runs trained (finite losses that fell)."""
    assert not differing(trained["first"], trained["again"])
    mine = {v["param_sha256"] for v in trained["first"]["runs"].values()}
    assert len(mine) == 2 and mine.isdisjoint(v["param_sha256"] for v in trained["portable"]["runs"].values())
    for values in trained["first"]["runs"].values():
        assert np.all(np.isfinite(values["train_loss"])) and values["train_loss"][-1] < values["train_loss"][0]


def test_portable_v2_runs_do_not_depend_on_their_chunk(trained):
    """Seed 0 of each configuration alone in its chunk (1 seed) and beside seeds 1 and 2 (3 seeds, one chunk):
    every stored value equal."""
    alone, beside = trained["first"]["runs"], trained["3_seeds"]["runs"]
    assert len(beside) == 6 and set(alone) <= set(beside)
    for run_id, values in alone.items():
        diff = {f: (v, beside[run_id][f]) for f, v in values.items() if beside[run_id][f] != v}
        assert not diff, (run_id, diff)
