"""GeminiNet: backbone N + deformer D + head H, and loading of the published checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..safe_load import safe_torch_load
from .backbone import DEFAULT_WIDTHS, UNetBackbone
from .deformer import DEFAULT_DEFORMER_WIDTHS, Deformer
from .head import make_head

#: Published key prefix → our key prefix (docs/METHOD.md §1, "Official checkpoints").
OFFICIAL_PREFIXES = (
    ("unet.", "backbone."),
    ("deformer.0.", "deformer.body."),
    ("deformer.1.", "deformer.flow."),
    ("res_conv.", "head."),
)


def official_to_ours(key: str) -> str | None:
    """Map one key of a published GEMINI ``state_dict`` to ours (``None`` when it has no counterpart)."""
    for theirs, ours in OFFICIAL_PREFIXES:
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return None


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weight file with ``weights_only=True``; a pickled payload is refused, never executed.

    Accepts a plain ``state_dict``, a Lightning checkpoint (``state_dict`` entry) or a dict with a
    ``model`` entry; strips a ``module.`` (DataParallel) prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file {path} does not exist")
    obj = safe_torch_load(path)
    for entry in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(entry), dict):
            obj = obj[entry]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state_dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


class GeminiNet(nn.Module):
    """Backbone, deformer and head of GEMINI, for 2D or 3D images.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (1 for CT, MR and X-ray).
        out_channels: head outputs K (1 for MIP restoration, number of classes for segmentation).
        widths: backbone widths (5 encoder + 4 decoder levels); default docs/METHOD.md §1.
        deformer_widths: deformer widths (5 single-conv blocks).
        flow_init: initialisation of the deformer's flow conv, ``"small"`` (near zero, default) or
            ``"published"`` (Kaiming normal like every other conv); see :class:`Deformer`.

    Shapes: images (N, in_channels, *S); features (N, widths[-1], *S); flows (N, ndim, *S).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        deformer_widths: Sequence[int] = DEFAULT_DEFORMER_WIDTHS,
        flow_init: str = "small",
    ):
        super().__init__()
        self.spatial_dims = spatial_dims
        self.backbone = UNetBackbone(spatial_dims, in_channels, widths)
        c = self.backbone.out_channels
        self.deformer = Deformer(spatial_dims, c, deformer_widths, flow_init=flow_init)
        self.head = make_head(spatial_dims, c, out_channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Dense features f = N(x): (N, C_in, *S) → (N, C, *S)."""
        return self.backbone(x)

    def flow(self, f_moving: torch.Tensor, f_fixed: torch.Tensor) -> torch.Tensor:
        """φ = D([f_moving, f_fixed]): the field that warps the moving image onto the fixed one."""
        return self.deformer(torch.cat([f_moving, f_fixed], dim=1))

    def flows_both_ways(self, f_a: torch.Tensor, f_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(φ_AB, φ_BA) with one deformer call on the two orders stacked along the batch."""
        both = self.deformer(torch.cat([torch.cat([f_a, f_b], 1), torch.cat([f_b, f_a], 1)], 0))
        return both.chunk(2, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Head logits H(N(x)): (N, C_in, *S) → (N, K, *S)."""
        return self.head(self.backbone(x))

    def load_official(self, path: str | Path, include_head: bool = True) -> dict[str, list[str]]:
        """Load a published GEMINI checkpoint (e.g. ``GEMINI_SS_MIP_3d_epoch_1000.pth``).

        The file is read with ``weights_only=True``. Every key must map onto a parameter of the
        same shape; otherwise nothing is loaded and a :class:`CheckpointError` lists the offending
        keys and shapes. With ``include_head=False`` the ``res_conv.*`` keys are ignored (for a
        head with another number of outputs). Returns ``{"loaded": [...], "ignored": [...]}``.
        """
        theirs = load_state_dict_file(path)
        ours = self.state_dict()
        mapped: dict[str, torch.Tensor] = {}
        ignored, unexpected, mismatched = [], [], []
        for key, value in theirs.items():
            target = official_to_ours(key)
            if target is not None and target.startswith("head.") and not include_head:
                ignored.append(key)
            elif target is None or target not in ours:
                unexpected.append(f"{key} {tuple(value.shape)}")
            elif ours[target].shape != value.shape:
                mismatched.append(f"{key} {tuple(value.shape)} vs ours {target} {tuple(ours[target].shape)}")
            else:
                mapped[target] = value
        missing = [
            f"{k} {tuple(v.shape)}" for k, v in ours.items()
            if k not in mapped and (include_head or not k.startswith("head."))
        ]
        if unexpected or mismatched or missing:
            lines = [f"{path} does not match this GeminiNet (spatial_dims={self.spatial_dims}, widths={self.backbone.widths}):"]
            for title, items in (("shape mismatch", mismatched), ("unexpected keys", unexpected), ("missing keys", missing)):
                if items:
                    lines.append(f"  {title} ({len(items)}): " + "; ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
            raise CheckpointError("\n".join(lines))
        self.load_state_dict(mapped, strict=False)
        return {"loaded": sorted(mapped), "ignored": ignored}

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """Our weights under the published key names (the inverse of :meth:`load_official`)."""
        out = {}
        for key, value in self.state_dict().items():
            for theirs, ours in OFFICIAL_PREFIXES:
                if key.startswith(ours):
                    out[theirs + key[len(ours):]] = value
                    break
        return out
