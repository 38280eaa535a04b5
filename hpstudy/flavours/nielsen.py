"""Nielsen's network.py (Neural Networks and Deep Learning, chapter 1): the semantics hpstudy reproduces exactly."""

from __future__ import annotations

# --- defaults ---------------------------------------------------------------------------------------------


# --- initialisers, layers and losses ----------------------------------------------------------------------


# --- optimizers, schedules and regularisation -------------------------------------------------------------

