"""The report side: statistics, the analysis model, tables, figures, the README writer and report folders.

Modules: stats.py (pure statistics), analysis.py (a study's runs -> the analysis model), tables.py,
figures.py, readme.py (the README, section by section), outputs.py (writing a report folder safely),
synthetic.py (synthetic stored runs for tests and benchmarks), build.py (`write_report`: a report folder
from a study's runs). `hpstudy.report` is the API function (hpstudy/api.py), not a module.
"""
