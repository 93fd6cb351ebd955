"""Reading checkpoints and weight files without running code from them."""

from __future__ import annotations

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
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # the unpickler fails on a text or truncated file in many ways (IndexError, KeyError, ...)
        if not _looks_like_torch(path):
            raise CheckpointError(f"{path} is not a checkpoint: torch.load cannot read it (an empty, text or other "
                                  "file?); give a .ckpt written by gemini-pl fit or a .pth of weights") from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(
            f"refused to load checkpoint {path}: it cannot be read with weights_only=True (it holds "
            f"objects other than tensors and plain containers — a pickled payload? — or is corrupt): {first}"
        ) from None


def _looks_like_torch(path: str | Path) -> bool:
    """Whether ``path`` starts like a torch file (a zip archive, or a legacy pickle)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return True
    return head.startswith(b"PK") or head[:1] == b"\x80"
