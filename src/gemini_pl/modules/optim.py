"""The optimiser every module uses: Adam with a constant learning rate (docs/METHOD.md §4).

Fused where the parameters allow it (CPU and CUDA floating-point tensors): one kernel per step
instead of one per parameter, the step counters stay on the device (the unfused CPU-counter
variant reads them on the host), and the kernel accepts a device-side ``found_inf`` flag, which
is how :meth:`GeminiModule.guarded_step` skips a non-finite step without a host synchronisation.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["make_adam"]


def make_adam(params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """``torch.optim.Adam(params, lr)``, fused when every parameter is a CPU/CUDA float tensor."""
    params = [p for p in params if p.requires_grad]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)
