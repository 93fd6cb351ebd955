"""Resumable training order: what a training step sees is a pure function of (seed, position).

The training stream is endless. Position g holds

- the dataset item ``perm_c[g mod n]`` where cycle ``c = g div n`` is a random permutation of the
  n items drawn from the seed (for datasets too large to permute, e.g. the n·(n−1) pairs of
  ChestX-ray8, an item drawn at random from ``(seed, g)`` instead), and
- the random state of every random transform for that item (crops, the labeled partner of a
  pair), reseeded from ``(seed, g)`` just before the item is produced.

Under DDP rank r of w takes positions ``s·w + r``. Each time the loader starts an epoch the sampler
asks ``batches_done()`` how many batches this process has already trained on and continues the
stream right after them. So a run resumed from any checkpoint, taken at an epoch end or in the
middle of an epoch, sees exactly the items an uninterrupted run would have seen, and the sampler
has no state of its own to save. :class:`StreamSampler` is a ``DistributedSampler`` so that
Lightning (``use_distributed_sampler``) leaves it as it is instead of splitting it a second time.

Evaluation under DDP (:func:`eval_sampler`): the validation/test items are split over the ranks
without padding, so that every case counts once in the logged (synchronised) means.
:func:`make_loader` builds the data module's loaders from these.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sized
from typing import Any

import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from monai.data import DataLoader as MonaiDataLoader
from monai.data.utils import set_rnd
from torch.utils.data import Dataset, DistributedSampler, Sampler
from torch.utils.data._utils.collate import default_collate

from gemini_pl.data.pairs import PairsWithLabeled

log = logging.getLogger(__name__)

#: Datasets up to this size are walked in random permutations; larger ones are sampled with replacement.
MAX_PERMUTED = 1 << 24


class StreamDataset(Dataset):
    """Serves ``dataset`` by stream position (see module docstring). ``len`` is that of ``dataset``."""

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset = dataset
        self.n = len(dataset)  # type: ignore[arg-type]
        if self.n < 1:
            raise ValueError("cannot stream an empty dataset")
        self.seed = int(seed)
        self._cycle = -1
        self._perm: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.n

    def index(self, g: int) -> int:
        """Dataset index at stream position ``g``."""
        if self.n > MAX_PERMUTED:
            return int(np.random.default_rng([self.seed, 1, g]).integers(self.n))
        c = g // self.n
        if c != self._cycle:
            self._perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + c))
            self._cycle = c
        assert self._perm is not None
        return int(self._perm[g % self.n])

    def __getitem__(self, g: int) -> Any:
        set_rnd(self.dataset, seed=int(np.random.default_rng([self.seed, 2, g]).integers(2**31)))
        return self.dataset[self.index(g)]


class StreamSampler(DistributedSampler):
    """Yields this process's stream positions for one epoch, after the batches already trained.

    It splits the stream over the DDP ranks itself; being a ``DistributedSampler`` (without its
    dataset and shuffling), Lightning does not wrap it in a second distributed split, which would
    shuffle the stream and drop part of every rank's share of the epoch.

    Args:
        epoch_len: positions per epoch for this process.
        batch_size: loader batch size (positions advance by this per batch).
        batches_done: callable returning how many batches this process has trained on in this run
            (for Lightning see :func:`lightning_batches_done`); None → 0.
        num_replicas, rank: DDP world size and rank (None: read from torch.distributed).
    """

    def __init__(
        self,
        epoch_len: int,
        batch_size: int,
        batches_done: Callable[[], int] | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.num_replicas = num_replicas if num_replicas is not None else (torch.distributed.get_world_size() if dist else 1)
        self.rank = rank if rank is not None else (torch.distributed.get_rank() if dist else 0)
        self.epoch_len = max(1, -(-epoch_len // self.num_replicas))
        self.batch_size = batch_size
        self.batches_done = batches_done or (lambda: 0)
        # what DistributedSampler's __init__ (not called: there is no dataset) would have set
        self.dataset = None
        self.shuffle, self.seed, self.epoch, self.drop_last = False, 0, 0, False
        self.num_samples = self.epoch_len
        self.total_size = self.epoch_len * self.num_replicas

    def __len__(self) -> int:
        return self.epoch_len

    def __iter__(self) -> Iterator[int]:
        start = int(self.batches_done()) * self.batch_size
        for s in range(start, start + self.epoch_len):
            yield s * self.num_replicas + self.rank


def lightning_batches_done(trainer) -> Callable[[], int]:
    """``batches_done`` for :class:`StreamSampler` from a Lightning trainer's loop progress.

    ``total.ready`` counts the batches started in this fit; a checkpoint taken at the end of a
    training batch has that batch fully trained, and one taken at an epoch end has
    ``ready == completed``.
    """

    def done() -> int:
        try:
            return int(trainer.fit_loop.epoch_loop.batch_progress.total.ready)
        except AttributeError:
            return 0

    return done


def eval_sampler(dataset: Sized, trainer: Any = None) -> DistributedSampler | None:
    """The validation/test sampler under DDP: each rank takes items ``rank, rank + w, ...``, no padding.

    Lightning's default ``DistributedSampler`` pads the dataset so that every rank gets the same
    number of items; a repeated case then counts twice in the synchronised epoch means. This
    sampler (Lightning's ``UnrepeatedDistributedSampler``, which Lightning keeps as it is) gives
    the ranks at most one batch more or less than each other, so the evaluating modules log
    metric objects synchronised once per epoch (torchmetrics), never per-batch tensors with
    ``sync_dist=True``: Lightning 2.6 floors the mean-reduced batch count of those when the ranks'
    counts differ (Lightning issue #21859) and would inflate the logged means.

    Returns ``None`` (Lightning's default applies) outside DDP (torch.distributed not initialised
    or one process), when the trainer's ``use_distributed_sampler`` is off, or when there are fewer
    items than processes (every rank needs at least one batch; then Lightning pads).
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    if torch.distributed.get_world_size() < 2:
        return None
    connector = getattr(trainer, "_accelerator_connector", None)
    if connector is not None and not getattr(connector, "use_distributed_sampler", True):
        return None
    kwargs = getattr(trainer, "distributed_sampler_kwargs", None) if trainer is not None else None
    if not isinstance(kwargs, dict) or "num_replicas" not in kwargs or "rank" not in kwargs:
        kwargs = {"num_replicas": torch.distributed.get_world_size(), "rank": torch.distributed.get_rank()}
    num_replicas, rank = int(kwargs["num_replicas"]), int(kwargs["rank"])
    if num_replicas < 2:
        return None
    if len(dataset) < num_replicas:
        log.warning(
            "%d evaluation item(s) for %d processes: some processes would get none, so the "
            "evaluation set is padded by repeating items (they count more than once in the logged "
            "means; the per-case results keep each case once)", len(dataset), num_replicas,
        )
        return None
    return UnrepeatedDistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)


def make_loader(ds: Dataset, batch_size: int, *, shuffle: bool, seed: int, num_workers: int = 0,
                samples_per_epoch: int | None = None, trainer: Any = None,
                sampler: Sampler | None = None) -> MonaiDataLoader:
    """The DataLoader of a data module. ``shuffle``: the training stream (:class:`StreamSampler`;
    an epoch is ``samples_per_epoch`` items if set, else all items, or one pair per image for pair
    sets above :data:`MAX_PERMUTED`); else ``ds`` in order (or by ``sampler``)."""
    if shuffle:
        # Training order: a resumable stream that depends only on the seed and on how many
        # batches were trained, so that a run resumed from any checkpoint sees the batches of
        # an uninterrupted run. Pair sets too large to permute are sampled with replacement.
        n = len(ds)  # type: ignore[arg-type]
        huge = n > MAX_PERMUTED
        num = samples_per_epoch or (getattr(ds, "n", n) if huge else n)
        if isinstance(ds, PairsWithLabeled) and huge and not samples_per_epoch:
            num = ds.pairs.n
        done = lightning_batches_done(trainer) if trainer is not None else None
        ds = StreamDataset(ds, seed=seed)
        sampler = StreamSampler(num, batch_size, batches_done=done)
    return MonaiDataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed),
        drop_last=False,
        collate_fn=default_collate,
    )
