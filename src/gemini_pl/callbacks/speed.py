"""Opt-in speed settings for any module with a ``net`` (a :class:`~gemini_pl.nets.GeminiNet`).

Add them to a run with ``--trainer.callbacks+=gemini_pl.callbacks.CompileNetwork`` or
``--trainer.callbacks+=gemini_pl.callbacks.ChannelsLast`` (or in a config's
``trainer.callbacks``). Both change how the network runs, never what it computes:

- :class:`CompileNetwork` compiles the backbone, deformer and head in place with
  ``torch.compile`` (``nn.Module.compile``: parameter names and checkpoints are unchanged, so
  compiled and eager runs share checkpoints). Losses, warps and metrics stay eager. The first
  steps pay the compilation (tens of seconds per part on a CPU); a test checks that the losses
  match the eager ones.
- :class:`ChannelsLast` stores the convolution weights channels-last (``channels_last`` in 2D,
  ``channels_last_3d`` in 3D), so the convolutions pick the channels-last kernels (tensor-core
  friendly on GPUs under bf16/fp16). The memory format propagates through the network's
  activations; tensors handed to the losses are used through strided views, so values do not
  change. Measure before keeping it (``benchmarks/modules.py --options eager channels_last``):
  on 2 CPU cores it made 3D GEMINI pre-training at 32³ 16 % faster but 2D pre-training at 128²
  26 % and 3D segmentation 7 % slower (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["ChannelsLast", "CompileNetwork"]

PARTS = ("backbone", "deformer", "head")


def _net(pl_module: L.LightningModule) -> nn.Module:
    net = getattr(pl_module, "net", None)
    if not isinstance(net, nn.Module):
        raise ConfigError(f"{type(pl_module).__name__} has no `net` network; CompileNetwork/ChannelsLast need one")
    return net


class CompileNetwork(L.Callback):
    """``torch.compile`` the network's backbone, deformer and head at set-up.

    Args:
        mode: ``torch.compile`` mode (None, ``"default"``, ``"reduce-overhead"``, ``"max-autotune"``).
        dynamic: passed to ``torch.compile`` (None: let it decide).
        fullgraph: passed to ``torch.compile``.
        backend: ``torch.compile`` backend (``"inductor"``).
    """

    def __init__(self, mode: str | None = None, dynamic: bool | None = None, fullgraph: bool = False, backend: str = "inductor"):
        self.kwargs: dict[str, Any] = dict(mode=mode, dynamic=dynamic, fullgraph=fullgraph, backend=backend)
        self.compiled: list[str] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        net = _net(pl_module)
        for name in PARTS:
            part = getattr(net, name, None)
            if isinstance(part, nn.Module) and name not in self.compiled:
                part.compile(**self.kwargs)
                self.compiled.append(name)


class ChannelsLast(L.Callback):
    """Store the network's convolution weights channels-last at set-up (2D or 3D)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        net = _net(pl_module)
        dims = getattr(net, "spatial_dims", None) or pl_module.hparams.get("spatial_dims")
        fmt = {2: torch.channels_last, 3: torch.channels_last_3d}.get(dims)
        if fmt is None:
            raise ConfigError(f"ChannelsLast needs spatial_dims 2 or 3, got {dims!r}")
        net.to(memory_format=fmt)
