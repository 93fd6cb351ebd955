"""In-memory phantom batches for the downstream-module tests (the GeminiDataModule interface).

:class:`MemoryDataModule` serves the batches that ``GeminiDataModule`` serves for each
``train_mode`` ("pairs", "pairs+labeled", "labeled") and ``eval_mode`` ("pairs", "cases"), from
phantoms generated in memory — so that the modules can be tested without files.
"""

from __future__ import annotations

import functools

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from gemini_pl.data import make_phantom

SPACING = {2: (0.8, 1.2), 3: (1.5, 1.0, 2.0)}


@functools.lru_cache(maxsize=8)
def phantoms(dims: int, size: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, *S) images in [0, 1] and (n, 1, *S) int64 labels 0..5."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(n):
        img, lab = make_phantom(rng, dims, size)
        img = np.clip(img, 0, None)
        images.append(torch.from_numpy(img / img.max()).float()[None])
        labels.append(torch.from_numpy(lab.astype(np.int64))[None])
    return torch.stack(images), torch.stack(labels)


def masks3(label: torch.Tensor) -> torch.Tensor:
    """One case's (1, *S) label map → (3, *S) overlapping 0/1 masks."""
    return torch.cat([(label >= 1), (label == 2) | (label == 3), (label >= 4)], dim=0).float()


class _Items(Dataset):
    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class MemoryDataModule(L.LightningDataModule):
    """Phantom batches with the keys of ``GeminiDataModule`` (see the module docstring).

    ``labels="multilabel"`` turns the label maps into 3 overlapping masks (SCR-like).
    """

    def __init__(self, dims: int = 2, size: int = 32, train_mode: str = "pairs+labeled", eval_mode: str = "cases",
                 num_unlabeled: int = 6, num_labeled: int = 3, num_test: int = 3, batch_size: int = 2,
                 labeled_batch_size: int = 2, labels: str = "multiclass", iterations: int = 4, patch_size=None):
        super().__init__()
        self.spatial_dims = dims
        self.train_mode, self.eval_mode = train_mode, eval_mode
        self.label_kind = labels
        self.num_classes = 6 if labels == "multiclass" else 3
        self.patch_size = patch_size
        self.batch_size, self.labeled_batch_size = batch_size, labeled_batch_size
        self.iterations = iterations
        images, lab = phantoms(dims, size, num_unlabeled + num_labeled + num_test)
        if labels == "multilabel":
            lab = torch.stack([masks3(x) for x in lab])
        self.unlabeled = images[:num_unlabeled]
        self.lab_images, self.lab_labels = images[num_unlabeled:num_unlabeled + num_labeled], lab[num_unlabeled:num_unlabeled + num_labeled]
        self.test_images, self.test_labels = images[num_unlabeled + num_labeled:], lab[num_unlabeled + num_labeled:]

    def _meta(self, i: int) -> dict:
        n = self.spatial_dims
        aff = torch.eye(n + 1, dtype=torch.float64)
        aff[:n, :n] = torch.diag(torch.tensor(SPACING[n], dtype=torch.float64))
        aff[:n, n] = torch.arange(1, n + 1, dtype=torch.float64) * 10
        return {"filename": f"mem{i}.nii.gz", "affine": aff, "spacing": torch.tensor(SPACING[n], dtype=torch.float32)}

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(0)
        items = []
        nu, nl = len(self.unlabeled), len(self.lab_images)
        for _ in range(self.iterations * self.batch_size):
            a, b = torch.randperm(nu, generator=g)[:2].tolist()
            k = int(torch.randint(nl, (1,), generator=g))
            item: dict = {}
            if self.train_mode in ("pairs", "pairs+labeled"):
                item.update(image_a=self.unlabeled[a], image_b=self.unlabeled[b])
            if self.train_mode in ("pairs+labeled", "labeled"):
                item.update(image=self.lab_images[k], label=self.lab_labels[k])
            items.append(item)
        return DataLoader(_Items(items), batch_size=self.batch_size)

    def _eval_loader(self) -> DataLoader:
        n = len(self.test_images)
        if self.eval_mode == "cases":
            items = [
                {"image": self.test_images[i], "label": self.test_labels[i], "name": f"case{i}",
                 "spacing": torch.tensor(SPACING[self.spatial_dims]), "meta": self._meta(i)}
                for i in range(n)
            ]
        else:
            items = [
                {"image_a": self.test_images[i], "image_b": self.test_images[(i + 1) % n],
                 "label_a": self.test_labels[i], "label_b": self.test_labels[(i + 1) % n],
                 "name_a": f"case{i}", "name_b": f"case{(i + 1) % n}", "meta_b": self._meta((i + 1) % n)}
                for i in range(n)
            ]
        return DataLoader(_Items(items), batch_size=2)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader()

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader()

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader()
