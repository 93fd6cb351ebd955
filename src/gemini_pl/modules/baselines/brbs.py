"""BRBS (He et al., TNNLS 2022): learning better registration to learn better few-shot segmentation.

As the official code (YutingHe-list/BRBS, ``pytorch/TrainBRBS.py``, ``train_iterator``), each
iteration steps the registration network R and then the segmenter S:

* **R** on a random pair of the labeled image L and the unlabeled U1, U2 — (L, U1), (L, U2) or
  (U2, U1), in a random order — registered both ways (φ: 1 → 2, φ⁻: 2 → 1):
  ``S(φ) + S(φ⁻) + NCC(x1 ∘ φ, x2) + NCC(x2 ∘ φ⁻, x1) + 100·SeC + 0.1·L_I`` with the
  **segmentation-consistency** SeC = ``Dice(l1 ∘ φ, l2) + Dice(l2 ∘ φ⁻, l1)`` (l: the one-hot label
  where the image has one, else S's softmax, detached) and the **inverse** term
  ``L_I = mean((−φ ∘ φ − φ⁻)²)`` (:func:`inverse_loss`);
* **S** (R without gradient) on data made by the registration (:func:`s3p`, :func:`mix_pair`):
  *authenticity and diversity* — a new labeled pair from L with the **style** of U1 brought onto L
  (``x_L + β·(U1 ∘ φ_{U1→L} − x_L)``) and a **spatial** deformation towards U2 (``α·φ_{L→U2}``):
  ``x = (x_L + β(…)) ∘ αφ``, ``y = y_L ∘ αφ`` (bilinear, a soft label); *robustness* — the
  **mix consistency** of U1 carried onto U2 through L and U2 itself: ``x_mix = γ·x̂ + (1 − γ)·x_U2``
  must be segmented as ``γ·S(x̂) + (1 − γ)·S(x_U2)`` (MSE of logits); α, β, γ ~ Beta(0.3, 0.3)
  each iteration; loss ``Dice(S(x), y) + 0.01·MSE``.

The random draws (pair, order, α, β, γ) come from the module's seeded augmentation generator.

Simplified here (footnote of the Table II row): the GEMINI backbone + deformer and U-Net instead
of BRBS's U-Nets; masked LNCC; Dice over the foreground channels (multi-label: all channels).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ...losses import class_balanced_ce
from ...spatial import warp
from .lrls import RegSegBase, beta_draw, label_dice_loss

__all__ = ["BRBS", "inverse_loss", "mix_pair", "s3p"]


def inverse_loss(flow: torch.Tensor, inverse: torch.Tensor, sampling: str = "exact") -> torch.Tensor:
    """``mean((−warp(φ, φ) − φ⁻)²)``: BRBS's inverse-consistency term of φ (1 → 2) and φ⁻ (2 → 1)."""
    return (-warp(flow, flow, sampling=sampling) - inverse.float()).pow(2).mean()


def s3p(x_l: torch.Tensor, y_l: torch.Tensor, u_on_l: torch.Tensor, flow_l_to_u2: torch.Tensor, alpha: float,
        beta: float, sampling: str = "exact") -> tuple[torch.Tensor, torch.Tensor]:
    """A new labeled pair: ``((x_L + β(u_on_l − x_L)) ∘ αφ, y_L ∘ αφ)``; ``y_l`` label channels (N, K, *S),
    warped bilinearly (a soft label)."""
    spa = alpha * flow_l_to_u2
    image = warp(x_l + beta * (u_on_l - x_l), spa, sampling=sampling)
    return image, warp(y_l.float(), spa, sampling=sampling)


def mix_pair(a: torch.Tensor, b: torch.Tensor, s_a: torch.Tensor, s_b: torch.Tensor,
             gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(γa + (1 − γ)b, γ s_a + (1 − γ) s_b): the mixed image and its mixed target."""
    return gamma * a + (1 - gamma) * b, gamma * s_a + (1 - gamma) * s_b


class BRBS(RegSegBase):
    """Better registration (SeC + inverse terms) for better segmentation (S3P data + mix consistency).

    Args (beyond :class:`~.lrls.RegSegBase`; defaults: the official code's): ``lambda_sec`` (100),
    ``lambda_inverse`` (0.1), ``lambda_mix`` (0.01), ``beta_param`` (0.3).
    """

    def __init__(self, *args: Any, lambda_sec: float = 100.0, lambda_inverse: float = 0.1, lambda_mix: float = 0.01,
                 beta_param: float = 0.3, **kwargs: Any):
        super().__init__(*args, **kwargs)

    def _beta(self) -> float:
        b = self.hparams.beta_param
        return beta_draw(self.aug_generator, b, b)

    def _label_or_seg(self, image: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        if label is not None:
            return self.onehot(label)
        with torch.no_grad():
            return self.probs(self.net(image))

    def reg_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        hp = self.hparams
        g = self.aug_generator
        x_l, y_l, u1, u2 = batch["image"], batch["label"], batch["image_a"], batch["image_b"]
        choice = int(torch.randint(3, (1,), generator=g))
        (x1, l1), (x2, l2) = [((x_l, y_l), (u1, None)), ((x_l, y_l), (u2, None)), ((u2, None), (u1, None))][choice]
        if int(torch.randint(2, (1,), generator=g)):
            (x1, l1), (x2, l2) = (x2, l2), (x1, l1)
        flow, inv = self.register_both(x1, x2)
        t12, t21 = self.reg_terms(x1, x2, flow), self.reg_terms(x2, x1, inv)
        s1, s2 = self._label_or_seg(x1, l1), self._label_or_seg(x2, l2)
        sec = (label_dice_loss(warp(s1, flow, sampling=hp.sampling), s2, self.label_kind)
               + label_dice_loss(warp(s2, inv, sampling=hp.sampling), s1, self.label_kind))
        inverse = inverse_loss(flow, inv, hp.sampling)
        ncc, smooth = t12["ncc"] + t21["ncc"], t12["smooth"] + t21["smooth"]
        total = hp.lambda_smooth * smooth + ncc + hp.lambda_sec * sec + hp.lambda_inverse * inverse
        return {"total": total, "ncc": ncc, "smooth": smooth, "sec": sec, "inverse": inverse, "pair": float(choice)}

    def seg_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        hp = self.hparams
        x_l, y_l, u1, u2 = batch["image"], batch["label"], batch["image_a"], batch["image_b"]
        with torch.no_grad():
            u1_on_l = warp(u1, self.register(u1, x_l), sampling=hp.sampling)
            l_to_u2 = self.register(x_l, u2)
        beta, alpha, gamma = self._beta(), self._beta(), self._beta()
        new_img, new_lab = s3p(x_l, self.onehot(y_l), u1_on_l, l_to_u2, alpha, beta, hp.sampling)
        u1_on_u2 = warp(u1_on_l, l_to_u2, sampling=hp.sampling)
        x_mix, y_mix = mix_pair(u1_on_u2, u2, self.net(u1_on_u2), self.net(u2), gamma)
        mix = F.mse_loss(self.net(x_mix).float(), y_mix.float())
        logits = self.net(new_img)
        seg = hp.lambda_seg * label_dice_loss(self.probs(logits), new_lab, self.label_kind)
        if self.seg_balance > 0:   # beyond BRBS (Dice only): model.class_balanced_ce
            seg = seg + hp.lambda_seg * self.seg_balance * class_balanced_ce(logits, new_lab, self.label_kind == "multilabel")
        return {"total": seg + hp.lambda_mix * mix, "dice": seg, "mix": mix, "alpha": alpha, "beta": beta, "gamma": gamma}
