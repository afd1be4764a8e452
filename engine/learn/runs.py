"""Transitional: the names the window (and scripts) still import from the run folder's former
single module. A run now lives in `run_folder` (RunDir: its files), `rng` (random state),
`model_card` (provenance) and `run_list` (runs as rows of a list); import from those. This module
goes once allblast_gui and benchmarks no longer import it.
"""
from __future__ import annotations

from .run_folder import RunDir
from .run_list import RunSummary, list_runs, summarize_run

__all__ = ["RunDir", "RunSummary", "list_runs", "summarize_run"]
