"""W&B media for the Table II runs: prediction overlays, warped moving images, a deformation grid
and a Jacobian-determinant map — logged with ``WandbLogger.log_image`` at the end of validation.

A no-op without a :class:`~lightning.pytorch.loggers.WandbLogger` (CSV-only runs, tests, phantoms).
Pictures of data under a use agreement stay local (:mod:`.media_policy`): unless ``log_media`` (or
``gemini-pl ... --log_media true``) allows the upload, or the data is generated, they are written
as PNGs under ``<trainer.default_root_dir>/media/`` instead of going to W&B.
The first validation batch is kept; at validation end the module is asked for:

* segmentation cases ``{"image", "label"}`` and a module with ``segment_logits``: the middle slice
  of the image with the ground truth and the prediction as colour overlays;
* registration pairs ``{"image_a", "image_b"}`` and a module with ``register_pair`` (GEMINI,
  Registration): moving, fixed, warped moving, a warped grid and the Jacobian determinant
  (red where det ≤ 0, i.e. folding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from .media_policy import upload_media_allowed
from .wandb_resume import _wandb_loggers

__all__ = ["WandbMedia", "middle_slice", "label_overlay", "grid_image", "jacobian_image"]

_COLOURS = torch.tensor([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                         [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]], dtype=torch.float32) / 255


def middle_slice(x: torch.Tensor) -> torch.Tensor:
    """(C, *S) → (C, H, W): the middle slice along the first spatial axis of a 3D volume."""
    return x[:, x.shape[1] // 2] if x.dim() == 4 else x


def _gray(img: torch.Tensor) -> torch.Tensor:
    img = img[0].float()
    lo, hi = img.min(), img.max()
    img = (img - lo) / (hi - lo + 1e-8)
    return img[None].expand(3, -1, -1)


def label_overlay(image: torch.Tensor, label: torch.Tensor, alpha: float = 0.45) -> torch.Tensor:
    """(1, H, W) image and (1, H, W) class map (or (K, H, W) masks) → (3, H, W) RGB in [0, 1]."""
    rgb = _gray(image)
    lab = label.argmax(0) + 1 if label.shape[0] > 1 else label[0].long()
    if label.shape[0] > 1:
        lab = torch.where(label.amax(0) > 0, lab, torch.zeros_like(lab))
    col = _COLOURS[lab.clamp(0, len(_COLOURS) - 1) % len(_COLOURS)].movedim(-1, 0)
    fg = (lab > 0).float()[None]
    return rgb * (1 - alpha * fg) + alpha * fg * col


def grid_image(flow2d: torch.Tensor, spacing: int = 4) -> torch.Tensor:
    """A regular grid warped by a 2D field (2, H, W) → (3, H, W) black lines on white."""
    from ..spatial import warp

    h, w = flow2d.shape[1:]
    g = torch.zeros(1, 1, h, w)
    g[..., ::spacing, :] = 1
    g[..., :, ::spacing] = 1
    warped = warp(g, flow2d[None].float())[0, 0]
    return (1 - warped)[None].expand(3, -1, -1).clamp(0, 1)


def jacobian_image(det: torch.Tensor) -> torch.Tensor:
    """Jacobian determinant (H, W) → RGB: blue < 1 (compression), white 1, green > 1, red ≤ 0 (folding)."""
    d = det.float()
    rgb = torch.ones(3, *d.shape)
    low = (1 - d).clamp(0, 1)
    high = (d - 1).clamp(0, 1)
    rgb[0] -= low + high
    rgb[1] -= low
    rgb[2] -= high
    rgb[:, d <= 0] = torch.tensor([1.0, 0.0, 0.0])[:, None]
    return rgb.clamp(0, 1)


class WandbMedia(L.Callback):
    """Log media of the first validation batch to W&B (see module doc).

    Args:
        max_items: cases of the batch to draw.
        every_n_epochs: log at every this many validations.
        log_media: upload to W&B (True), keep local (False), or None: as ``--log_media`` says,
            else upload only pictures of generated data (:func:`.media_policy.upload_media_allowed`).
    """

    def __init__(self, max_items: int = 2, every_n_epochs: int = 1, log_media: bool | None = None):
        super().__init__()
        self.max_items = max_items
        self.every_n_epochs = every_n_epochs
        self.log_media = log_media
        #: PNG files written locally (pictures that were not uploaded)
        self.local_files: list[str] = []
        self._batch: dict[str, Any] | None = None
        self._count = 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and dataloader_idx == 0 and _wandb_loggers(trainer) and isinstance(batch, dict):
            self._batch = {k: v[: self.max_items] if torch.is_tensor(v) else v for k, v in batch.items()}

    @torch.no_grad()
    def media(self, pl_module: L.LightningModule, batch: dict[str, Any]) -> dict[str, list[torch.Tensor]]:
        """Key → list of (3, H, W) images (also usable without W&B)."""
        out: dict[str, list[torch.Tensor]] = {}
        if "image" in batch and "label" in batch and hasattr(pl_module, "segment_logits"):
            logits = pl_module.segment_logits(batch["image"])
            pred = pl_module.logits_to_labels(logits) if hasattr(pl_module, "logits_to_labels") else logits.argmax(1, keepdim=True)
            for i in range(batch["image"].shape[0]):
                img = middle_slice(batch["image"][i].cpu())
                out.setdefault("media/ground_truth", []).append(label_overlay(img, middle_slice(batch["label"][i].cpu().float())))
                out.setdefault("media/prediction", []).append(label_overlay(img, middle_slice(pred[i].cpu().float())))
        if "image_a" in batch and "image_b" in batch and hasattr(pl_module, "register_pair"):
            from ..metrics import jacobian_determinant

            reg = pl_module.register_pair(batch)
            flow = reg["flow"].float()
            det = jacobian_determinant(flow)
            for i in range(flow.shape[0]):
                out.setdefault("media/moving", []).append(_gray(middle_slice(batch["image_a"][i].cpu())))
                out.setdefault("media/fixed", []).append(_gray(middle_slice(batch["image_b"][i].cpu())))
                out.setdefault("media/warped_moving", []).append(_gray(middle_slice(reg["warped_image"][i].cpu())))
                f = flow[i].cpu()
                f2 = f[1:, f.shape[1] // 2] if f.shape[0] == 3 else f   # in-plane components of the middle slice
                out.setdefault("media/deformation_grid", []).append(grid_image(f2))
                d = det[i].cpu()
                d = d[0] if d.dim() == flow.dim() - 1 else d
                out.setdefault("media/jacobian_determinant", []).append(jacobian_image(d[d.shape[0] // 2] if d.dim() == 3 else d))
        return out

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = _wandb_loggers(trainer)
        if not loggers or self._batch is None or trainer.sanity_checking:
            return
        self._count += 1
        if (self._count - 1) % self.every_n_epochs:
            return
        batch = {k: v.to(pl_module.device) if torch.is_tensor(v) else v for k, v in self._batch.items()}
        was_training = pl_module.training
        pl_module.eval()
        try:
            media = self.media(pl_module, batch)
        finally:
            pl_module.train(was_training)
        if upload_media_allowed(trainer, self.log_media):
            for key, images in media.items():
                for lg in loggers:
                    lg.log_image(key=key, images=[im.permute(1, 2, 0).numpy() for im in images], step=trainer.global_step)
        elif trainer.is_global_zero:
            self.local_files += save_local(media, Path(trainer.default_root_dir) / "media", trainer.global_step)
        self._batch = None


def save_local(media: dict[str, list[torch.Tensor]], folder: Path, step: int) -> list[str]:
    """Write ``media`` ((3, H, W) images in [0, 1] per key) as ``<folder>/<key>_step<step>_<i>.png``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for key, images in media.items():
        for i, im in enumerate(images):
            path = folder / f"{key.replace('/', '_')}_step{step}_{i}.png"
            arr = (im.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            Image.fromarray(arr).save(path)
            out.append(str(path))
    return out
