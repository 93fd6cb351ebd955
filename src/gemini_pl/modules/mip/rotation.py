"""Rotation prediction (Gidaris et al., ICLR 2018): classify which rotation was applied to an image.

2D: 4 classes, rotation by r·90° in the image plane (r = 0..3). 3D: the 10 classes of Taleb et al.
(NeurIPS 2020, "3D self-supervised methods for medical imaging"): identity, and 90°, 180°, 270°
about each of the three axes. The pooled encoder features (:mod:`.pooling`) go through an MLP
classifier (Linear–BN–ReLU–Linear); the loss is the cross-entropy of the rotation class.

Rotations permute the rotated axes, so images are first centre-cropped to a square (2D) or a cube
(3D) of their shortest side. ``all_rotations: false`` (default) rotates each image by one class
drawn at random — one encoder pass per image, the cost Table IX gives this row (5.99 G per step,
half of BYOL's two views); ``true`` feeds every rotation of every image, as Gidaris et al. do.

Simplified here: the GEMINI U-Net's encoder (bottleneck pooled) instead of a NIN/AlexNet/ResNet
with convolutional classifier blocks; the core's random affine as the only other augmentation.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..core import GeminiModule, Losses
from .pooling import level_channels, pooled_features
from .projector import mlp
from .restoration import single_images

__all__ = ["Rotation", "centre_square", "num_rotations", "rotate"]

#: 3D rotation planes (tensor axes of (N, C, D, H, W)): about D (the H–W plane), about H, about W.
PLANES_3D = ((3, 4), (2, 4), (2, 3))


def num_rotations(spatial_dims: int) -> int:
    """4 in 2D, 10 in 3D."""
    return 4 if spatial_dims == 2 else 10


def rotate(x: torch.Tensor, r: int) -> torch.Tensor:
    """x (N, C, *S) (square / cubic spatial axes) rotated by class r.

    2D: ``rot90(x, r)`` in the (H, W) plane. 3D: r = 0 the identity, r = 1 + 3·p + (k − 1) the
    rotation by k·90° (k = 1, 2, 3) in plane p of :data:`PLANES_3D`.
    """
    if x.dim() == 4:
        return torch.rot90(x, r % 4, dims=(2, 3))
    if r == 0:
        return x
    p, k = divmod(r - 1, 3)
    return torch.rot90(x, k + 1, dims=PLANES_3D[p])


def centre_square(x: torch.Tensor) -> torch.Tensor:
    """Centre crop of the spatial axes of x (N, C, *S) to the shortest side."""
    side = min(x.shape[2:])
    index = [slice(None), slice(None)] + [slice((s - side) // 2, (s - side) // 2 + side) for s in x.shape[2:]]
    return x[tuple(index)]


class Rotation(GeminiModule):
    """Rotation prediction on the GEMINI backbone.

    Args (beyond the core): ``feature_level`` (pooled level, :mod:`.pooling`), ``hidden`` (classifier
    hidden size; ``None``: the pooled width), ``all_rotations``.
    """

    network_parts = ("backbone",)

    def __init__(self, *args: Any, feature_level: Literal["encoder", "decoder"] = "encoder", hidden: int | None = None,
                 all_rotations: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        c = level_channels(self.hparams.widths, feature_level)
        self.classifier = mlp([c, hidden or c, num_rotations(self.hparams.spatial_dims)])

    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        x = centre_square(self.augment({"image": single_images(batch)}, [("image",)])["image"])
        r_count = num_rotations(self.hparams.spatial_dims)
        if self.hparams.all_rotations:
            labels = torch.arange(r_count).repeat(x.shape[0])
            x = x.repeat_interleave(r_count, 0)
        else:
            labels = torch.randint(r_count, (x.shape[0],), generator=self.aug_generator)
        rotated = torch.cat([rotate(x[i:i + 1], int(r)) for i, r in enumerate(labels.tolist())], 0)
        return {"image": rotated, "label": labels.to(x.device)}

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        logits = self.classifier(pooled_features(self.net.backbone, batch["image"], self.hparams.feature_level))
        loss = F.cross_entropy(logits.float(), batch["label"])
        acc = (logits.detach().argmax(1) == batch["label"]).float().mean()
        yield "rotation", {"total": loss, "accuracy": acc}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        return None

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        return None
