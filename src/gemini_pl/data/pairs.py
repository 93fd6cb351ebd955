"""Datasets that serve batches: random pairs, labeled samples, fixed evaluation pairs, whole cases.

All of them wrap a dataset of preprocessed items (``{"image", "label"?, "name", "meta"}``,
see :mod:`gemini_pl.data.transforms`) and return plain tensors. Random choices (pair crops, the
labeled sample of a ``pairs+labeled`` item) use the dataset's own generator, which MONAI's
``DataLoader`` reseeds per worker through :meth:`set_random_state`.
"""

from __future__ import annotations

import bisect
from typing import Any, Sequence

import numpy as np
import torch
from monai.data.utils import set_rnd
from torch.utils.data import Dataset

from gemini_pl.errors import DataError

__all__ = [
    "CaseDataset",
    "LabeledDataset",
    "LabeledPairDataset",
    "PairDataset",
    "PairsWithLabeled",
]


def _plain(x: torch.Tensor) -> torch.Tensor:
    """MetaTensor -> plain torch.Tensor (batches hold ordinary tensors)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else x


def _first(item: Any) -> dict:
    """MONAI random crops return a list of samples: take the (only) one."""
    return item[0] if isinstance(item, (list, tuple)) else item


class _Random:
    """A numpy generator that MONAI's worker seeding reaches (``set_random_state``)."""

    def __init__(self, seed: int, children: Sequence[Any] = ()) -> None:
        self.rng = np.random.default_rng(seed)
        self._children = list(children)

    def set_random_state(self, seed: int | None = None, state: Any = None) -> "_Random":
        self.rng = np.random.default_rng(seed)
        for i, child in enumerate(self._children):
            set_rnd(child, seed=(int(seed or 0) + 7919 * (i + 1)))
        return self


class PairDataset(_Random, Dataset):
    """All ordered pairs ``(a, b)``, ``a != b``, of the items, within groups.

    Pairs are addressed by index arithmetic, never listed: a group of ``m`` items contributes
    ``m * (m - 1)`` pairs, so 112k X-rays in four groups cost no memory. With ``patch_size``, A and
    B are cropped at the same random location (images of different shapes: at the same relative
    location, ``start / (size - patch)`` equal along each axis).

    Args:
        images: dataset of items with an ``"image"`` key (all of one shape without ``patch_size``).
        groups: lists of item indices; pairs never cross groups (default: one group of all).
        patch_size: random crop size (``None``: whole images).
        seed: seed of the crop positions (reseeded per worker).
    """

    def __init__(self, images: Dataset, groups: Sequence[Sequence[int]] | None = None,
                 patch_size: Sequence[int] | None = None, seed: int = 0) -> None:
        _Random.__init__(self, seed)  # the images are deterministic (cached): nothing to reseed
        self.images = images
        self.n = len(images)  # type: ignore[arg-type]
        if groups is None:
            groups = [range(self.n)]
        self.groups = [list(g) for g in groups if len(g) >= 2]
        if not self.groups:
            raise ValueError("a pair dataset needs at least two images in one group")
        self._offsets = [0]
        for g in self.groups:
            self._offsets.append(self._offsets[-1] + len(g) * (len(g) - 1))
        self.patch_size = list(patch_size) if patch_size else None

    def __len__(self) -> int:
        return self._offsets[-1]

    def pair(self, index: int) -> tuple[int, int]:
        """Item indices ``(a, b)`` of pair ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        g = bisect.bisect_right(self._offsets, index) - 1
        group = self.groups[g]
        a, r = divmod(index - self._offsets[g], len(group) - 1)
        return group[a], group[r if r < a else r + 1]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        a, b = self.pair(index)
        ia, ib = self.images[a], self.images[b]
        xa, xb = _plain(ia["image"]), _plain(ib["image"])
        if self.patch_size:
            sa, sb = [slice(None)], [slice(None)]
            for p, na, nb in zip(self.patch_size, xa.shape[1:], xb.shape[1:]):
                if na == nb:  # one shape: the same location
                    start_a = start_b = int(self.rng.integers(0, na - p + 1))
                else:  # the same relative location: start / (n - p) is the same fraction in both
                    u = float(self.rng.random())
                    start_a, start_b = int(round(u * (na - p))), int(round(u * (nb - p)))
                sa.append(slice(start_a, start_a + p))
                sb.append(slice(start_b, start_b + p))
            xa, xb = xa[tuple(sa)], xb[tuple(sb)]
        elif xa.shape != xb.shape:
            raise DataError(
                f"pair {ia.get('name')} / {ib.get('name')}: shapes {tuple(xa.shape[1:])} and "
                f"{tuple(xb.shape[1:])} differ; pairs need one shape (set data.preprocessing.shape "
                "or data.patch_size)"
            )
        return {"image_a": xa.contiguous(), "image_b": xb.contiguous()}


class LabeledDataset(Dataset):
    """``{"image", "label"}`` of labeled items (after their random crop, if any)."""

    def __init__(self, items: Dataset) -> None:
        self.items = items

    def set_random_state(self, seed: int | None = None, state: Any = None) -> "LabeledDataset":
        """Reseed the random transforms of the items (if any), without walking the cache."""
        if hasattr(self.items, "set_random_state"):
            self.items.set_random_state(seed=seed)
        return self

    def __len__(self) -> int:
        return len(self.items)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = _first(self.items[index])
        return {"image": _plain(item["image"]).contiguous(), "label": _plain(item["label"]).contiguous()}


class PairsWithLabeled(_Random, Dataset):
    """A pair item plus one random labeled sample: ``{"image_a", "image_b", "image", "label"}``."""

    def __init__(self, pairs: PairDataset, labeled: LabeledDataset, seed: int = 0) -> None:
        _Random.__init__(self, seed, [pairs, labeled])
        if len(labeled) == 0:
            raise ValueError("no labeled items")
        self.pairs = pairs
        self.labeled = labeled

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        out = dict(self.pairs[index])
        out.update(self.labeled[int(self.rng.integers(len(self.labeled)))])
        return out


class LabeledPairDataset(Dataset):
    """Fixed pairs of labeled items (registration evaluation), with each image's voxel spacing
    (``spacing_a``, ``spacing_b``: (ndim,) float32, tensor-axis order) and geometry (``meta_a``,
    ``meta_b``: the items' ``meta`` dicts, so that predictions are written on each image's grid)
    when the items carry them.

    Default order: pair ``k`` is ``(k mod n) -> (k mod n + 1 + k // n) mod n``: the first ``n``
    pairs are ``i -> (i + 1) mod n``, more pairs use larger offsets, up to all ``n * (n - 1)``
    ordered pairs (``num_pairs=None``). ``pairs`` gives the index pairs explicitly instead.
    """

    def __init__(self, items: Dataset, num_pairs: int | None = None,
                 pairs: Sequence[tuple[int, int]] | None = None) -> None:
        self.items = items
        n = len(items)  # type: ignore[arg-type]
        if pairs is not None:
            self.pairs = [(int(a), int(b)) for a, b in pairs]
            return
        if n < 2:
            raise ValueError("a pair dataset needs at least two images")
        total = n * (n - 1)
        num_pairs = total if num_pairs is None else min(int(num_pairs), total)
        self.pairs = []
        for k in range(num_pairs):
            a = k % n
            b = (a + 1 + (k // n) % (n - 1)) % n
            self.pairs.append((a, b))

    def set_random_state(self, seed: int | None = None, state: Any = None) -> "LabeledPairDataset":
        return self  # deterministic

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        a, b = self.pairs[index]
        ia, ib = self.items[a], self.items[b]
        out = {
            "image_a": _plain(ia["image"]),
            "image_b": _plain(ib["image"]),
            "label_a": _plain(ia["label"]),
            "label_b": _plain(ib["label"]),
            "name_a": ia["name"],
            "name_b": ib["name"],
        }
        for side, item in (("a", ia), ("b", ib)):  # physical units for HD95 (and the augmentation), geometry for files
            meta = item.get("meta") if isinstance(item, dict) else None
            if isinstance(meta, dict):
                out[f"meta_{side}"] = dict(meta)
                if meta.get("spacing") is not None:
                    out[f"spacing_{side}"] = torch.as_tensor(meta["spacing"], dtype=torch.float32)
        return out


class CaseDataset(Dataset):
    """Whole cases: ``{"image", "label", "name", "spacing", "meta"}`` (see ``transforms.geometry``)."""

    def __init__(self, items: Dataset) -> None:
        self.items = items

    def set_random_state(self, seed: int | None = None, state: Any = None) -> "CaseDataset":
        return self  # deterministic

    def __len__(self) -> int:
        return len(self.items)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        out = {
            "image": _plain(item["image"]),
            "name": item["name"],
            "spacing": item["meta"]["spacing"].to(torch.float32),
            "meta": dict(item["meta"]),
        }
        if "label" in item:
            out["label"] = _plain(item["label"])
        return out
