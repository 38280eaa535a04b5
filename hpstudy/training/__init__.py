"""The training side: the model (model.py), optimizers and schedules, jitted and vmapped training
(engine.py), portable numerics and core pinning (numerics.py), worker processes (parallel.py), the Dask
backend (distributed.py) and the compilation cache (compilation.py). Library-exact semantics live in
hpstudy/flavours/."""
