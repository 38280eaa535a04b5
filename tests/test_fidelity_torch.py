"""The pytorch flavour against golden files made with the real PyTorch (no torch needed here).

tests/golden/make_torch_golden.py (run it with torch installed to regenerate) trained small MLPs in float64
with torch.optim.SGD from stored initial parameters on stored mini-batches (the last one partial, as
DataLoader(drop_last=False) yields it), with nn.Linear, each activation module at its defaults,
nn.CrossEntropyLoss (with label smoothing) or nn.MSELoss, nn.BatchNorm1d and nn.Dropout (whose masks it
read back), and stored the parameters, running statistics and eval-mode outputs after the steps. Here
hpstudy's `train_step` takes the same steps from the same parameters (with the same dropout masks); the
largest difference, relative to the largest parameter, must stay below 1e-10 in float64. Initialiser
draws and DataLoader batch counts are compared as distributions and counts.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from hpstudy.config import RunConfig
from hpstudy.flavours import pytorch as torch_flavour
from hpstudy.training import model as hmodel
from hpstudy.training.engine import epoch_batches, model_of, train_step
from hpstudy.training.optimizers import make_optimizer

GOLDEN = Path(__file__).parent / "golden"
META = json.loads((GOLDEN / "torch_golden.json").read_text())
TOL = 1e-10
CASES = {c["name"]: c for c in META["cases"]}


@functools.lru_cache(maxsize=1)
def arrays() -> dict:
    """Every stored array, by name."""
    with np.load(GOLDEN / "torch_golden.npz") as z:
        return {k: z[k] for k in z.files}


def config_of(case: dict, **override) -> RunConfig:
    """The pytorch-flavour configuration of a golden case."""
    settings = dict(
        flavour="pytorch",
        hidden=tuple(META["hidden"]),
        activation=case["activation"],
        init="pytorch",
        loss=case["loss"],
        optimizer="sgd",
        learning_rate=META["lr"],
        batch_size=META["batch"],
        label_smoothing=case["label_smoothing"],
        batch_norm=case["batch_norm"],
        dropout=case["dropout"],
        input_dropout=case["input_dropout"],
        layer_dropout=tuple(case["layer_dropout"]) if case["layer_dropout"] else None,
    )
    return RunConfig(**{**settings, **override})


def tree(prefix: str) -> dict:
    """The stored arrays under prefix as a nested parameter dict ({layer: {name: array}})."""
    out: dict = {}
    for key, value in arrays().items():
        if key.startswith(prefix + "/"):
            layer, name = key[len(prefix) + 1 :].split("/")
            out.setdefault(layer, {})[name] = value
    return out


def flat(params: dict) -> list[np.ndarray]:
    """Every array of a parameter dict in a fixed order."""
    return [np.asarray(params[layer][name], np.float64) for layer in sorted(params) for name in sorted(params[layer])]


def relative(ours: dict, reference: dict) -> float:
    """max |ours - reference| over every array, divided by max |reference|."""
    a, b = flat(ours), flat(reference)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b)) / max(float(np.max(np.abs(y))) for y in b)


def step_masks(case: dict, config: RunConfig, step: int, rows: int) -> tuple | None:
    """torch's dropout masks of one step, in hpstudy's order (hidden layers, then the input), padded to a batch."""
    name, batch = case["name"], META["batch"]
    rates = list(config.layer_dropout or (config.dropout,) * len(config.hidden))
    widths = list(config.hidden)
    order = [i for i, r in enumerate(rates) if r]  # torch's forward order: the input's first, then hidden
    if config.input_dropout:
        rates.append(config.input_dropout)
        widths.append(META["n_in"])
        order = [len(rates) - 1, *order]
    if not order:
        return None
    stored = [arrays()[f"{name}/mask/{step * len(order) + k}"] for k in range(len(order))]
    masks = [np.ones((batch, w), bool) for w in widths]
    for k, layer in enumerate(order):
        masks[layer][:rows] = stored[k].astype(bool)
    return tuple(jnp.asarray(m) for m in masks)


def train_golden(case: dict, **override) -> tuple[dict, dict | None, np.ndarray]:
    """hpstudy's steps on a golden case in float64: (final params, final batch statistics, eval outputs)."""
    config = config_of(case, **override)
    name, batch = case["name"], META["batch"]
    x_all, y_all = arrays()[f"{name}/x"], arrays()[f"{name}/y"]
    with jax.enable_x64(True):
        params = jax.tree.map(jnp.asarray, tree(f"{name}/initial"))
        stats_ = None
        if config.batch_norm != "none":
            stats_ = {
                layer: {"mean": jnp.zeros_like(p["scale"]), "var": jnp.ones_like(p["scale"])}
                for layer, p in params.items()
                if layer.startswith("BatchNorm")
            }
        opt_state = make_optimizer(config.optimizer, config.momentum, jnp.asarray(config.learning_rate)).init(params)
        step = jax.jit(functools.partial(train_step, config))
        for s, start in enumerate(range(0, len(y_all), batch)):
            rows = min(batch, len(y_all) - start)
            x = np.zeros((batch, META["n_in"]))
            y = np.zeros(batch, np.int32)
            x[:rows], y[:rows] = x_all[start : start + rows], y_all[start : start + rows]
            mask = (np.arange(batch) < rows).astype(np.float64)
            out = step(
                params,
                opt_state,
                jnp.asarray(x),
                jnp.asarray(y),
                jnp.asarray(mask),
                jnp.asarray(config.dropout),
                jax.random.key_data(jax.random.key(s)),
                masks=step_masks(case, config, s, rows),
                batch_stats=stats_,
            )
            params, opt_state = out[0], out[1]
            stats_ = out[4] if stats_ is not None else None
        variables = {"params": params} | ({"batch_stats": stats_} if stats_ is not None else {})
        outputs = np.asarray(model_of(config).apply(variables, jnp.asarray(x_all[:batch])))
        return jax.tree.map(np.asarray, params), jax.tree.map(np.asarray, stats_), outputs


def final_reference(case: dict) -> tuple[dict, dict]:
    """torch's final parameters and running statistics (as hpstudy's trees)."""
    final = tree(f"{case['name']}/final")
    params = {k: {n: a for n, a in v.items() if n not in ("mean", "var")} for k, v in final.items()}
    stats_ = {k: {"mean": v["mean"], "var": v["var"]} for k, v in final.items() if "mean" in v}
    return params, stats_


@pytest.mark.parametrize("name", tuple(CASES))
def test_pytorch_flavour_takes_torchs_steps(name):
    case = CASES[name]
    ours, our_stats, outputs = train_golden(case)
    params, running = final_reference(case)
    assert relative(tree(f"{name}/initial"), params) > 1e-3, "torch really trained"
    rel = relative(ours, params)
    if running:
        rel = max(rel, relative(our_stats, running))
    ref_out = arrays()[f"{name}/eval_outputs"]
    rel = max(rel, float(np.max(np.abs(outputs - ref_out)) / np.max(np.abs(ref_out))))
    print(f"torch {name}: max relative difference {rel:.3e}")
    assert rel < TOL


@pytest.mark.parametrize(
    "name, wrong",
    [
        ("act-softplus-threshold", {"flavour": "keras"}),  # log(1 + exp(x)) without nn.Softplus's threshold
        ("act-leaky_relu", {"negative_slope": 0.3}),  # Keras' LeakyReLU slope
        ("act-gelu", {"activation": "gelu_tanh"}),  # jax.nn.gelu's default approximation
        ("bn-before", {"flavour": "keras"}),  # Keras' momentum, epsilon and biased running variance
        ("loss-label-smoothing", {"label_smoothing": 0.0}),
    ],
    ids=["softplus-threshold", "leaky-slope", "gelu-approximate", "batchnorm-conventions", "label-smoothing"],
)
def test_golden_files_detect_the_other_librarys_semantics(name, wrong):
    """Each library difference moves the parameters by far more than the tolerance."""
    case = CASES[name]
    params, running = final_reference(case)
    ours, our_stats, _ = train_golden(case, **wrong)
    rel = relative(ours, params)
    if running:
        rel = max(rel, relative(our_stats, running))
    assert rel > 10 * TOL  # ours agree below TOL (softplus's threshold alone moves them by about 1e-9)


def test_softplus_threshold_case_crosses_the_threshold():
    """The softplus-threshold case really feeds pre-activations above 20 (else it would prove nothing)."""
    case = CASES["act-softplus-threshold"]
    initial = tree(f"{case['name']}/initial")
    pre = arrays()[f"{case['name']}/x"] @ initial["Dense_0"]["kernel"] + initial["Dense_0"]["bias"]
    assert (pre > torch_flavour.SOFTPLUS_THRESHOLD).mean() > 0.05


def test_flavour_constants_are_torchs_defaults():
    defaults = META["defaults"]
    assert torch_flavour.LEAKY_RELU_SLOPE == defaults["leaky_relu_slope"]
    assert torch_flavour.SOFTPLUS_THRESHOLD == defaults["softplus_threshold"]
    assert torch_flavour.BATCHNORM_MOMENTUM == defaults["batchnorm_momentum"]
    assert torch_flavour.BATCHNORM_EPSILON == defaults["batchnorm_eps"]
    assert defaults["gelu_approximate"] == "none" and defaults["cross_entropy_reduction"] == "mean"
    assert defaults["elu_alpha"] == 1.0


@pytest.mark.parametrize("key", tuple(META["dataloader"]))
def test_drop_last_batches_as_dataloader(key):
    """epoch_batches yields as many batches as DataLoader, the same last size, each example at most once."""
    n, b, drop_last = key.split(",")
    n, b, drop_last = int(n), int(b), drop_last == "True"
    expected = META["dataloader"][key]
    config = RunConfig(flavour="pytorch", init="pytorch", optimizer="sgd", batch_size=b, drop_last=drop_last)
    idx, mask = epoch_batches(config, jax.random.key_data(jax.random.key(0)), n)
    sizes = np.asarray(mask).sum(axis=1).astype(int)
    assert len(sizes) == expected["batches"]
    assert (sizes[-1] if len(sizes) else 0) == expected["last"]
    assert sorted(set(sizes.tolist())) == expected["sizes"]
    real = np.asarray(idx)[np.asarray(mask) > 0]
    assert len(set(real.tolist())) == len(real) == expected["distinct"]


# --- initialisers -----------------------------------------------------------------------------------------

TORCH_INITIALISERS = {  # torch's draw -> hpstudy's scheme of the same distribution
    "linear_weight": "pytorch",
    "xavier_uniform": "glorot_uniform",
    "xavier_normal": "glorot_normal",
    "kaiming_uniform": "he_uniform",
    "kaiming_normal": "he_normal",
    "orthogonal": "orthogonal",
}


def hpstudy_draws(scheme: str, part: int = 0) -> np.ndarray:
    """Many draws of hpstudy's kernel (part 0) or bias (part 1) initialiser for torch's stored layer shape."""
    fan_in, fan_out = META["init"]["fan_in"], META["init"]["fan_out"]
    init = hmodel.initializers(scheme, fan_in, fan_out, "relu")[part]
    shape = (fan_in, fan_out) if part == 0 else (fan_out,)
    return np.concatenate([np.asarray(init(jax.random.key(s), shape, jnp.float32)).ravel() for s in range(8)])


@pytest.mark.parametrize("draw", tuple(TORCH_INITIALISERS))
def test_pytorch_initialisers_draw_the_same_distribution(draw):
    theirs = arrays()[f"init/{draw}"].astype(np.float64)
    ours = hpstudy_draws(TORCH_INITIALISERS[draw]).astype(np.float64)
    assert stats.ks_2samp(ours, theirs).pvalue > 1e-3
    assert stats.ks_2samp(ours * 1.3, theirs).pvalue < 1e-6  # a wrong scale is seen
    assert abs(ours.std() / theirs.std() - 1) < 0.08


def test_linear_default_bounds():
    """nn.Linear: weights and biases inside +-1/sqrt(fan_in), spread over it (uniform)."""
    bound = 1 / np.sqrt(META["init"]["fan_in"])
    for part, stored in ((0, "init/linear_weight"), (1, "init/linear_bias")):
        theirs, ours = arrays()[stored], hpstudy_draws("pytorch", part)
        assert np.abs(theirs).max() <= bound and np.abs(ours).max() <= bound
        assert np.abs(theirs).max() > 0.9 * bound and np.abs(ours).max() > 0.98 * bound
        assert stats.ks_2samp(ours, theirs).pvalue > 1e-3
