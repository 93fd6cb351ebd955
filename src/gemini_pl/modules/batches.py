"""Batch helpers of the modules: the training-batch key check (with the fix in the message), case
names and spacings of evaluation batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError

__all__ = ["case_names", "case_spacing", "require_batch_keys"]


def require_batch_keys(batch: Mapping[str, Any], keys: Sequence[str], who: str, train_mode: str) -> None:
    """Raise :class:`ConfigError` naming the first missing key and the ``data.train_mode`` to set."""
    for key in keys:
        if key not in batch:
            raise ConfigError(
                f"{who} trains on batches with {', '.join(keys)}; '{key}' is missing (got {sorted(batch)}): "
                f"set data.train_mode: {train_mode}"
            )


def case_names(batch: Mapping[str, Any], n: int, key: str = "name") -> list[str]:
    """Case names of a batch (``batch[key]``), or ``case<i>`` when absent."""
    names = batch.get(key)
    if names is None:
        return [f"case{i}" for i in range(n)]
    if isinstance(names, str):
        return [names]
    return [str(x) for x in names]


def case_spacing(batch: Mapping[str, Any], keys: Sequence[str] = ("spacing",), meta_keys: Sequence[str] = ("meta",)) -> Any:
    """The spacing entry of a batch (``spacing`` or ``meta["spacing"]``), as collated; ``None`` if absent."""
    for k in keys:
        if batch.get(k) is not None:
            return batch[k]
    for k in meta_keys:
        meta = batch.get(k)
        if isinstance(meta, dict) and meta.get("spacing") is not None:
            return meta["spacing"]
    return None
