"""Make the golden trajectories of tests/test_fidelity_optim_torch.py with the real PyTorch (not needed in CI).

    pip install torch==2.13.0            # CPU build; the `bench` extra
    python tests/golden/make_torch_optim_golden.py

For each case below, a torch.nn MLP (Linear layers with the sizes of tests/optim_fidelity.py, ReLU,
CrossEntropyLoss, float64) starts from `uniform_layers()` and trains the fixed mini-batch stream for three
epochs with the named torch.optim optimizer, lr_scheduler (scheduler.step() after every epoch, or after every
batch for interval="step") and gradient clipping; the sampled parameters after every epoch go to
tests/golden/torch_optim/<case>.npz, with the torch version. The cases and their hpstudy settings are in
tests/golden/torch_optim_cases.py, shared with the test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from optim_fidelity import EPOCHS, batches, float_inputs, sample, uniform_layers  # noqa: E402
from torch_optim_cases import CASES  # noqa: E402

OUT = HERE / "torch_optim"
OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta,
}
SCHEDULERS = {
    "step_lr": torch.optim.lr_scheduler.StepLR,
    "multistep_lr": torch.optim.lr_scheduler.MultiStepLR,
    "exponential_lr": torch.optim.lr_scheduler.ExponentialLR,
    "cosine_annealing_lr": torch.optim.lr_scheduler.CosineAnnealingLR,
    "linear_lr": torch.optim.lr_scheduler.LinearLR,
}


def run_torch(case: dict) -> np.ndarray:
    """The sampled parameters after each epoch (rows) of one case."""
    torch.manual_seed(0)
    layers = uniform_layers()
    linears = [torch.nn.Linear(w.shape[0], w.shape[1], dtype=torch.float64) for w, _ in layers]
    with torch.no_grad():
        for lin, (w, b) in zip(linears, layers):
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.copy_(torch.from_numpy(b.copy()))
    modules = []
    for i, lin in enumerate(linears):
        modules += [lin] + ([torch.nn.ReLU()] if i < len(linears) - 1 else [])
    model = torch.nn.Sequential(*modules)
    opt = OPTIMIZERS[case["optimizer"].split(":")[1]](
        model.parameters(), lr=case["lr"], foreach=False, **case.get("torch_args", case.get("args", {}))
    )
    scheduler, per_step = None, False
    if "schedule" in case:
        args = dict(case["schedule_args"])
        per_step = args.pop("interval", "epoch") == "step"
        scheduler = SCHEDULERS[case["schedule"].split(":")[1]](opt, **args)
    loss_fn = torch.nn.CrossEntropyLoss()
    rows = []
    for _ in range(EPOCHS):
        for images, labels in batches():
            opt.zero_grad()
            loss = loss_fn(model(torch.from_numpy(float_inputs(images))), torch.from_numpy(labels))
            loss.backward()
            if "clip_grad_norm" in case:
                torch.nn.utils.clip_grad_norm_(model.parameters(), case["clip_grad_norm"])
            if "clip_grad_value" in case:
                torch.nn.utils.clip_grad_value_(model.parameters(), case["clip_grad_value"])
            opt.step()
            if scheduler is not None and per_step:
                scheduler.step()
        if scheduler is not None and not per_step:
            scheduler.step()
        rows.append(sample([(lin.weight.detach().numpy().T, lin.bias.detach().numpy()) for lin in linears]))
    return np.stack(rows)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, case in CASES.items():
        np.savez(OUT / f"{name}.npz", after=run_torch(case), torch=np.array(torch.__version__))
        print(name)


if __name__ == "__main__":
    main()
