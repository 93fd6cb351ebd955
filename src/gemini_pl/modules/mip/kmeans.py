"""DeepCluster's clustering step: PCA whitening + L2 normalisation, then k-means (Lloyd).

* :func:`fit_whitening` / :func:`whiten`: ``ŷ = normalise((x − μ) · V_d · diag(1/√(λ + ε)))`` with
  V_d the top-d principal directions of the features and λ their variances (DeepCluster: PCA to 256
  dimensions, whitening, L2 normalisation); d = min(dim, D, n − 1).
* :func:`kmeans`: k distinct random points as initial centroids (from ``generator``), ``iters``
  Lloyd iterations (assign to the nearest centroid in squared Euclidean distance, move each centroid
  to its points' mean). An empty cluster is re-seeded with the point farthest from its own centroid
  (faiss, which DeepCluster uses, splits a large cluster instead; both keep k clusters non-empty).

Shapes: features (n, D); centroids (k, D); labels (n,) int64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import ConfigError

__all__ = ["assign", "fit_whitening", "kmeans", "whiten"]


def fit_whitening(x: torch.Tensor, dim: int = 256, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), projection (D, d)) of the PCA whitening of features x (n, D)."""
    x = x.double()
    mean = x.mean(0)
    d = max(1, min(int(dim), x.shape[1], x.shape[0] - 1))
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    var = s[:d] ** 2 / max(x.shape[0] - 1, 1)
    return mean.float(), (vh[:d].t() / torch.sqrt(var + eps)).float()


def whiten(x: torch.Tensor, mean: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """Whitened, L2-normalised features (n, d)."""
    return F.normalize((x.float() - mean.to(x.device)) @ proj.to(x.device), dim=1)


def assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index (n,) of the nearest centroid (squared Euclidean distance) of every row of x (n, D)."""
    return torch.cdist(x.float(), centroids.float().to(x.device)).argmin(1)


def kmeans(x: torch.Tensor, k: int, iters: int = 20, generator: torch.Generator | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means of x (n, D) into k clusters: (centroids (k, D), labels (n,))."""
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ConfigError(f"k-means needs 1 <= k <= number of points, got k={k} for {n} points")
    x = x.float()
    pick = torch.randperm(n, generator=generator)[:k].to(x.device)
    centroids = x[pick].clone()
    labels = assign(x, centroids)
    for _ in range(int(iters)):
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None].to(x), centroids)
        for c in (counts == 0).nonzero().flatten().tolist():  # re-seed empty clusters
            far = (x - centroids[labels]).pow(2).sum(1)
            far[torch.bincount(labels, minlength=k)[labels] <= 1] = -1  # never empty another cluster
            i = int(far.argmax())
            centroids[c] = x[i]
            labels[i] = c
        new = assign(x, centroids)
        if torch.equal(new, labels):
            break
        labels = new
    return centroids, labels
