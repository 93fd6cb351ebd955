"""Reproduce the paper's tables as one matrix of runs: ``python -m gemini_pl.reproduce`` (see :mod:`.runner`)."""

from .matrix import Cell, Matrix, load_matrix
from .paper import TABLE2, TABLE4, TABLE5, TASKS
from .runner import run_matrix
from .table import render_csv, render_markdown

__all__ = ["Cell", "Matrix", "TABLE2", "TABLE4", "TABLE5", "TASKS", "load_matrix", "render_csv", "render_markdown", "run_matrix"]
