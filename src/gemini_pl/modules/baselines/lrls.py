"""Shared pieces of the "learning registration to learn segmentation" (LRLS) rows of Table II.

:class:`RegSegBase` is :class:`~gemini_pl.modules.Segmentation` (the segmenter: backbone + head,
its evaluation, its ``seg_loss``) plus a **separate registration network** ``self.reg_net`` (a
:class:`~gemini_pl.nets.GeminiNet` backbone + deformer, no head), as the LRLS papers have two
networks. Training batches are ``data.train_mode: pairs+labeled`` ``{"image", "label", "image_a",
"image_b"}`` — the labeled sample (the atlas) and two unlabeled images — all four moved by one
random affine (as the BRBS / PC-Reg-RT code augments them with one spatial code).

Each iteration yields two losses, stepped one after the other (``schedule: alternate``, the
papers' two optimisers): ``reg`` (:meth:`reg_losses`, the registration side and its helpers) and
``seg`` (:meth:`seg_losses`, the segmenter; it runs after the ``reg`` step and sees what
:meth:`reg_losses` left in ``batch["cache"]``, detached). A loss must only reach its own side's
parameters: what one side takes from the other is computed without gradient.

Helpers: :meth:`register` (φ warping moving onto fixed), :meth:`reg_terms` (masked LNCC +
smoothness of one direction), :meth:`onehot` (labels as (N, K, *S) float channels),
:meth:`warp_label` (nearest-neighbour label warp), :func:`foreground` (the channels that a Dice
counts), :func:`beta_draw` (a Beta draw from the module's seeded augmentation generator).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from ...errors import ConfigError
from ...losses import registration_terms, soft_dice_loss
from ...metrics import one_hot_labels
from ...nets import DEFAULT_DEFORMER_WIDTHS, GeminiNet
from ...spatial import warp
from ..batches import require_batch_keys
from ..core import Losses
from ..segment import Segmentation

__all__ = ["RegSegBase", "beta_draw", "foreground", "label_dice_loss"]

BATCH_KEYS = ("image", "label", "image_a", "image_b")


def foreground(t: torch.Tensor, label_kind: str) -> torch.Tensor:
    """The channels a Dice counts: all but the background (multiclass) or all (multilabel)."""
    return t[:, 1:] if label_kind == "multiclass" else t


def label_dice_loss(prob: torch.Tensor, target: torch.Tensor, label_kind: str = "multiclass") -> torch.Tensor:
    """``1 − soft Dice`` (:func:`~gemini_pl.losses.soft_dice_loss`) of two (N, K, *S) channel maps
    over their foreground channels."""
    return soft_dice_loss(foreground(prob, label_kind), foreground(target, label_kind))


def beta_draw(generator: torch.Generator, a: float, b: float) -> float:
    """One draw of Beta(a, b), reproducible from ``generator`` (which advances by one draw); the
    global random state is left as it was."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return float(torch.distributions.Beta(torch.tensor(float(a)), torch.tensor(float(b))).sample())


class RegSegBase(Segmentation):
    """Segmenter (``self.net``) + registration network (``self.reg_net``), trained alternately.

    Args (beyond :class:`~gemini_pl.modules.Segmentation`):
        deformer_widths: the registration network's deformer widths.
        reg_in_channels: input channels of the registration network (default: ``in_channels``).
        lambda_smooth: smoothness weight of the registration loss (relative to the LNCC).
        ncc_window: LNCC window.
        sampling, ncc_eps_per_voxel: the warp and LNCC variants (see :class:`~gemini_pl.modules.Registration`).
    """

    def __init__(self, *args: Any, deformer_widths: Sequence[int] = DEFAULT_DEFORMER_WIDTHS,
                 reg_in_channels: int | None = None, lambda_smooth: float = 1.0, ncc_window: int = 9,
                 sampling: Literal["exact", "legacy"] = "exact", ncc_eps_per_voxel: bool = True,
                 lambda_seg: float = 1.0, **kwargs: Any):
        super().__init__(*args, lambda_seg=lambda_seg, **kwargs)
        hp = self.hparams
        self.reg_net = GeminiNet(hp.spatial_dims, reg_in_channels or hp.in_channels, 1, hp.widths, deformer_widths,
                                 flow_init=hp.flow_init)
        self.reg_net.head = None

    # ---------------------------------------------------------------- registration pieces
    def register(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """φ (N, ndim, *S) warping ``moving`` onto ``fixed`` (both (N, C, *S))."""
        f_m, f_f = self.reg_net.features(torch.cat([moving, fixed], 0)).chunk(2, 0)
        return self.reg_net.flow(f_m, f_f)

    def register_both(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(φ_ab, φ_ba): A onto B and B onto A, one feature pass and one deformer call."""
        f_a, f_b = self.reg_net.features(torch.cat([a, b], 0)).chunk(2, 0)
        return self.reg_net.flows_both_ways(f_a, f_b)

    def reg_terms(self, moving: torch.Tensor, fixed: torch.Tensor, flow: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"ncc", "smooth"}`` of one direction (masked LNCC of the warped moving image, smoothness)."""
        hp = self.hparams
        return registration_terms(moving, fixed, flow, hp.ncc_window, hp.sampling, hp.ncc_eps_per_voxel)

    # ---------------------------------------------------------------- labels
    def onehot(self, label: torch.Tensor) -> torch.Tensor:
        """(N, K, *S) float channels of a label: one-hot of class indices, or the multi-label masks."""
        return label.float() if self.label_kind == "multilabel" else one_hot_labels(label, int(self.hparams.num_classes))

    def warp_label(self, label: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """A label (class indices (N, 1, *S) or masks (N, K, *S)) warped by nearest neighbours, same dtype."""
        return warp(label, flow, mode="nearest", sampling=self.hparams.sampling)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """softmax (multiclass) or sigmoid (multilabel) of head logits."""
        return torch.sigmoid(logits.float()) if self.label_kind == "multilabel" else torch.softmax(logits.float(), 1)

    # ---------------------------------------------------------------- training
    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """One random affine for the labeled sample, its label and both unlabeled images."""
        require_batch_keys(batch, BATCH_KEYS, type(self).__name__, "pairs+labeled")
        out = self.augment(batch, [BATCH_KEYS])
        n = min(out["image"].shape[0], out["image_a"].shape[0])
        if out["image"].shape[2:] != out["image_a"].shape[2:]:
            raise ConfigError(f"{type(self).__name__} registers the labeled sample onto unlabeled images: they must have "
                              f"one shape, got {tuple(out['image'].shape[2:])} and {tuple(out['image_a'].shape[2:])}; "
                              "set data.patch_size")
        for key in BATCH_KEYS:
            out[key] = out[key][:n]
        out["cache"] = {}
        return out

    def reg_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Terms of the registration side (``"total"`` minimised); may leave detached tensors in
        ``batch["cache"]`` for :meth:`seg_losses`."""
        raise NotImplementedError

    def seg_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Terms of the segmenter (``"total"`` minimised)."""
        raise NotImplementedError

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        yield "reg", self.reg_losses(batch)
        yield "seg", self.seg_losses(batch)
