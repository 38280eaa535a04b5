"""Study files: every shipped study loads; bad files fail with a message naming file, key, value and
expectation (exit code 2, nothing written); random search trial i depends only on (sampler seed, i)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hpstudy import cli
from hpstudy.errors import StudyError
from hpstudy.study import FLAVOUR_DEFAULTS, METRICS, load_study, sample_trial

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "studies").glob("*.toml"))

VALID = """
[study]
name = "valid"
validation = "test"
seeds = 2

[model]
flavour = "keras"
hidden = [16, 16]
activation = "relu"
dropout = 0.1

[training]
optimizer = "adam_keras"
learning_rate = 0.001
batch_size = 32
epochs = 2

[training.early_stopping]
monitor = "val_loss"
patience = 0

[design]
kind = "grid"

[design.factors]
learning_rate = [0.001, 0.01]
batch_size = [32, 64]

[[assumptions]]
key = "training.early_stopping"
value = "Keras defaults"
why = "not stated"

[[published]]
where = { learning_rate = 0.001, batch_size = 32 }
test_accuracy = 0.97
source = "table"
"""

RANDOM = """
[study]
name = "search"
validation = "holdout:10000"

[model]
flavour = "keras"

[training]
epochs = 1

[design]
kind = "random"
trials = {trials}
sampler_seed = {seed}

[design.space]
hidden_layers = {{ type = "int", low = 2, high = 5 }}
units = {{ type = "int", low = 32, high = 512, step = 32 }}
learning_rate = {{ type = "float", low = 1e-4, high = 1e-2, log = true }}
batch_size = {{ type = "choice", values = [32, 64, 128] }}
dropout = {{ type = "float", low = 0.0, high = 0.5 }}
"""


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# --- shipped studies ------------------------------------------------------------------------------------


def test_every_study_is_shipped():
    names = {p.stem for p in SHIPPED}
    assert {
        "naragundkar2024_grid",
        "naragundkar2024_grid_holdout",
        "fabrizio2021_lr",
        "fabrizio2021_batch",
        "vallepalli2024_search",
    } <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_study_loads_with_assumptions_and_published_values(path):
    study = load_study(path)
    assert study.name == path.stem
    assert study.trials and len({t.trial_id for t in study.trials}) == len(study.trials)
    assert study.assumptions, "every shipped study writes down what its paper leaves unstated"
    assert study.published, "every shipped study records its paper's numbers"
    for p in study.published:
        assert any(k in METRICS for k in p)
        if study.design_kind != "random":
            assert study.trials_matching(p["where"]), p
    for t in study.trials:
        assert t.config.flavour in FLAVOUR_DEFAULTS
        assert t.config.dropout == 0.0 or t.config.flavour == "keras"


def test_grid_study_is_the_paper_grid():
    study = load_study(ROOT / "studies" / "naragundkar2024_grid.toml")
    assert len(study.trials) == 8 and len(study.published) == 8
    for t in study.trials:
        c = t.config
        assert (c.hidden, c.activation, c.optimizer, c.epochs, c.validation) == (
            (128, 128),
            "relu",
            "adam_keras",
            5,
            "test",
        )
        assert c.early_stopping.monitor == "val_loss" and c.early_stopping.patience == 0
        assert not c.early_stopping.restore_best_weights
        (row,) = study.published_for(t)
        for column in ("test_accuracy", "test_loss", "final_val_accuracy", "final_val_loss", "seconds"):
            assert column in row
    holdout = load_study(ROOT / "studies" / "naragundkar2024_grid_holdout.toml")
    assert holdout.validation == "holdout:10000"
    assert [t.values for t in holdout.trials] == [t.values for t in study.trials]


@pytest.mark.parametrize("name, factor", [("fabrizio2021_lr", "learning_rate"), ("fabrizio2021_batch", "batch_size")])
def test_fabrizio_studies_hold_the_three_flavours_and_the_quoted_maxima(name, factor):
    study = load_study(ROOT / "studies" / f"{name}.toml")
    assert len(study.trials) == 3 * 3 * 8
    assert study.objective == "best_val_accuracy"
    for t in study.trials:
        c = t.config
        assert c.hidden == (30,) and c.epochs == 30 and c.validation == "test"
        assert (c.batch_size == 10) if factor == "learning_rate" else (c.learning_rate == 0.1)
        expected = {
            "keras": ("keras", "softmax_cross_entropy", "sgd", 0.0, 0.0),
            "sklearn": ("sklearn", "softmax_cross_entropy", "sgd_nesterov", 0.9, 1e-4),
            "nielsen": ("nielsen", "sigmoid_quadratic", "sgd", 0.0, 0.0),
        }[c.flavour]
        assert (c.init, c.loss, c.optimizer, c.momentum, c.l2) == expected
        assert (c.early_stopping is not None) == (c.flavour == "sklearn")
    assert len(study.published) == (8 if factor == "learning_rate" else 9)  # 16 maxima, one tied at two sizes
    for p in study.published:
        assert p["best_over"] == [factor]
        assert len(study.trials_matching(p["where"])) == 1


def test_random_search_study():
    study = load_study(ROOT / "studies" / "vallepalli2024_search.toml")
    assert study.design_kind == "random" and study.objective == "best_val_accuracy"
    assert study.validation.startswith("holdout:")
    for t in study.trials:
        assert 2 <= len(t.config.hidden) <= 5
        assert all(32 <= w <= 512 and w % 32 == 0 for w in t.config.hidden)
        assert 1e-4 <= t.config.learning_rate <= 1e-2
        assert t.config.batch_size in (32, 64, 128)
    (published,) = study.published
    assert published["where"]["hidden"] == (416, 288) and published["best_val_accuracy"] == 0.982


def test_published_for_matches_float_tolerantly(tmp_path):
    study = load_study(
        write(tmp_path, edit(VALID, "where = { learning_rate = 0.001,", "where = { learning_rate = 0.0010000001,"))
    )
    matched = [t.trial_id for t in study.trials if study.published_for(t)]
    assert matched == ["batch_size=32,learning_rate=0.001"]


# --- validation errors ----------------------------------------------------------------------------------

BAD = [
    # (id, old, new, key path, value text, expectation text)
    (
        "unknown-key",
        'activation = "relu"',
        'activaton = "relu"',
        "model.activaton",
        "'relu'",
        "Did you mean 'activation'",
    ),
    (
        "bad-seeding",
        "seeds = 2\n",
        'seeds = 2\nseeding = "shared"\n',
        "study.seeding",
        "'shared'",
        "'independent', 'common'",
    ),
    (
        "bad-smallest-effect",
        "seeds = 2\n",
        "seeds = 2\nsmallest_effect = 0\n",
        "study.smallest_effect",
        "0",
        "a number > 0",
    ),
    (
        "key-in-wrong-table",
        "epochs = 2\n",
        "epochs = 2\nhidden = [8]\n",
        "training.hidden",
        "[8]",
        "belongs in [model]",
    ),
    ("unknown-top-table", "[design]\n", "[desing]\nx = 1\n\n[design]\n", "desing", "{'x': 1}", "Did you mean 'design'"),
    (
        "unknown-factor",
        "batch_size = [32, 64]",
        "batchsize = [32, 64]",
        "design.factors.batchsize",
        "[32, 64]",
        "Did you mean 'batch_size'",
    ),
    ("wrong-type-epochs", "epochs = 2", 'epochs = "2"', "training.epochs", "'2'", "integer"),
    (
        "wrong-type-lr",
        "learning_rate = 0.001\n",
        'learning_rate = "fast"\n',
        "training.learning_rate",
        "'fast'",
        "number > 0",
    ),
    ("bool-is-not-a-number", "epochs = 2", "epochs = true", "training.epochs", "True", "integer"),
    (
        "wrong-type-batch",
        "batch_size = 32\n",
        "batch_size = 32.0\n",
        "training.batch_size",
        "32.0",
        "integer batch size",
    ),
    ("empty-grid", "batch_size = [32, 64]", "batch_size = []", "design.factors.batch_size", "[]", "empty grid"),
    (
        "repeated-level",
        "batch_size = [32, 64]",
        "batch_size = [32, 32]",
        "design.factors.batch_size[1]",
        "32",
        "distinct",
    ),
    (
        "lr-zero",
        "learning_rate = [0.001, 0.01]",
        "learning_rate = [0.001, 0.0]",
        "design.factors.learning_rate[1]",
        "0.0",
        "learning rate > 0",
    ),
    (
        "lr-negative",
        "learning_rate = 0.001\n",
        "learning_rate = -0.1\n",
        "training.learning_rate",
        "-0.1",
        "learning rate > 0",
    ),
    ("batch-zero", "batch_size = [32, 64]", "batch_size = [0, 64]", "design.factors.batch_size[0]", "0", "[1, 60000]"),
    (
        "batch-too-large",
        "batch_size = [32, 64]",
        "batch_size = [32, 60001]",
        "design.factors.batch_size[1]",
        "60001",
        "training set has 60000",
    ),
    (
        "batch-larger-than-holdout-train",
        'validation = "test"',
        'validation = "holdout:20000"',
        "design.factors.batch_size",
        "",
        "40000",
    ),
    ("dropout-one", "dropout = 0.1", "dropout = 1.0", "model.dropout", "1.0", "[0, 1)"),
    ("dropout-negative", "dropout = 0.1", "dropout = -0.1", "model.dropout", "-0.1", "[0, 1)"),
    ("units-zero", "hidden = [16, 16]", "hidden = [16, 0]", "model.hidden", "[16, 0]", "units >= 1"),
    ("layers-zero", "hidden = [16, 16]", "hidden = []", "model.hidden", "[]", "layers >= 1"),
    (
        "unknown-flavour",
        'flavour = "keras"',
        'flavour = "caffe"',
        "model.flavour",
        "'caffe'",
        "keras, sklearn, nielsen, pytorch",
    ),
    (
        "unknown-optimizer",
        'optimizer = "adam_keras"',
        'optimizer = "rmsprop"',
        "training.optimizer",
        "'rmsprop'",
        "adam_keras",
    ),
    (
        "unknown-activation",
        'activation = "relu"',
        'activation = "swish"',
        "model.activation",
        "'swish'",
        "relu, sigmoid, tanh",
    ),
    (
        "unknown-flavour-table",
        "[design]\n",
        '[flavours.caffe]\noptimizer = "sgd"\n\n[design]\n',
        "flavours.caffe",
        "",
        "keras",
    ),
    (
        "es-monitor",
        'monitor = "val_loss"',
        'monitor = "val_los"',
        "training.early_stopping.monitor",
        "'val_los'",
        "val_loss",
    ),
    ("es-patience", "patience = 0", "patience = -1", "training.early_stopping.patience", "-1", ">= 0"),
    (
        "es-unknown-key",
        "patience = 0",
        "patients = 0",
        "training.early_stopping.patients",
        "0",
        "Did you mean 'patience'",
    ),
    ("design-kind", 'kind = "grid"', 'kind = "bayes"', "design.kind", "'bayes'", "'grid', 'sweeps' or 'random'"),
    (
        "grid-with-trials",
        'kind = "grid"',
        'kind = "grid"\ntrials = 3',
        "design.trials",
        "3",
        "no 'trials' in a 'grid' design",
    ),
    ("validation", 'validation = "test"', 'validation = "holdout:0"', "study.validation", "'holdout:0'", "holdout:N"),
    ("seeds", "seeds = 2", "seeds = 0", "study.seeds", "0", ">= 1"),
    ("name", 'name = "valid"', 'name = "no spaces"', "study.name", "'no spaces'", "letters, digits"),
    (
        "published-unknown-metric",
        "test_accuracy = 0.97",
        "test_acc = 0.97",
        "published[0].test_acc",
        "0.97",
        "Did you mean 'test_accuracy'",
    ),
    (
        "published-no-trial",
        "where = { learning_rate = 0.001,",
        "where = { learning_rate = 0.002,",
        "published[0].where",
        "0.002",
        "matches at least one trial",
    ),
    (
        "published-not-number",
        "test_accuracy = 0.97",
        'test_accuracy = "97%"',
        "published[0].test_accuracy",
        "'97%'",
        "a number",
    ),
    ("assumption-without-why", 'why = "not stated"', "", "assumptions[0].why", "None", "non-empty string"),
]


def assert_clear_study_error(path, key: str, value: str, expected: str) -> None:
    """Loading `path` fails with exit code 2 and a message naming the file, the key, the value and what was expected."""
    with pytest.raises(StudyError) as err:
        load_study(path)
    message = str(err.value)
    assert str(path) in message
    assert key in message
    assert value in message
    assert expected in message
    assert err.value.exit_code == 2


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_study_file_names_file_key_value_and_expectation(tmp_path, case):
    _, old, new, key, value, expected = case
    text = edit(VALID, old, new)
    if case[0] == "batch-larger-than-holdout-train":
        text = edit(text, "batch_size = [32, 64]", "batch_size = [32, 40001]")
    assert_clear_study_error(write(tmp_path, text), key, value, expected)


RANDOM_BAD = [
    (
        "layers-zero",
        'hidden_layers = { type = "int", low = 2,',
        'hidden_layers = { type = "int", low = 0,',
        "design.space.hidden_layers.low",
        "0",
        "layers >= 1",
    ),
    (
        "units-zero",
        'units = { type = "int", low = 32,',
        'units = { type = "int", low = 0,',
        "design.space.units.low",
        "0",
        "units >= 1",
    ),
    (
        "lr-zero",
        "low = 1e-4, high = 1e-2, log = true",
        "low = 0.0, high = 1e-2, log = false",
        "design.space.learning_rate.low",
        "0.0",
        "learning rate > 0",
    ),
    (
        "log-of-zero",
        "low = 1e-4, high = 1e-2, log = true",
        "low = 0.0, high = 1e-2, log = true",
        "design.space.learning_rate.low",
        "0.0",
        "> 0 for log-uniform",
    ),
    (
        "batch-choice",
        "values = [32, 64, 128]",
        "values = [32, 64, 0]",
        "design.space.batch_size.values[2]",
        "0",
        "batch size",
    ),
    (
        "dropout-range",
        'dropout = { type = "float", low = 0.0, high = 0.5 }',
        'dropout = { type = "float", low = 0.0, high = 1.0 }',
        "design.space.dropout.high",
        "1.0",
        "[0, 1)",
    ),
    ("int-step", "step = 32", "step = 0", "design.space.units.step", "0", "step >= 1"),
    (
        "space-type",
        'batch_size = { type = "choice"',
        'batch_size = { type = "choise"',
        "design.space.batch_size.type",
        "'choise'",
        "'int', 'float' or 'choice'",
    ),
    ("space-unknown", "dropout = {", "droput = {", "design.space.droput", "", "Did you mean 'dropout'"),
    (
        "units-without-layers",
        'hidden_layers = { type = "int", low = 2, high = 5 }\n',
        "",
        "design.space",
        "",
        "'hidden_layers' and 'units' together",
    ),
    ("trials-zero", "trials = 4", "trials = 0", "design.trials", "0", ">= 1"),
    ("trials-type", "trials = 4", 'trials = "4"', "design.trials", "'4'", "integer"),
]


@pytest.mark.parametrize("case", RANDOM_BAD, ids=[c[0] for c in RANDOM_BAD])
def test_bad_random_space_names_file_key_value_and_expectation(tmp_path, case):
    _, old, new, key, value, expected = case
    assert_clear_study_error(write(tmp_path, edit(RANDOM.format(trials=4, seed=0), old, new)), key, value, expected)


def test_invalid_toml_and_missing_file(tmp_path):
    path = write(tmp_path, "[study\nname = 'x'")
    with pytest.raises(StudyError, match="not valid TOML"):
        load_study(path)
    with pytest.raises(StudyError, match="cannot read"):
        load_study(tmp_path / "missing.toml")


def test_cli_run_of_a_bad_study_exits_2_and_writes_nothing(tmp_path, capsys):
    path = write(tmp_path, edit(VALID, 'activation = "relu"', 'activation = "swish"'), "bad.toml")
    results = tmp_path / "results"
    assert cli.main(["run", str(path), "--results", str(results), "--no-download"]) == 2
    err = capsys.readouterr().err
    assert "model.activation" in err and "'swish'" in err and str(path) in err
    assert not results.exists()


def test_cli_rejects_zero_workers(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "naragundkar2024_grid", "--workers", "0", "--results", str(tmp_path / "r")])
    assert exit_.value.code == 2
    assert "--workers" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_cli_process_exit_code_is_2_for_a_bad_study(tmp_path):
    path = write(tmp_path, edit(VALID, "batch_size = [32, 64]", "batch_size = [32, -64]"), "bad.toml")
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "hpstudy.cli", "run", str(path), "--results", str(results), "--no-download"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "design.factors.batch_size[1]" in proc.stderr and "-64" in proc.stderr
    assert not results.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


# --- designs --------------------------------------------------------------------------------------------


def test_random_trial_is_a_pure_function_of_sampler_seed_and_index(tmp_path):
    few = load_study(write(tmp_path, RANDOM.format(trials=4, seed=7), "few.toml"))
    many = load_study(write(tmp_path, RANDOM.format(trials=12, seed=7), "many.toml"))
    assert [t.trial_id for t in many.trials[:4]] == [t.trial_id for t in few.trials]
    assert [t.values for t in many.trials[:4]] == [t.values for t in few.trials]
    assert [t.config for t in many.trials[:4]] == [t.config for t in few.trials]
    assert [s.run_id for s in many.runs(range(3))[:12]] == [s.run_id for s in few.runs(range(3))]
    other = load_study(write(tmp_path, RANDOM.format(trials=4, seed=8), "other.toml"))
    assert [t.values for t in other.trials] != [t.values for t in few.trials]
    # sampling trial 9 alone gives what the 12-trial study holds, whatever was sampled before
    space = {
        "hidden_layers": {"type": "int", "low": 2, "high": 5},
        "units": {"type": "int", "low": 32, "high": 512, "step": 32},
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "batch_size": {"type": "choice", "values": [32, 64, 128]},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    }
    alone = sample_trial(space, 7, 9)
    assert alone == {k: (tuple(v) if isinstance(v, tuple) else v) for k, v in many.trials[9].values.items()}
    for t in many.trials:
        assert 2 <= len(t.config.hidden) <= 5 and all(w % 32 == 0 for w in t.config.hidden)
        assert 1e-4 <= t.config.learning_rate <= 1e-2 and 0 <= t.config.dropout <= 0.5


def test_sweeps_hold_the_other_factors_fixed(tmp_path):
    text = edit(
        VALID,
        '[design]\nkind = "grid"\n\n[design.factors]\nlearning_rate = [0.001, 0.01]\nbatch_size = [32, 64]\n',
        """[design]
kind = "sweeps"

[design.factors]
activation = ["relu", "tanh"]

[[design.sweeps]]
learning_rate = [0.001, 0.01, 0.1]

[[design.sweeps]]
batch_size = [32, 64]
""",
    )
    study = load_study(write(tmp_path, text))
    # 2 activations x (3 learning rates at batch 32 + 2 batch sizes at lr 0.001), the crossing point once
    assert len(study.trials) == 2 * (3 + 2 - 1)
    assert len({t.config for t in study.trials}) == len(study.trials)
    lr_sweep = [t for t in study.trials if t.values["batch_size"] == 32]
    batch_sweep = [t for t in study.trials if t.values["learning_rate"] == 0.001]
    assert len(lr_sweep) == 2 * 3 and len(batch_sweep) == 2 * 2
    for t in study.trials:
        assert t.config.batch_size == t.values["batch_size"] and t.config.learning_rate == t.values["learning_rate"]
    by_id = {t.trial_id: t for t in study.trials}
    assert by_id["activation=relu,batch_size=32,learning_rate=0.001"].config.activation == "relu"


def test_flavour_tables_override_flavour_defaults(tmp_path):
    text = edit(
        VALID,
        "[design]\n",
        '[flavours.sklearn]\nl2 = 0.0\n\n[flavours.nielsen]\noptimizer = "sgd_momentum"\nmomentum = 0.5\n\n[design]\n',
    )
    text = edit(text, "batch_size = [32, 64]", 'flavour = ["keras", "sklearn", "nielsen"]')
    text = edit(
        text,
        "where = { learning_rate = 0.001, batch_size = 32 }",
        'where = { learning_rate = 0.001, flavour = "keras" }',
    )
    study = load_study(write(tmp_path, text))
    by = {(t.values["flavour"], t.values["learning_rate"]): t.config for t in study.trials}
    # precedence: flavour defaults < [model]/[training] < [flavours.<name>] < the trial's design values
    assert by["sklearn", 0.01].l2 == 0.0  # flavour table over the flavour default (1e-4)
    assert by["sklearn", 0.01].momentum == 0.9 and by["sklearn", 0.01].init == "sklearn"  # flavour defaults
    assert by["sklearn", 0.01].optimizer == "adam_keras"  # [training] over the flavour default
    assert (
        by["nielsen", 0.01].optimizer == "sgd_momentum" and by["nielsen", 0.01].momentum == 0.5
    )  # flavour table over [training]
    assert by["nielsen", 0.01].learning_rate == 0.01  # design value over everything
    assert by["keras", 0.01].optimizer == "adam_keras" and by["keras", 0.01].init == "keras"
    # the base early-stopping table applies to every flavour (it replaces scikit-learn's own rule)
    assert by["sklearn", 0.01].early_stopping.monitor == "val_loss"


# --- CLI ------------------------------------------------------------------------------------------------


def test_list_shows_every_study(tmp_path, capsys):
    assert cli.main(["list", "--studies", str(ROOT / "studies"), "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for path in SHIPPED:
        study = load_study(path)
        (line,) = [ln for ln in out.splitlines() if ln.split() and ln.split()[0] == study.name]
        fields = line.split()
        assert fields[1] == study.design_kind
        assert int(fields[2]) == len(study.trials)  # trials
        assert int(fields[3]) == len(study.trials)  # runs per seed
        assert int(fields[-1]) == 0  # stored


def test_list_shows_the_valid_studies_and_flags_an_invalid_one(tmp_path, capsys):
    folder = tmp_path / "studies"
    folder.mkdir()
    write(folder, VALID, "valid.toml")
    write(folder, edit(VALID, 'name = "valid"', 'name = "broken"\ncolour = 1'), "broken.toml")
    assert cli.main(["list", "--studies", str(folder), "--results", str(tmp_path / "results")]) == 2
    captured = capsys.readouterr()
    assert "broken" in captured.out and "INVALID" in captured.out
    assert any(ln.split()[:4] == ["valid", "grid", "4", "4"] for ln in captured.out.splitlines() if ln.strip())
    assert "study.colour" in captured.err


@pytest.mark.mnist
def test_grid_study_smoke_run_on_real_mnist(mnist_dir, tmp_path, capsys):
    """The grid study end to end through the CLI, one seed, one epoch (about a minute on two cores)."""
    study_path = ROOT / "studies" / "naragundkar2024_grid.toml"
    args = [
        "run",
        str(study_path),
        "--seeds",
        "1",
        "--max-epochs",
        "1",
        "--data-dir",
        str(mnist_dir),
        "--results",
        str(tmp_path),
        "--no-download",
    ]
    assert cli.main(args) == 0
    from hpstudy import store

    runs = store.read_runs(store.study_dir(tmp_path, "naragundkar2024_grid.max_epochs-1"))
    assert len(runs) == 8 and set(runs["epochs_run"]) == {1}
    assert (runs["test_accuracy"] > 0.85).all()
    assert (runs["best_val_accuracy"] == runs["test_accuracy"]).all()  # validation is the test set here
    assert "8 computed" in capsys.readouterr().out
