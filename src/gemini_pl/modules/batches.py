"""Checks that a training batch has the keys a module trains on, with the fix in the message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError

__all__ = ["require_batch_keys"]


def require_batch_keys(batch: Mapping[str, Any], keys: Sequence[str], who: str, train_mode: str) -> None:
    """Raise :class:`ConfigError` naming the first missing key and the ``data.train_mode`` to set."""
    for key in keys:
        if key not in batch:
            raise ConfigError(
                f"{who} trains on batches with {', '.join(keys)}; '{key}' is missing (got {sorted(batch)}): "
                f"set data.train_mode: {train_mode}"
            )
