"""The PyTorch golden cases: the torch settings (made by make_torch_optim_golden.py) and the same settings
as hpstudy configuration values (read by tests/test_fidelity_optim_torch.py). `args` are torch's keyword
arguments and hpstudy's optimizer_args alike (torch_args where a TOML list stands for a torch tuple)."""

CASES = {
    "sgd": {"optimizer": "torch:sgd", "lr": 0.1},
    "sgd-momentum": {"optimizer": "torch:sgd", "lr": 0.05, "args": {"momentum": 0.9}},
    "sgd-momentum-dampening": {"optimizer": "torch:sgd", "lr": 0.05, "args": {"momentum": 0.9, "dampening": 0.3}},
    "sgd-nesterov-weight-decay": {
        "optimizer": "torch:sgd",
        "lr": 0.05,
        "args": {"momentum": 0.8, "nesterov": True, "weight_decay": 0.05},
    },
    "adam": {"optimizer": "torch:adam", "lr": 0.002},
    "adam-amsgrad-weight-decay": {
        "optimizer": "torch:adam",
        "lr": 0.002,
        "args": {"amsgrad": True, "weight_decay": 0.1, "betas": (0.8, 0.99)},
    },
    "adamw": {"optimizer": "torch:adamw", "lr": 0.002},
    "adamw-amsgrad": {"optimizer": "torch:adamw", "lr": 0.002, "args": {"amsgrad": True, "weight_decay": 0.5}},
    "rmsprop": {"optimizer": "torch:rmsprop", "lr": 0.001},
    "rmsprop-centered-momentum": {
        "optimizer": "torch:rmsprop",
        "lr": 0.001,
        "args": {"centered": True, "momentum": 0.5, "alpha": 0.9, "weight_decay": 0.01},
    },
    "adagrad": {"optimizer": "torch:adagrad", "lr": 0.01},
    "adagrad-lr-decay": {
        "optimizer": "torch:adagrad",
        "lr": 0.01,
        "args": {"lr_decay": 0.1, "initial_accumulator_value": 0.01, "eps": 1e-6},
    },
    "adadelta": {"optimizer": "torch:adadelta", "lr": 1.0},
    "adadelta-weight-decay": {"optimizer": "torch:adadelta", "lr": 1.0, "args": {"rho": 0.8, "weight_decay": 0.1}},
    "clip-grad-norm": {"optimizer": "torch:sgd", "lr": 0.1, "args": {"momentum": 0.9}, "clip_grad_norm": 0.05},
    "clip-grad-value": {"optimizer": "torch:sgd", "lr": 0.1, "clip_grad_value": 0.002},
    "step-lr": {
        "optimizer": "torch:sgd",
        "lr": 0.1,
        "args": {"momentum": 0.5},
        "schedule": "torch:step_lr",
        "schedule_args": {"step_size": 1, "gamma": 0.5},
    },
    "multistep-lr": {
        "optimizer": "torch:sgd",
        "lr": 0.1,
        "args": {"momentum": 0.5},
        "schedule": "torch:multistep_lr",
        "schedule_args": {"milestones": [1, 2], "gamma": 0.3},
    },
    "exponential-lr": {
        "optimizer": "torch:adam",
        "lr": 0.002,
        "schedule": "torch:exponential_lr",
        "schedule_args": {"gamma": 0.7},
    },
    "exponential-lr-per-step": {
        "optimizer": "torch:sgd",
        "lr": 0.1,
        "args": {"momentum": 0.9},
        "schedule": "torch:exponential_lr",
        "schedule_args": {"gamma": 0.9, "interval": "step"},
    },
    "cosine-annealing-lr": {
        "optimizer": "torch:rmsprop",
        "lr": 0.001,
        "args": {"momentum": 0.5},
        "schedule": "torch:cosine_annealing_lr",
        "schedule_args": {"T_max": 3, "eta_min": 0.0001},
    },
    "linear-lr": {
        "optimizer": "torch:adamw",
        "lr": 0.002,
        "schedule": "torch:linear_lr",
        "schedule_args": {"start_factor": 0.25, "total_iters": 2},
    },
}
