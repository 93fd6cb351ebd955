"""DPA-DBN (He et al., MICCAI 2019, "DPA-DenseBiasNet: Semi-supervised 3D Fine Renal Artery Segmentation
with Dense Biased Network and Deep Priori Anatomy").

The paper's semi-supervised mechanism is the **deep priori anatomy** (DPA): an autoencoder (AE)
is first trained, unsupervised, to reconstruct the many unlabeled images; its encoder features
(anatomy "priors") are then embedded into the segmentation network, which is trained on the few
labeled images with the AE fixed. No pseudo-label or consistency target is built from the
unlabeled images, only this prior (the paper's argument for thin structures). Two stages here, as
the DCRL rows (``pretrain`` then the main stage with ``init_from``):

* :class:`DPAPrior` (stage 1): the AE — convolutional encoder of ``prior_widths`` (one level per
  width, each after the first halving the resolution), a decoder without skip connections (so the
  image must pass through the bottleneck) — trained by the MSE between reconstruction and image on
  the unlabeled images (``data.train_mode: pairs``), with the shared spatial augmentation;
* :class:`DPADBN` (stage 2): the AE's encoder, frozen, gives the DPA features of every level,
  upsampled to the image's size and concatenated with the image as the segmenter's input; the
  segmenter (backbone + head) is trained with the shared CE + Dice on the labeled images; the same
  fused network segments at test time.

Simplified here (footnote of the Table II row): the GEMINI U-Net instead of DenseBiasNet (no dense
biased connections); the DPA features enter at the segmenter's input (upsampled, all AE levels)
rather than inside DenseBiasNet's layers; a plain (not denoising) AE with GroupNorm; the journal
version's hard-region-adaptation loss is not part of the MICCAI method and is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CheckpointError
from ...nets import load_state_dict_file
from ...nets.backbone import UNetBackbone
from ...nets.blocks import DoubleConv, Down, conv_nd, init_weights, pad_to_multiple, upsample2
from ..core import GeminiModule, Losses
from ..segment import Segmentation
from ..transfer import TransferReport

__all__ = ["DPADBN", "DPAPrior", "PriorAutoencoder", "PriorFusedNet"]

DEFAULT_PRIOR_WIDTHS = (16, 32, 64)


class PriorAutoencoder(nn.Module):
    """A convolutional autoencoder without skip connections.

    Encoder: ``DoubleConv(in → w0)``, then ``Down(w_{i−1} → w_i)`` (max-pool ×½ + DoubleConv);
    decoder: per level ×2 upsampling + ``DoubleConv(w_i → w_{i−1})``, then a 1×1 conv to the image's
    channels. Input (N, C, *S), any S (zero-padded to a multiple of 2^(levels−1) inside).
    """

    def __init__(self, spatial_dims: int, in_channels: int = 1, widths: Sequence[int] = DEFAULT_PRIOR_WIDTHS):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or any(w % 8 for w in widths):
            raise ValueError(f"model.prior_widths must be non-empty multiples of 8 (GroupNorm), got {widths}")
        self.widths = widths
        self.enc = nn.ModuleList([DoubleConv(spatial_dims, in_channels, widths[0])]
                                 + [Down(spatial_dims, a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.dec = nn.ModuleList([DoubleConv(spatial_dims, b, a) for a, b in zip(widths[:-1], widths[1:])][::-1])
        self.out = conv_nd(spatial_dims)(widths[0], in_channels, 1)
        init_weights(self)

    @property
    def out_channels(self) -> int:
        """Channels of :meth:`prior_features` (the sum of the widths)."""
        return sum(self.widths)

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[slice]]:
        """Encoder levels (full resolution first) of the padded image, and the crop undoing the padding."""
        x, crop = pad_to_multiple(x, 2 ** (len(self.widths) - 1))
        levels = []
        for block in self.enc:
            x = block(x)
            levels.append(x)
        return levels, crop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction (N, C, *S)."""
        levels, crop = self.encode(x)
        y = levels[-1]
        for block in self.dec:
            y = block(upsample2(y))
        return self.out(y)[tuple(crop)]

    def prior_features(self, x: torch.Tensor) -> torch.Tensor:
        """DPA features: every encoder level upsampled to the image's size, concatenated (N, Σw, *S)."""
        levels, crop = self.encode(x)
        size = levels[0].shape[2:]
        mode = "trilinear" if x.dim() == 5 else "bilinear"
        ups = [levels[0]] + [F.interpolate(t, size=size, mode=mode, align_corners=False) for t in levels[1:]]
        return torch.cat(ups, 1)[tuple(crop)]


class PriorFusedNet(nn.Module):
    """The segmenter with the DPA embedded: ``head(backbone([x, prior(x)]))``; the prior is frozen
    (no gradients). Exposes ``backbone``, ``head`` and :meth:`features` like a GeminiNet."""

    def __init__(self, prior: PriorAutoencoder, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.prior, self.backbone, self.head = prior, backbone, head
        self.prior.requires_grad_(False)

    def fused_input(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            p = self.prior.prior_features(x)
        return torch.cat([x, p], 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.fused_input(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DPAPrior(GeminiModule):
    """Stage 1 of DPA-DBN: the anatomy autoencoder on unlabeled images (``data.train_mode: pairs``).

    Args (beyond :class:`~gemini_pl.modules.core.GeminiModule`): ``prior_widths``, the AE's encoder widths.
    """

    network_parts = ("backbone",)

    def __init__(self, *args: Any, prior_widths: Sequence[int] = DEFAULT_PRIOR_WIDTHS, spatial_dims: int = 3, **kwargs: Any):
        super().__init__(*args, spatial_dims=spatial_dims, **kwargs)
        self.net.backbone = None   # only the AE is trained here
        self.prior = PriorAutoencoder(self.hparams.spatial_dims, self.hparams.in_channels, prior_widths)

    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch = self.augment(batch, [("image_a",), ("image_b",)] if self.hparams.get("affine_per_image") else [("image_a", "image_b")])
        x = torch.cat([batch["image_a"], batch["image_b"]], 0) if "image_b" in batch else batch["image_a"]
        return {"image": x}

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        x = batch["image"]
        yield "ae", {"total": F.mse_loss(self.prior(x).float(), x.float())}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:  # judged by stage 2
        return None

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        return None


class DPADBN(Segmentation):
    """Stage 2 of DPA-DBN: segmentation with the frozen DPA embedded (see the module doc).

    Args (beyond :class:`~gemini_pl.modules.Segmentation`):
        prior_widths: the AE's encoder widths (as in stage 1).
        init_from: the stage-1 checkpoint (its ``prior.*`` weights are loaded into the AE; required
            for training — a random prior is refused).
    """

    def __init__(self, *args: Any, prior_widths: Sequence[int] = DEFAULT_PRIOR_WIDTHS, lambda_seg: float = 1.0,
                 **kwargs: Any):
        super().__init__(*args, lambda_seg=lambda_seg, **kwargs)
        hp = self.hparams
        prior = PriorAutoencoder(hp.spatial_dims, hp.in_channels, prior_widths)
        backbone = UNetBackbone(hp.spatial_dims, hp.in_channels + prior.out_channels, hp.widths)
        self.net = PriorFusedNet(prior, backbone, self.net.head)

    def init_from_checkpoint(self) -> TransferReport | None:
        """Load the AE (``prior.*`` of a :class:`DPAPrior` checkpoint, or ``net.prior.*``) once."""
        path = getattr(self.hparams, "init_from", None)
        if self._init_done or getattr(self.trainer, "ckpt_path", None):
            return None
        if not path:
            if self.trainer.state.fn == "fit":
                raise CheckpointError("DPADBN needs model.init_from: the DPAPrior (stage 1) checkpoint with the trained AE")
            return None
        state = load_state_dict_file(path)
        theirs = {}
        for prefix in ("prior.", "net.prior."):
            theirs.update({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        ours = self.net.prior.state_dict()
        bad = sorted(set(ours) ^ set(theirs)) + sorted(k for k in ours if k in theirs and theirs[k].shape != ours[k].shape)
        if bad:
            raise CheckpointError(f"{path} does not hold this DPA prior (model.prior_widths / spatial_dims?): "
                                  + "; ".join(bad[:8]))
        self.net.prior.load_state_dict(theirs)
        report = TransferReport(str(path), "lightning", ("prior",), loaded=sorted(f"prior.{k}" for k in theirs))
        self.transfer_report, self._init_done = report, True
        return report
