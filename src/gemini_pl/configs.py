"""Where ``--config experiments/...`` is found: the working directory first, then the experiment
configs that ship with the package.

The repository's ``experiments/`` folder is installed as package data, ``gemini_pl/experiments``
(setup.py), so ``gemini-pl fit --config experiments/demo_pretrain.yaml`` works after a plain
``pip install .`` from any working directory. A path that exists is used as given; a relative path
that does not is looked up, without its leading ``experiments/``, in the installed copy and then in
the source checkout the package is imported from (an editable install).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["experiments_dirs", "resolve_config"]


def experiments_dirs() -> list[Path]:
    """The folders holding the shipped experiment configs, in lookup order (existing ones only)."""
    here = Path(__file__).resolve().parent
    candidates = [here / "experiments", here.parents[1] / "experiments"]
    return [p for p in candidates if p.is_dir()]


def resolve_config(path: str | os.PathLike) -> str:
    """``path`` if it exists (or is absolute), else the shipped config of that name (see module
    doc), else ``path`` unchanged (the parser then reports it)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return str(path)
    parts = p.parts
    rel = Path(*parts[1:]) if parts and parts[0] == "experiments" and len(parts) > 1 else p
    for base in experiments_dirs():
        found = base / rel
        if found.is_file():
            return str(found)
    return str(path)
