"""Checkpoint writing that survives a kill: write to a temporary file, fsync, then rename."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .errors import CheckpointError
from .safe_load import safe_torch_load


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
        except (OSError, RuntimeError) as exc:  # disk full ("unexpected pos"), quota, permissions
            kept = f"the previous {path} is kept" if path.is_file() else f"no checkpoint is at {path}"
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"writing checkpoint {path} failed ({first}; is the disk full?); {kept}") from exc
        finally:
            if tmp.exists():
                tmp.unlink()
        _fsync_dir(path.parent)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        if weights_only is False:  # an explicit request for a trusted file
            return super().load_checkpoint(path, map_location=map_location, weights_only=False)
        return safe_torch_load(path, **({} if map_location is None else {"map_location": map_location}))


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
