"""hpstudy: re-run published hyperparameter studies over many seeds. `import hpstudy` never imports JAX."""

from hpstudy.api import analysis, load_study, plan, plots, report, results, run, summarize

__all__ = ["analysis", "load_study", "plan", "plots", "report", "results", "run", "summarize"]
