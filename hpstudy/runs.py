"""A run to execute (RunSpec) and what training it gave (RunResult): plain data shared by the engine, the
worker processes, the store and the reports, importable without JAX."""

from __future__ import annotations

import dataclasses

from hpstudy.config import RunConfig, run_id

# Per-epoch metrics of a run, in the order the engine computes them (engine.EpochMetrics).
HISTORY_FIELDS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run to execute: a configuration, a seed index and the trial it belongs to."""

    config: RunConfig
    seed: int
    trial_id: str = ""

    @property
    def run_id(self) -> str:
        return run_id(self.config, self.seed)


@dataclasses.dataclass
class RunResult:
    """What the engine reports for one finished run."""

    spec: RunSpec
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    test_loss: float
    test_accuracy: float
    param_sha256: str
    chunk_width: int
    group_id: str
    seconds: float
    compile_seconds: float
    # The predicted class of each test image (one uint8 each, the test split's order) and which of them were
    # right (one bit each, np.packbits order); None for a run made before predictions were kept.
    test_predictions: bytes | None = None
    test_correct: bytes | None = None
