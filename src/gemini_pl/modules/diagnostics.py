"""What the two losses of a GEMINI iteration do to the backbone, and a watch for collapsed features.

:class:`LossInfluence` measures, on the iterations the loggers write, how much of the backbone's
update comes from each step of the published two-step schedule (docs/METHOD.md §4, "Influence of
the two steps"), and optionally rebalances the second (head) loss:

* ``grad_share`` = ‖g₁‖ / (‖g₁‖ + ‖g₂‖), the norms of the backbone gradients of the first (GEMINI)
  and the second (head) loss of the iteration, the latter as stepped (after the balance);
* ``update_cosine``: the cosine between the backbone update of the GEMINI step and that of the
  preceding head step (the previous iteration's). The GEMINI update is the parameter change the
  step made; the preceding head update is rebuilt from the head optimiser's Adam moments before
  the GEMINI step, ``−lr · m̂ / (√v̂ + ε)`` — exactly the update that step applied (the backbone
  takes a gradient in every head step). Near 1 means the GEMINI step moves the backbone where the
  head's moments point (a shared Adam dominated by the head's gradients).
* balance (``head_balance`` r, beyond the paper): the head loss's gradients are multiplied by
  ``r · ‖g₁‖ / ‖g₂‖`` before its step, so the head's backbone gradient norm is r times the GEMINI
  one (``grad_share`` then reads 1 / (1 + r)); the factor is logged as ``balance_scale``.

Everything stays on the device; the norms cost one multi-tensor reduction per step, and only when
measured or balanced.

:class:`CollapseWatch` reads ``train/gemini/feature_similarity`` at each logging point and warns
once per run when it stays above a threshold for a number of logging points in a row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

__all__ = ["CollapseWatch", "LossInfluence", "adam_update", "flat_cosine", "grad_norm"]

log = logging.getLogger(__name__)


def grad_norm(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """L2 norm of the gradients of ``params`` taken together (a device scalar; 0 without any)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([g.float().norm() for g in grads]))


def flat_cosine(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Cosine between two lists of tensors, each taken as one flat vector (0 when one is zero)."""
    dot = sum((x.float() * y.float()).sum() for x, y in zip(a, b))
    na = torch.linalg.vector_norm(torch.stack([x.float().norm() for x in a]))
    nb = torch.linalg.vector_norm(torch.stack([y.float().norm() for y in b]))
    return dot / (na * nb).clamp_min(1e-30)


def adam_update(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> list[torch.Tensor] | None:
    """The update ``−lr · m̂ / (√v̂ + ε)`` that ``optimizer`` (a plain Adam) applied to ``params`` at
    its last step, rebuilt from its state; ``None`` before its first step or for other optimisers."""
    groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out = []
    for p in params:
        group, state = groups.get(id(p)), optimizer.state.get(p, {})
        if group is None or "exp_avg" not in state or group.get("amsgrad") or group.get("weight_decay", 0) \
                or group.get("maximize"):
            return None
        beta1, beta2 = group["betas"]
        step = torch.as_tensor(state["step"], dtype=torch.float32, device=p.device)
        denom = (state["exp_avg_sq"].float() / (1 - beta2 ** step)).sqrt() + group["eps"]
        out.append(-group["lr"] * state["exp_avg"].float() / (1 - beta1 ** step) / denom)
    return out


class LossInfluence:
    """Per-iteration bookkeeping of the two steps (see module doc).

    Args:
        first, second: the names of the two losses of an iteration, in step order.
        balance: ``head_balance`` r (``None``: off).
    """

    def __init__(self, first: str, second: str, balance: float | None = None) -> None:
        self.first, self.second, self.balance = first, second, balance
        self._g1: torch.Tensor | None = None
        self._snapshot: list[torch.Tensor] | None = None
        self._previous_second: list[torch.Tensor] | None = None
        self.logs: dict[str, torch.Tensor] = {}

    def active(self, measure: bool) -> bool:
        return measure or self.balance is not None

    def after_backward(self, name: str, backbone: Sequence[torch.Tensor], params: Sequence[torch.Tensor],
                       second_optimizer: torch.optim.Optimizer, measure: bool) -> None:
        """Called between a step's backward pass and its optimiser step. ``backbone``: the shared
        parameters; ``params``: all parameters (the balance scales all of the head loss's
        gradients); ``second_optimizer``: the optimiser of the second loss."""
        if name == self.first:
            self.logs = {}
            self._g1 = grad_norm(backbone)
            if measure:  # before the GEMINI step changes the (shared) moments and the weights
                self._previous_second = adam_update(second_optimizer, backbone)
                self._snapshot = [p.detach().clone() for p in backbone]
            else:
                self._previous_second = self._snapshot = None
        elif name == self.second:
            g2 = grad_norm(backbone)
            if self.balance is not None and self._g1 is not None:
                scale = self.balance * self._g1.to(g2.device) / g2.clamp_min(1e-30)
                scale = torch.where(torch.isfinite(scale) & (g2 > 0), scale, torch.ones_like(scale))
                grads = [p.grad for p in params if p.grad is not None]
                if grads:
                    torch._foreach_mul_(grads, scale.to(grads[0].device, grads[0].dtype))
                g2 = g2 * scale
                if measure:
                    self.logs[f"train/{self.second}/balance_scale"] = scale.detach()
            if measure and self._g1 is not None:
                g1 = self._g1.to(g2.device)
                self.logs[f"train/{self.first}/grad_share"] = g1 / (g1 + g2).clamp_min(1e-30)
                if self._snapshot is not None and self._previous_second is not None:
                    update = [p.detach() - s for p, s in zip(backbone, self._snapshot)]
                    self.logs[f"train/{self.first}/update_cosine"] = flat_cosine(update, self._previous_second)
            self._g1 = self._snapshot = self._previous_second = None

    def pop_logs(self) -> dict[str, torch.Tensor]:
        logs, self.logs = self.logs, {}
        return logs


class CollapseWatch:
    """Warn once when the feature similarity stays above ``threshold`` for ``patience`` logging
    points in a row (``threshold`` ``None``: off).

    The state (the current run of high values, whether and when it warned) is kept in checkpoints.
    """

    def __init__(self, threshold: float | None = 0.95, patience: int = 5) -> None:
        self.threshold, self.patience = threshold, int(patience)
        self.run = 0
        self.warned_at: int | None = None

    def update(self, value: float, step: int) -> bool:
        """Record one logging point; True when this point triggers the warning."""
        if self.threshold is None or value != value:
            return False
        self.run = self.run + 1 if value > self.threshold else 0
        if self.run >= self.patience and self.warned_at is None:
            self.warned_at = int(step)
            log.warning(
                "feature collapse: train/gemini/feature_similarity has stayed above %.3g for %d logging points in "
                "a row (%.4f at global step %d): the backbone gives nearly the same feature to every voxel",
                self.threshold, self.run, value, step,
            )
            return True
        return False

    def state_dict(self) -> dict[str, int | None]:
        return {"collapse_run": self.run, "collapse_warned_at": self.warned_at}

    def load_state_dict(self, state: dict) -> None:
        self.run = int(state.get("collapse_run", 0))
        warned = state.get("collapse_warned_at")
        self.warned_at = None if warned is None else int(warned)
