"""The guarded optimiser step of every gemini-pl module: non-finite steps are skipped, counted and reported.

No host synchronisation inside a step: the finiteness flag stays on the device (summed over DDP
ranks, so every rank takes the same decision) and reaches the fused Adam kernel as its
``found_inf`` argument, which leaves the weights, moments and step counts untouched when it is
set — the mechanism AMP's GradScaler uses. The skip counters live on the device too and are read
on the host only at the logging cadence (``trainer.log_every_n_steps``) and at epoch end, where a
run of ``max_consecutive_nonfinite`` skips of one loss stops training with
:class:`~gemini_pl.errors.NonFiniteLossError` after writing the last good weights. (An optimiser
that cannot take ``found_inf``, e.g. one restored from a checkpoint written with a non-fused Adam,
falls back to one host read per step.)

Lightning's ``global_step`` counts optimiser steps, skipped ones included (as with AMP's
GradScaler).
"""

from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from ..errors import NonFiniteLossError

log = logging.getLogger(__name__)

__all__ = ["NonFiniteGuard", "nonfinite_grads"]


def nonfinite_grads(grads: list[torch.Tensor]) -> torch.Tensor:
    """1.0 when any gradient holds a NaN/inf, else 0.0, as a float32 device tensor (no host read).

    One multi-tensor kernel: the check AMP's GradScaler runs before unscaling (with a scale of
    exactly 1, so the gradients keep their values bit for bit).
    """
    if not grads:
        return torch.zeros(())
    found = torch.zeros((), device=grads[0].device)
    ones = torch.ones((), device=grads[0].device)
    by_device: dict[tuple, list[torch.Tensor]] = {}
    for g in grads:  # the kernel wants one device and dtype per call
        by_device.setdefault((g.device, g.dtype), []).append(g)
    for (device, _), group in by_device.items():
        f = found if device == found.device else torch.zeros((), device=device)
        torch._amp_foreach_non_finite_check_and_unscale_(group, f, ones.to(device))
        if f is not found:
            found = torch.maximum(found, f.to(found.device))
    return found


class NonFiniteGuard:
    """Skip counters and the guarded step of one LightningModule (manual optimisation).

    Args:
        max_consecutive: skipped steps of one loss in a row that stop the run.
    """

    def __init__(self, max_consecutive: int = 10) -> None:
        self.max_consecutive = max_consecutive
        self.total = torch.zeros(())
        self.consecutive: dict[str, torch.Tensor] = {}
        self.reported = 0

    # ------------------------------------------------------------------ state
    def total_steps(self) -> int:
        return int(self.total)

    def state_dict(self) -> dict[str, Any]:
        return {
            "nonfinite_steps": self.total_steps(),
            "consecutive_nonfinite": {k: int(v) for k, v in self.consecutive.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total = torch.tensor(float(state.get("nonfinite_steps", 0)))
        self.reported = int(state.get("nonfinite_steps", 0))
        self.consecutive = {k: torch.tensor(float(v)) for k, v in state.get("consecutive_nonfinite", {}).items()}

    # ------------------------------------------------------------------ step
    def step(self, module: L.LightningModule, loss: torch.Tensor, name: str, optimizer: Any = None,
             after_backward: Callable[[], None] | None = None) -> torch.Tensor:
        """Backward + optimiser step unless ``loss`` or the gradients are not finite.

        ``optimizer``: the (Lightning-wrapped) optimiser to step (``None``: the module's only one);
        ``after_backward``: called between the backward pass and the checks (it may read or scale
        the gradients). Returns the skip flag as a device tensor (1.0 skipped, 0.0 stepped) without
        reading it. Under 16-mixed the GradScaler skips non-finite gradients itself; only the loss
        is checked.
        """
        trainer = module.trainer
        opt = module.optimizers() if optimizer is None else optimizer
        module.manual_backward(loss)
        if after_backward is not None:
            after_backward()
        bad = (~torch.isfinite(loss.detach())).float()
        scaler = getattr(trainer.precision_plugin, "scaler", None) is not None
        if not scaler:
            bad = torch.maximum(bad, nonfinite_grads([p.grad for p in module.parameters() if p.grad is not None]))
        bad = trainer.strategy.reduce(bad, reduce_op="sum").clamp(max=1.0)
        inner = opt.optimizer
        if scaler:
            opt.step()
        elif all(group.get("fused") for group in inner.param_groups):
            inner.found_inf = bad  # read by the fused kernel: no update where set
            try:
                opt.step()
            finally:
                del inner.found_inf
        elif float(bad) == 0:  # an optimiser without found_inf support: one host read
            opt.step()
        opt.zero_grad(set_to_none=True)
        self.total = self.total.to(bad.device) + bad
        run = self.consecutive.get(name, torch.zeros((), device=bad.device)).to(bad.device)
        self.consecutive[name] = (run + 1.0) * bad  # +1 when skipped, reset to 0 otherwise
        return bad

    # ------------------------------------------------------------------ host checks
    def check(self, module: L.LightningModule) -> None:
        """Read the counters on the host (one synchronisation): warn about new skips and stop with
        :class:`NonFiniteLossError` after ``max_consecutive`` skips of one loss in a row."""
        if not self.consecutive:
            return
        names = list(self.consecutive)
        values = torch.stack([self.total.float()] + [self.consecutive[n].float() for n in names]).tolist()
        total, runs = int(values[0]), dict(zip(names, (int(v) for v in values[1:])))
        if total > self.reported:
            log.warning(
                "%d optimiser step(s) skipped for non-finite losses or gradients by global step %d (epoch %d); "
                "%d skipped so far; current runs of skips per loss: %s",
                total - self.reported, module.global_step, module.current_epoch, total, runs,
            )
            self.reported = total
        for name, run in runs.items():
            if run >= self.max_consecutive:
                path = _save_last_good_state(module.trainer)
                raise NonFiniteLossError(
                    f"{run} consecutive non-finite {name} losses, last at global step {module.global_step} "
                    f"(epoch {module.current_epoch}); the last good weights are in {path}. Lower model.lr, check "
                    f"the input data for NaN/inf, or raise model.max_consecutive_nonfinite"
                )


def _save_last_good_state(trainer: L.Trainer) -> Path:
    """Checkpoint the weights as they are (every skipped step left them untouched)."""
    folder = getattr(trainer.checkpoint_callback, "dirpath", None) or Path(trainer.default_root_dir) / "checkpoints"
    path = Path(folder) / "nonfinite-stop.ckpt"
    trainer.save_checkpoint(path)
    return path
