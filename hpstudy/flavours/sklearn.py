"""scikit-learn's MLPClassifier: the semantics hpstudy reproduces exactly."""

from __future__ import annotations

# --- defaults ---------------------------------------------------------------------------------------------

import math


# --- initialisers, layers and losses ----------------------------------------------------------------------


def init_bound(fan_in: int, fan_out: int, activation: str) -> float:
    """MLPClassifier._init_coef: weights and biases U(-b, b), b = sqrt(f / (fan_in + fan_out)), f = 2 for
    activation='logistic' (hpstudy's sigmoid), 6 otherwise."""
    factor = 2.0 if activation == "sigmoid" else 6.0
    return math.sqrt(factor / (fan_in + fan_out))


# --- optimizers, schedules and regularisation -------------------------------------------------------------

