"""Studies: controlled grids of LoRA training runs that answer one placement question each.

spec.py (TOML definitions, validation) + grid.py (grid expansion, hashes) -> rows.py (typed results
rows, results.json) -> runner.py (run the grid, resume) ->
analysis.py + stats.py (aggregation, Pareto frontiers, tests, prediction check) ->
guidelines.py (sentences backed by numbers) -> report.py (the tables and plots of a study report,
rendered to Markdown and HTML by `intrinsic.report`).
"""

from .grid import Cell, GridBlock
from .spec import StudySpec, load_spec, packaged_studies, parse_spec, resolve_study

__all__ = ["Cell", "GridBlock", "StudySpec", "load_spec", "packaged_studies", "parse_spec", "resolve_study"]
