"""PyTorch (torch.nn, torch.optim, torch.utils.data): the semantics hpstudy reproduces exactly."""

from __future__ import annotations

# --- defaults ---------------------------------------------------------------------------------------------


# --- initialisers, layers and losses ----------------------------------------------------------------------


# --- optimizers, schedules and regularisation -------------------------------------------------------------

OPTIMIZERS: dict = {}
SCHEDULES: dict = {}
