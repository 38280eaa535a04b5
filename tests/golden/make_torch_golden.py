"""Regenerate tests/golden/torch_golden.npz and torch_golden.json with the real PyTorch.

    pip install torch   # CPU build; not needed by the tests, which read the golden files
    python tests/golden/make_torch_golden.py

Each case trains a small MLP (12 inputs, hidden 8 and 6, 10 outputs) in float64 for four torch.optim.SGD
steps (the last on a partial mini-batch, as DataLoader(drop_last=False) yields it) from given initial
parameters, and stores the initial parameters, the batches, the parameters after the steps, BatchNorm1d's
running statistics and the outputs in eval mode. Dropout cases store the masks torch's nn.Dropout drew
(read back by forward hooks), so hpstudy can take the same steps with the same masks. Initialiser cases
store draws of nn.Linear's default initialisation and of torch.nn.init's functions; DataLoader cases the
number and sizes of the batches it yields. tests/test_fidelity_torch.py compares hpstudy against them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).parent
N_IN, HIDDEN, N_OUT = 12, (8, 6), 10
BATCH, N_EXAMPLES = 5, 17  # three full batches and one of 2
LR = 0.125
ACTIVATIONS = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}


def case_list() -> list[dict]:
    """Every trained case: activation, loss, label smoothing, batch norm placement, dropout, input scale."""
    cases = [{"name": f"act-{a}", "activation": a} for a in ACTIVATIONS]
    # inputs large enough that many pre-activations pass Softplus's threshold of 20
    cases.append({"name": "act-softplus-threshold", "activation": "softplus", "scale": 40.0})
    cases += [
        {"name": "loss-label-smoothing", "activation": "tanh", "label_smoothing": 0.2},
        {"name": "loss-mse", "activation": "tanh", "loss": "mse"},
        {"name": "bn-before", "activation": "relu", "batch_norm": "before_activation"},
        {"name": "bn-after", "activation": "tanh", "batch_norm": "after_activation"},
        {"name": "dropout-hidden", "activation": "tanh", "dropout": 0.3},
        {"name": "dropout-input-and-layers", "activation": "tanh", "input_dropout": 0.2, "layer_dropout": [0.5, 0.1]},
    ]
    for c in cases:
        c.setdefault("loss", "softmax_cross_entropy")
        c.setdefault("label_smoothing", 0.0)
        c.setdefault("batch_norm", "none")
        c.setdefault("dropout", 0.0)
        c.setdefault("input_dropout", 0.0)
        c.setdefault("layer_dropout", None)
        c.setdefault("scale", 1.0)
    return cases


def build(case: dict) -> tuple[nn.Sequential, list[nn.Linear], list[nn.BatchNorm1d], list[nn.Dropout]]:
    """The case's network as a torch model (hidden: Linear, [BatchNorm1d], activation, [BatchNorm1d], Dropout)."""
    layers, linears, norms, drops = [], [], [], []
    if case["input_dropout"]:
        drops.append(nn.Dropout(case["input_dropout"]))
        layers.append(drops[-1])
    rates = case["layer_dropout"] or [case["dropout"]] * len(HIDDEN)
    width = N_IN
    for out, rate in zip(HIDDEN, rates):
        linears.append(nn.Linear(width, out))
        layers.append(linears[-1])
        if case["batch_norm"] == "before_activation":
            norms.append(nn.BatchNorm1d(out))
            layers.append(norms[-1])
        layers.append(ACTIVATIONS[case["activation"]]())
        if case["batch_norm"] == "after_activation":
            norms.append(nn.BatchNorm1d(out))
            layers.append(norms[-1])
        if rate:
            drops.append(nn.Dropout(rate))
            layers.append(drops[-1])
        width = out
    linears.append(nn.Linear(width, N_OUT))
    layers.append(linears[-1])
    return nn.Sequential(*layers).double(), linears, norms, drops


def train_case(case: dict, index: int, arrays: dict) -> None:
    """Train one case and store its arrays under '<name>/...'."""
    rng = np.random.default_rng(1000 + index)
    torch.manual_seed(index)
    model, linears, norms, drops = build(case)
    with torch.no_grad():  # initial parameters: nn.Linear's own draw, BatchNorm1d's scale jittered off 1
        for norm in norms:
            norm.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, norm.weight.shape)))
            norm.bias.copy_(torch.from_numpy(rng.normal(0, 0.1, norm.bias.shape)))
    name = case["name"]
    store_params(arrays, f"{name}/initial", linears, norms)
    x = rng.normal(0, 1, (N_EXAMPLES, N_IN)) * case["scale"]
    y = rng.integers(0, N_OUT, N_EXAMPLES)
    arrays[f"{name}/x"], arrays[f"{name}/y"] = x, y
    masks: list[np.ndarray] = []
    for drop in drops:  # the mask each Dropout drew: kept where its output is not zero (inputs are nonzero)
        drop.register_forward_hook(lambda m, inp, out: masks.append((out != 0).numpy().astype(np.uint8)))
    if case["loss"] == "mse":
        loss_fn = nn.MSELoss()
    else:
        loss_fn = nn.CrossEntropyLoss(label_smoothing=case["label_smoothing"])
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    model.train()
    for start in range(0, N_EXAMPLES, BATCH):
        xb = torch.from_numpy(x[start : start + BATCH])
        yb = torch.from_numpy(y[start : start + BATCH])
        target = nn.functional.one_hot(yb, N_OUT).double() if case["loss"] == "mse" else yb
        opt.zero_grad()
        loss_fn(model(xb), target).backward()
        opt.step()
    store_params(arrays, f"{name}/final", linears, norms)
    for i, norm in enumerate(norms):
        arrays[f"{name}/final/BatchNorm_{i}/mean"] = norm.running_mean.detach().numpy().copy()
        arrays[f"{name}/final/BatchNorm_{i}/var"] = norm.running_var.detach().numpy().copy()
    # masks in forward order per step: input (if any), then the hidden layers'
    for i, mask in enumerate(masks):
        arrays[f"{name}/mask/{i}"] = mask
    model.eval()
    with torch.no_grad():
        arrays[f"{name}/eval_outputs"] = model(torch.from_numpy(x[:BATCH])).numpy().copy()


def store_params(arrays: dict, prefix: str, linears, norms) -> None:
    """Linear weights as hpstudy kernels (fan_in, fan_out), biases; BatchNorm1d weight and bias."""
    for i, lin in enumerate(linears):
        arrays[f"{prefix}/Dense_{i}/kernel"] = lin.weight.detach().numpy().T.copy()
        arrays[f"{prefix}/Dense_{i}/bias"] = lin.bias.detach().numpy().copy()
    for i, norm in enumerate(norms):
        arrays[f"{prefix}/BatchNorm_{i}/scale"] = norm.weight.detach().numpy().copy()
        arrays[f"{prefix}/BatchNorm_{i}/bias"] = norm.bias.detach().numpy().copy()


INIT_FAN_IN, INIT_FAN_OUT, DRAWS = 300, 100, 1500


def initialiser_draws(arrays: dict) -> None:
    """Draws of nn.Linear's default weight and bias, and of torch.nn.init's normal and orthogonal schemes."""
    torch.manual_seed(0)
    lin = nn.Linear(INIT_FAN_IN, INIT_FAN_OUT)
    arrays["init/linear_weight"] = lin.weight.detach().numpy().ravel()[:DRAWS].astype(np.float32)
    arrays["init/linear_bias"] = lin.bias.detach().numpy().astype(np.float32)
    w = torch.empty(INIT_FAN_OUT, INIT_FAN_IN)  # torch's (fan_out, fan_in) weight layout
    for name, fn in (
        ("xavier_normal", nn.init.xavier_normal_),
        ("xavier_uniform", nn.init.xavier_uniform_),
        ("kaiming_normal", lambda t: nn.init.kaiming_normal_(t, nonlinearity="relu")),
        ("kaiming_uniform", lambda t: nn.init.kaiming_uniform_(t, nonlinearity="relu")),
        ("orthogonal", nn.init.orthogonal_),
    ):
        fn(w)
        arrays[f"init/{name}"] = w.numpy().ravel()[:DRAWS].astype(np.float32).copy()


def dataloader_batches() -> dict:
    """Batch sizes DataLoader(shuffle=True) yields for a few (n, batch_size), with and without drop_last."""
    out = {}
    for n, b in ((17, 5), (20, 5), (60000, 32), (60000, 128), (7, 10)):
        for drop_last in (False, True):
            loader = torch.utils.data.DataLoader(list(range(n)), batch_size=b, shuffle=True, drop_last=drop_last)
            sizes = [len(batch) for batch in loader]
            seen = {int(i) for batch in loader for i in batch}
            out[f"{n},{b},{drop_last}"] = {
                "batches": len(sizes),
                "last": sizes[-1] if sizes else 0,
                "sizes": sorted(set(sizes)),
                "distinct": len(seen),
            }
    return out


def main() -> None:
    torch.set_default_dtype(torch.float64)
    arrays: dict[str, np.ndarray] = {}
    cases = case_list()
    for i, case in enumerate(cases):
        train_case(case, i, arrays)
    initialiser_draws(arrays)
    np.savez_compressed(HERE / "torch_golden.npz", **arrays)
    meta = {
        "torch": torch.__version__,
        "lr": LR,
        "batch": BATCH,
        "n_in": N_IN,
        "hidden": list(HIDDEN),
        "n_out": N_OUT,
        "steps": math.ceil(N_EXAMPLES / BATCH),
        "cases": cases,
        "dataloader": dataloader_batches(),
        "init": {"fan_in": INIT_FAN_IN, "fan_out": INIT_FAN_OUT},
        "defaults": {
            "leaky_relu_slope": nn.LeakyReLU().negative_slope,
            "softplus_threshold": nn.Softplus().threshold,
            "gelu_approximate": nn.GELU().approximate,
            "batchnorm_momentum": nn.BatchNorm1d(1).momentum,
            "batchnorm_eps": nn.BatchNorm1d(1).eps,
            "cross_entropy_reduction": nn.CrossEntropyLoss().reduction,
            "elu_alpha": nn.ELU().alpha,
        },
    }
    (HERE / "torch_golden.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
