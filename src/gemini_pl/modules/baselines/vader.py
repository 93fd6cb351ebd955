"""VADeR (Pinheiro et al., NeurIPS 2020): view-agnostic dense representations.

Dense InfoNCE with the known correspondence: a pooled grid point of view 2 and the same anatomical
point of view 1 (resampled through the known affine) are positives; the other sampled points of
the batch (both views) are negatives. (No momentum queue: negatives come from the batch.)
"""

from __future__ import annotations

import torch.nn.functional as F

from .dcrl import DensePretrainBase, info_nce

__all__ = ["VADeR"]


class VADeR(DensePretrainBase):
    def pair_loss(self, f1, f2, views):
        z1 = F.normalize(self.projector(f1), dim=1)
        z2 = F.normalize(self.projector(f2), dim=1)
        z1w, mask = self.align(z1, views["theta"])
        z1w, z2, mask = self.pool(z1w), self.pool(z2), (self.pool(mask) > 0.99).float()
        idx = self.sample_points(mask)
        q = F.normalize(self.gather(z2, idx), dim=1)
        k = F.normalize(self.gather(z1w, idx), dim=1)
        t = self.hparams.temperature
        loss = 0.5 * (info_nce(q, k, t) + info_nce(k, q, t))
        return {"total": loss, "dense_nce": loss}
