"""Nielsen's network.py (Neural Networks and Deep Learning, chapter 1): the semantics hpstudy reproduces exactly."""

from __future__ import annotations

# --- defaults ---------------------------------------------------------------------------------------------


# --- initialisers, layers and losses ----------------------------------------------------------------------

# Network.__init__: np.random.randn for every weight and bias, unscaled.
INIT_STDDEV = 1.0


# --- optimizers, schedules and regularisation -------------------------------------------------------------
