"""Checkpoint writing that survives a kill: write to a temporary file, fsync, then rename."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .errors import CheckpointError


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`TorchCheckpointIO` whose saves are atomic on a local file system.

    The checkpoint is written to ``<name>.tmp-<pid>`` in the same folder, flushed to disk and
    renamed over the target with :func:`os.replace`, so a process killed mid-write leaves the
    previous checkpoint intact and loadable. Loading goes through ``weights_only=True`` unless the
    caller asks otherwise.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f"{path.name}.tmp-*"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        _fsync_dir(path.parent)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"weights_only": True if weights_only is None else weights_only}
        if map_location is not None:
            kwargs["map_location"] = map_location
        try:
            return super().load_checkpoint(path, **kwargs)
        except pickle.UnpicklingError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(
                f"refused to load checkpoint {path}: it holds objects other than tensors and plain "
                f"containers (a pickled payload?), and is read with weights_only=True: {first}"
            ) from None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
