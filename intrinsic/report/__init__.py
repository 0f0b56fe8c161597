"""Rendering of results for people: one document model with Markdown and HTML renderers
(`document.py`), one number/cell formatter (`format.py`), matplotlib plots (`plots.py`) and the
probe's report (`probe.py`). The study's report (`intrinsic.study.report`) is built on the same
pieces. Heavy imports (matplotlib, numpy) stay inside the modules that need them, so the
formatter can be imported by the CLI at `--help` time.
"""
