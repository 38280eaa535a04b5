"""`hpstudy new NAME`: a commented template study file that validates as written."""

from __future__ import annotations

import os
from pathlib import Path

from hpstudy.errors import OutputError, StudyError

TEMPLATE = '''\
# {name}: describe the study you re-run here (which paper, which table).
# Every key is documented in docs/studies.md. Check this file with `hpstudy show {name}`.

[study]
name = "{name}"                 # names its folders: letters, digits, '_', '-', '.'
title = "Title of the paper"
authors = ["First Author", "Second Author"]
citation = "Author, A. (2024). Title. Venue."
dataset = "mnist"               # or "fashion_mnist", "tfds:NAME" (prepared by tensorflow-datasets), "npz:PATH" (your arrays)
validation = "test"             # "test", "holdout:N" (the last N training images) or "none"
seeds = 5                       # seeds run by default; `--seeds A:B` adds more later, same bits

# The base configuration: what every trial shares unless the design varies it.
[model]
flavour = "keras"               # keras, sklearn or nielsen: the defaults of that implementation
hidden = [128]                  # widths of the hidden layers
activation = "relu"             # relu, sigmoid or tanh
dropout = 0.0

[training]
optimizer = "adam_keras"        # adam, adam_keras, sgd, sgd_momentum, sgd_nesterov
learning_rate = 0.001
batch_size = 32
epochs = 5

# Delete this table to train every run for all its epochs.
[training.early_stopping]
monitor = "val_loss"
patience = 0

# What varies: a grid crosses every level of every factor (8 trials here).
# See docs/studies.md for kind = "sweeps" (one factor at a time) and kind = "random" (a random search).
[design]
kind = "grid"

[design.factors]
learning_rate = [0.001, 0.01]
batch_size = [32, 64]
dropout = [0.0, 0.2]

# Every setting the paper leaves unstated: the value chosen, and why.
[[assumptions]]
key = "training.early_stopping"
value = "monitor val_loss, patience 0"
why = "Replace with what the paper says, or why these values were chosen."

# The paper's numbers, one entry per configuration and metric (accuracies as fractions).
# [[published]]
# where = {{ learning_rate = 0.001, batch_size = 32, dropout = 0.0 }}
# test_accuracy = 0.978
# source = "Table 2"
'''


def new_study(name: str, file: str | os.PathLike | None = None, studies: str | os.PathLike = "studies") -> Path:
    """Write the template for study `name` (to studies/NAME.toml unless `file`), check it loads; its path."""
    from hpstudy.study import NAME_PATTERN, load_study

    if not NAME_PATTERN.fullmatch(name):
        raise StudyError(
            f"study name {name!r} is invalid; expected at most 100 letters, digits, '_', '-' or '.', starting "
            "with a letter or digit (it names the study's folders)."
        )
    path = Path(file) if file is not None else Path(studies) / f"{name}.toml"
    try:
        if path.exists():
            raise OutputError(f"{path} already exists; nothing was written. Pick another name, or pass --file PATH.")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as fh:
            fh.write(TEMPLATE.format(name=name))
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}. Nothing was written.") from exc
    load_study(path)  # the template must validate as written
    return path
