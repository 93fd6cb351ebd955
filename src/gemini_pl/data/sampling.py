"""A resumable random sampler: the training stream is a pure function of (seed, position).

Sample indices form one endless stream: cycle c of the stream is a random permutation of the
dataset drawn from ``seed + c``; position s of the stream holds ``perm_{s // n}[s % n]``. Under
DDP rank r of w takes positions ``s·w + r``. Each time the loader starts an epoch the sampler
asks ``batches_done()`` how many batches this process has already trained on and starts the
stream right after them, so an interrupted run resumed from any checkpoint (end of epoch or
mid-epoch) sees exactly the batches that the uninterrupted run would have seen, with no state of
its own to save.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler


class StreamSampler(Sampler[int]):
    """Resumable random sampler (see module docstring).

    Args:
        dataset_len: number of items n.
        batch_size: batch size of the loader (positions advance by this per batch).
        seed: seed of the permutations.
        batches_done: callable returning the number of batches already consumed in this run
            (Lightning: ``trainer.fit_loop.epoch_loop.batch_progress.total.ready``); None → 0.
        num_replicas, rank: DDP world size and rank (None: read from torch.distributed).
        epoch_len: items per epoch per process (default n / num_replicas, rounded up).
    """

    def __init__(
        self,
        dataset_len: int,
        batch_size: int,
        seed: int = 0,
        batches_done: Callable[[], int] | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        epoch_len: int | None = None,
    ):
        if dataset_len < 1:
            raise ValueError("StreamSampler needs a non-empty dataset")
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.num_replicas = num_replicas if num_replicas is not None else (torch.distributed.get_world_size() if dist else 1)
        self.rank = rank if rank is not None else (torch.distributed.get_rank() if dist else 0)
        self.n = dataset_len
        self.batch_size = batch_size
        self.seed = seed
        self.batches_done = batches_done or (lambda: 0)
        self.epoch_len = epoch_len or -(-dataset_len // self.num_replicas)

    def __len__(self) -> int:
        return self.epoch_len

    def _cycle(self, c: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + c))

    def position_indices(self, start: int, count: int) -> list[int]:
        """Dataset indices at this rank's stream positions start … start + count − 1."""
        out: list[int] = []
        cache: dict[int, torch.Tensor] = {}
        for s in range(start, start + count):
            g = s * self.num_replicas + self.rank
            c = g // self.n
            if c not in cache:
                cache.clear()
                cache[c] = self._cycle(c)
            out.append(int(cache[c][g % self.n]))
        return out

    def __iter__(self) -> Iterator[int]:
        start = int(self.batches_done()) * self.batch_size
        # one epoch's worth of positions, produced lazily in cycle-sized chunks
        chunk = max(self.batch_size, 256)
        for first in range(start, start + self.epoch_len, chunk):
            yield from self.position_indices(first, min(chunk, start + self.epoch_len - first))


def lightning_batches_done(trainer) -> Callable[[], int]:
    """``batches_done`` for :class:`StreamSampler` from a Lightning trainer's loop progress.

    ``total.ready`` counts batches started; a checkpoint taken at the end of a training batch has
    that batch fully trained, and one taken at an epoch end has ``ready == completed``.
    """

    def done() -> int:
        try:
            return int(trainer.fit_loop.epoch_loop.batch_progress.total.ready)
        except AttributeError:
            return 0

    return done
