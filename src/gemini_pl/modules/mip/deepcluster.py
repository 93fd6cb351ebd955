"""DeepCluster (Caron et al., ECCV 2018): k-means pseudo-labels of pooled features, re-clustered per epoch.

At the start of every ``recluster_every``-th epoch:

1. a frozen snapshot of the backbone and the embedding MLP (eval mode) embeds the unlabeled
   training images (the data module's ``train_set`` images, centre-cropped to ``patch_size`` when
   the data has one; at most ``max_cluster_images`` of them, drawn at random);
2. the embeddings are PCA-whitened to ``pca_dim`` dimensions and L2-normalised, and clustered by
   k-means into ``num_clusters`` clusters (:mod:`.kmeans`);
3. the classifier (the top linear layer) is re-initialised and its optimiser state dropped.

The random draws of a clustering (image subset, k-means start) depend on ``aug_seed`` and the epoch
only, so every DDP rank computes the same clusters from the same (synchronised) weights.

During the epoch each training image's pseudo-label is its cluster: the nearest centroid of the
snapshot's whitened embedding of the un-augmented image — for the clustered images exactly their
k-means label. The online network classifies the augmented image (the core's random affine) with
cross-entropy, weighted by the inverse cluster size (DeepCluster samples images uniformly over the
clusters instead; both give every cluster the same weight).

Simplified here: the GEMINI U-Net's encoder (bottleneck pooled, then a Linear–BN–ReLU–Linear
embedding) instead of AlexNet/VGG with fc6–fc7; clustering a bounded random subset of the images
rather than the whole set; Lloyd's k-means in torch instead of faiss (empty clusters re-seeded with
the farthest point); no Sobel filtering.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..core import GeminiModule, Losses
from .kmeans import assign, fit_whitening, kmeans, whiten
from .pooling import level_channels, pooled_features
from .projector import mlp
from .restoration import single_images

__all__ = ["DeepCluster", "balanced_weights"]


def balanced_weights(counts: torch.Tensor) -> torch.Tensor:
    """Class weights (k,) ∝ 1 / cluster size, mean 1 over the non-empty clusters."""
    w = torch.where(counts > 0, 1.0 / counts.clamp(min=1).float(), torch.zeros_like(counts, dtype=torch.float))
    return w * (counts > 0).sum() / w.sum().clamp(min=1e-12)


class DeepCluster(GeminiModule):
    """DeepCluster on the GEMINI backbone.

    Args (beyond the core): ``feature_level`` (:mod:`.pooling`), ``embed_dim`` (embedding size; ``None``:
    the pooled width), ``num_clusters`` k (fewer when there are fewer images), ``pca_dim``,
    ``kmeans_iters``, ``max_cluster_images``, ``recluster_every`` (epochs).
    """

    network_parts = ("backbone",)

    def __init__(self, *args: Any, feature_level: Literal["encoder", "decoder"] = "encoder", embed_dim: int | None = None,
                 num_clusters: int = 100, pca_dim: int = 256, kmeans_iters: int = 20, max_cluster_images: int = 2000,
                 recluster_every: int = 1, **kwargs: Any):
        super().__init__(*args, **kwargs)
        c = level_channels(self.hparams.widths, feature_level)
        d = embed_dim or c
        self.embedder = mlp([c, c, d])
        self.classifier = nn.Linear(d, num_clusters)
        self.clusters: dict[str, torch.Tensor] | None = None   # centroids, whitening, counts (recomputed per epoch)
        self._snapshot: list[nn.Module] = []                    # kept out of the state dict

    # ------------------------------------------------------------------ clustering
    def embed(self, x: torch.Tensor, parts: tuple[nn.Module, nn.Module] | None = None) -> torch.Tensor:
        """Embedding (N, d) of images x with the online parts, or with ``parts`` (backbone, embedder)."""
        backbone, embedder = parts or (self.net.backbone, self.embedder)
        return embedder(pooled_features(backbone, x, self.hparams.feature_level))

    def cluster_images(self) -> torch.Tensor:
        """The unlabeled training images to cluster (n, C, *S), on the CPU."""
        trainer = self._trainer
        ds = getattr(self.datamodule, "train_set", None)
        if ds is None and trainer is not None:
            ds = getattr(getattr(trainer, "train_dataloader", None), "dataset", None)
        ds = getattr(ds, "pairs", ds)  # pairs + labeled: the unlabeled part
        images = getattr(ds, "images", None)
        if images is None:
            raise ConfigError("DeepCluster clusters the data module's unlabeled training images: use data.train_mode: pairs")
        n = len(images)
        order = torch.randperm(n, generator=self.cluster_generator())[: self.hparams.max_cluster_images].sort().values
        patch = getattr(ds, "patch_size", None)
        out = []
        for i in order.tolist():
            x = torch.as_tensor(images[i]["image"]).float()
            if patch:
                x = x[(slice(None),) + tuple(slice((s - p) // 2, (s - p) // 2 + p) for s, p in zip(x.shape[1:], patch))]
            out.append(x.as_subclass(torch.Tensor))
        return torch.stack(out)

    def cluster_generator(self) -> torch.Generator:
        """The draws of an epoch's clustering (image subset, k-means start): seeded by ``aug_seed`` and the
        epoch, the same on every DDP rank, so that all ranks hold the same clusters."""
        return torch.Generator().manual_seed(int(self.hparams.aug_seed) * 1000003 + int(self.current_epoch))

    @torch.no_grad()
    def recluster(self, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """Snapshot, embed, whiten and cluster ``images`` (n, C, *S); reset the classifier. Returns the labels (n,)."""
        backbone, embedder = copy.deepcopy(self.net.backbone).eval(), copy.deepcopy(self.embedder).eval()
        self._snapshot = [backbone, embedder]
        feats = torch.cat([self.embed(images[i:i + batch_size].to(self.device), (backbone, embedder))
                           for i in range(0, images.shape[0], batch_size)])
        mean, proj = fit_whitening(feats.cpu(), self.hparams.pca_dim)
        k = min(self.hparams.num_clusters, images.shape[0])
        centroids, labels = kmeans(whiten(feats.cpu(), mean, proj), k, self.hparams.kmeans_iters, self.cluster_generator())
        counts = torch.bincount(labels, minlength=self.hparams.num_clusters)
        self.clusters = {"centroids": centroids.to(self.device), "mean": mean.to(self.device),
                         "proj": proj.to(self.device), "weights": balanced_weights(counts).to(self.device)}
        self.classifier.reset_parameters()
        trainer = self._trainer
        for opt in (trainer.optimizers if trainer is not None else []):
            for p in self.classifier.parameters():
                opt.state.pop(p, None)
        return labels

    @torch.no_grad()
    def pseudo_labels(self, x: torch.Tensor) -> torch.Tensor:
        """Cluster (N,) of un-augmented images x: the nearest centroid of the snapshot's whitened embedding."""
        if self.clusters is None:
            raise RuntimeError("DeepCluster: no clusters yet (recluster runs at the start of an epoch)")
        z = whiten(self.embed(x, tuple(self._snapshot)), self.clusters["mean"], self.clusters["proj"])
        return assign(z, self.clusters["centroids"])

    def on_train_epoch_start(self) -> None:
        if self.clusters is None or self.current_epoch % self.hparams.recluster_every == 0:
            self.recluster(self.cluster_images())

    # ------------------------------------------------------------------ training
    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        x = single_images(batch)
        labels = self.pseudo_labels(x)
        return {"image": self.augment({"image": x}, [("image",)])["image"], "label": labels}

    def training_losses(self, batch: dict[str, Any]) -> Losses:
        logits = self.classifier(self.embed(batch["image"]))
        loss = F.cross_entropy(logits.float(), batch["label"], weight=self.clusters["weights"])
        yield "deepcluster", {"total": loss}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        return None

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        return None
