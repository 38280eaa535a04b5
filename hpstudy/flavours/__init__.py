"""Each reference library's exact semantics, one module per library: its defaults, initialisers, losses,
optimizers with their update rules, learning-rate schedules and early stopping, as that library applies
them. tests/test_fidelity*.py train the same steps in the real library (or against golden files made with
it) and compare."""
