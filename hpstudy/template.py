"""`hpstudy new NAME`: a commented template study file that validates as written."""

from __future__ import annotations

import os
from pathlib import Path

from hpstudy.errors import OutputError, StudyError

TEMPLATE = """\
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

{settings}# Every setting the paper leaves unstated: the value chosen, and why.
[[assumptions]]
key = "{assumed_key}"
value = "{assumed_value}"
why = "Replace with what the paper says, or why these values were chosen."

# The paper's numbers, one entry per configuration and metric (accuracies as fractions).
# [[published]]
# where = {{ {where} }}
# test_accuracy = 0.978
# source = "Table 2"
"""


ACTIVATIONS_LINE = "relu, sigmoid, tanh, elu, selu, gelu, gelu_tanh, softplus, leaky_relu, silu, identity"
DESIGN = """# What varies: a grid crosses every level of every factor (8 trials here).
# See docs/studies.md for kind = "sweeps" (one factor at a time) and kind = "random" (a random search).
[design]
kind = "grid"

[design.factors]
"""

# Per flavour: the [model], [training] and [design] tables (each library's usual settings, in its terms),
# the assumption the template starts the list with, and an example `where` of a published entry.
FLAVOURS: dict[str, dict[str, str]] = {
    "keras": {
        "settings": """# The base configuration: what every trial shares unless the design varies it.
[model]
flavour = "keras"               # keras, pytorch, sklearn or nielsen: the defaults of that implementation
hidden = [128]                  # widths of the hidden layers
activation = "relu"             # ACTIVATIONS
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

"""
        + DESIGN
        + """learning_rate = [0.001, 0.01]
batch_size = [32, 64]
dropout = [0.0, 0.2]

""",
        "assumed_key": "training.early_stopping",
        "assumed_value": "monitor val_loss, patience 0",
        "where": "learning_rate = 0.001, batch_size = 32, dropout = 0.0",
    },
    "pytorch": {
        "settings": """# The base configuration: what every trial shares unless the design varies it.
# flavour "pytorch": nn.Linear's default initialisation (weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))),
# nn.CrossEntropyLoss (mean over the batch), torch.optim.SGD, DataLoader(shuffle=True) each epoch.
[model]
flavour = "pytorch"
hidden = [128]                  # widths of the hidden layers (nn.Linear)
activation = "relu"             # ACTIVATIONS (nn.LeakyReLU's slope: 0.01)
dropout = 0.0                   # nn.Dropout after every hidden layer
batch_norm = "none"             # or "before_activation" / "after_activation": nn.BatchNorm1d (momentum 0.1, eps 1e-5)

[training]
optimizer = "sgd"               # torch.optim.SGD(lr), no momentum
learning_rate = 0.01
batch_size = 64
epochs = 10
drop_last = false               # DataLoader(drop_last=...): true leaves out each epoch's last, partial batch

"""
        + DESIGN
        + """learning_rate = [0.01, 0.1]
batch_size = [32, 64]
dropout = [0.0, 0.2]

""",
        "assumed_key": "training.drop_last",
        "assumed_value": "false",
        "where": "learning_rate = 0.01, batch_size = 32, dropout = 0.0",
    },
    "sklearn": {
        "settings": """# The base configuration: what every trial shares unless the design varies it.
# flavour "sklearn": MLPClassifier(solver='sgd') with its defaults (Nesterov momentum 0.9, alpha 1e-4,
# U(-b, b) weights and biases, log-loss, and its tol/n_iter_no_change stopping rule on the training loss).
[model]
flavour = "sklearn"
hidden = [100]                  # hidden_layer_sizes
activation = "relu"             # relu, sigmoid (its 'logistic'), tanh or identity

[training]
learning_rate = 0.001           # learning_rate_init (learning_rate='constant')
batch_size = 200                # batch_size='auto' is min(200, n_samples)
epochs = 200                    # max_iter

"""
        + DESIGN
        + """learning_rate = [0.001, 0.01]
batch_size = [100, 200]
l2 = [0.0001, 0.001]

""",
        "assumed_key": "training.batch_size",
        "assumed_value": "200",
        "where": "learning_rate = 0.001, batch_size = 200, l2 = 0.0001",
    },
    "nielsen": {
        "settings": """# The base configuration: what every trial shares unless the design varies it.
# flavour "nielsen": network.py (N(0, 1) weights and biases, sigmoid output with the quadratic cost, plain SGD).
[model]
flavour = "nielsen"
hidden = [30]                   # network.py's Network([inputs, 30, classes])
activation = "sigmoid"

[training]
learning_rate = 3.0             # eta
batch_size = 10                 # mini_batch_size
epochs = 30

"""
        + DESIGN
        + """learning_rate = [0.5, 3.0]
batch_size = [10, 20]
hidden = [[30], [100]]

""",
        "assumed_key": "study.validation",
        "assumed_value": "test",
        "where": "learning_rate = 3.0, batch_size = 10, hidden = [30]",
    },
}
for _flavour in FLAVOURS.values():
    _flavour["settings"] = _flavour["settings"].replace("ACTIVATIONS", ACTIVATIONS_LINE)


def new_study(
    name: str, file: str | os.PathLike | None = None, studies: str | os.PathLike = "studies", flavour: str = "keras"
) -> Path:
    """Write the template for study `name` in a flavour (to studies/NAME.toml unless `file`), check it
    loads; its path."""
    from hpstudy.study import NAME_PATTERN, load_study

    if not NAME_PATTERN.fullmatch(name):
        raise StudyError(
            f"study name {name!r} is invalid; expected at most 100 letters, digits, '_', '-' or '.', starting "
            "with a letter or digit (it names the study's folders)."
        )
    if flavour not in FLAVOURS:
        raise StudyError(f"--flavour {flavour!r} is invalid; expected one of {', '.join(FLAVOURS)}.")
    path = Path(file) if file is not None else Path(studies) / f"{name}.toml"
    try:
        if path.exists():
            raise OutputError(f"{path} already exists; nothing was written. Pick another name, or pass --file PATH.")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as fh:
            fh.write(TEMPLATE.format(name=name, **FLAVOURS[flavour]))
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}. Nothing was written.") from exc
    load_study(path)  # the template must validate as written
    return path
