"""Packaging (metadata and dependencies in setup.cfg): the experiment configs under ``experiments/``
ship inside the package as ``gemini_pl/experiments`` (package data), so that an installed
``gemini-pl`` finds ``--config experiments/...`` from any working directory
(:mod:`gemini_pl.configs`). The derived SynthSeg label maps (``gemini_pl/data/assets``, with their
licence and NOTICE) are package data too."""

from setuptools import find_packages, setup

setup(
    package_dir={"": "src", "gemini_pl.experiments": "experiments"},
    packages=[*find_packages("src"), "gemini_pl.experiments"],
    package_data={"gemini_pl.experiments": ["*.yaml", "*.md", "**/*.yaml", "**/*.md"],
                  "gemini_pl.data": ["assets/*.npz", "assets/*.txt"]},
)
