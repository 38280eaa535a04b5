"""Train a small study in a fresh process and print every stored value that training determines, as JSON.

Run by tests/test_cross_cpu.py natively and under qemu-user emulating another CPU:
    python tests/cross_cpu_child.py MODE STUDY.toml RESULTS [synthetic[:N_TRAIN:N_TEST]|mnist] [SETTINGS]
SETTINGS, for probing candidate settings by hand (docs/reproducibility.md, issue 19): a JSON list
[[XLA flags...], {environment variables}] applied instead of MODE's settings (MODE must be "native", whose
settings are then left as given, or "fixed-order", whose bits must not depend on them); the runs are
recorded as MODE. Also run under qemu-aarch64 (tests/test_aarch64.py). HPSTUDY_CHILD_ALL_CORES=1: no
pinning, XLA's thread pool gets every core (as on a Mac, which cannot pin).
"""

import json
import os
import sys

from hpstudy.training import numerics

mode, study_path, results, data = sys.argv[1:5]
if os.environ.get("HPSTUDY_CHILD_ALL_CORES") and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, range(os.cpu_count() or 1))  # before JAX sizes its thread pool
    numerics.CAN_PIN = False  # as on macOS: pin_one_core leaves every core to XLA
if len(sys.argv) > 5:
    assert mode in ("native", "fixed-order"), "explicit settings replace native or fixed-order mode's"
    flags, extra = json.loads(sys.argv[5])
    os.environ["XLA_FLAGS"] = " ".join([*flags, *numerics.COMMON_XLA_FLAGS])
    os.environ.update(extra)
    numerics._applied["mode"] = mode  # run_study's numerics.apply("native") then keeps these settings
    assert numerics.pin_one_core()
# Before anything starts JAX, as in every training process; the CPU floor check is part of what is tested.
assert numerics.prepare_process(mode), "JAX started before the numerics settings could be applied"

from hpstudy import data as hdata  # noqa: E402
from hpstudy import store  # noqa: E402
from hpstudy.runner import run_study  # noqa: E402
from hpstudy.study import load_study  # noqa: E402
from hpstudy.verify import COMPARED  # noqa: E402

study = load_study(study_path)
if data.startswith("synthetic"):
    n_train, n_test = map(int, data.split(":")[1:]) if ":" in data else (1600, 256)
    load = lambda: hdata.synthetic(n_train=n_train, n_test=n_test)  # noqa: E731
else:
    load = lambda: hdata.load_mnist(None, study.meta.get("validation", "test"), download=False)  # noqa: E731
report = run_study(study, range(study.default_seeds), load, results, progress=False, numerics_mode=mode)
runs = store.read_runs(report.directory)
out = {
    row["run_id"]: {
        f: (list(map(float, row[f])) if hasattr(row[f], "__len__") and not isinstance(row[f], str) else row[f])
        for f in COMPARED
    }
    for _, row in runs.iterrows()
}
print(json.dumps({"features": sorted(k for k, v in numerics.cpu_features().items() if v), "runs": out}, default=str))
