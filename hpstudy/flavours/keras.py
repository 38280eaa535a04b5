"""Keras 3 (and TF2 Keras: the same update rules): the semantics hpstudy reproduces exactly."""

from __future__ import annotations

# --- defaults ---------------------------------------------------------------------------------------------


# --- initialisers, layers and losses ----------------------------------------------------------------------


# --- optimizers, schedules and regularisation -------------------------------------------------------------

