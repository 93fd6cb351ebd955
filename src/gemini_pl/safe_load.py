"""Reading checkpoints and weight files without running code from them."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError


def safe_torch_load(path: str | Path, **kwargs: Any) -> Any:
    """``torch.load(path, weights_only=True)``; a file that needs anything else is refused.

    Tensors, plain containers and numbers load; a pickled payload (any other global) raises
    :class:`~gemini_pl.errors.CheckpointError` naming the file, and nothing in it runs. A
    truncated or corrupt file raises the same error. Keyword arguments go to ``torch.load``
    (``map_location`` defaults to ``"cpu"``).
    """
    kwargs.setdefault("map_location", "cpu")
    try:
        return torch.load(path, weights_only=True, **kwargs)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(
            f"refused to load checkpoint {path}: it cannot be read with weights_only=True (it holds "
            f"objects other than tensors and plain containers — a pickled payload? — or is corrupt): {first}"
        ) from None
