"""Item caches for the datasets of :mod:`spdnn.data`: compute every item once per run.

Every dataset here returns, for index ``i``, a value that depends only on its constructor
arguments and ``i`` (all randomness comes from generators seeded by ``(seed, i, ...)``). Such an
item can be computed once and kept: :class:`ItemCache` holds ``n`` items of fixed shapes as
float32 tensors, filled lazily on first access, and hands out **copies**, so an item read from
the cache is bit-identical (values, dtype, shape, strides) to the one computed without it, and a
caller that modifies an item in place cannot corrupt the cache.

**Shared memory, DataLoader workers.** The cache's tensors live in shared memory
(``Tensor.share_memory_()``, allocated when the dataset is built), so DataLoader worker
processes fill the *same* cache as the main process: under ``fork`` the workers inherit the
mapping; under ``spawn``/``forkserver`` torch's multiprocessing pickler passes it to them. An
item one worker computed is a cache hit for the main process and for the workers of later
epochs. Writes are idempotent (every writer stores the same bytes for an index, and the
"filled" flag is set after the data), so concurrent fills of one index are harmless. Where
shared memory cannot be had (``/dev/shm`` missing or too small), the cache falls back to
process-local tensors: values stay the same, but items computed in a worker are then lost when
the worker exits.

**Defaults.** ``cache=None`` (every dataset's default) turns the cache on when it takes at most
:data:`CACHE_LIMIT_BYTES` (1 GiB): 512 synthetic eyes of 96 x 128 (image + mask) take 48 MiB,
512 depth crops of 80 x 264 (image + target + mask) 124 MiB. ``cache=True`` forces it on
whatever the size, ``cache=False`` off (every access computes the item, as before).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

__all__ = ["CACHE_LIMIT_BYTES", "ItemCache", "make_cache"]

CACHE_LIMIT_BYTES = 1 << 30
"""With ``cache=None`` a dataset caches its items when they take at most this many bytes."""

_SHM = "/dev/shm"


def _shm_free_bytes() -> int | None:
    """Free bytes of ``/dev/shm`` (None where it cannot be queried: then try and see)."""
    try:
        st = os.statvfs(_SHM)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


class ItemCache:
    """``n`` items, each a tuple of float32 tensors of fixed ``shapes``, filled lazily.

    Args:
        n: number of items (indices ``0 .. n-1``).
        shapes: the shape of every tensor of an item, e.g. ``[(1, 96, 128), (1, 96, 128)]``.
        shared: put the storage in shared memory (default); falls back to process-local
            memory when that fails or ``/dev/shm`` lacks room (see :attr:`shared`).

    Memory: ``n * sum(prod(shape)) * 4`` bytes (:attr:`nbytes`) plus ``n`` bytes of flags,
    allocated up front (so worker processes forked later share it).
    """

    def __init__(self, n: int, shapes: Sequence[tuple[int, ...]], shared: bool = True):
        self.n = int(n)
        self.shapes = tuple(tuple(int(d) for d in s) for s in shapes)
        self.nbytes = sum(self.n * 4 * _prod(s) for s in self.shapes)
        self.filled = torch.zeros(self.n, dtype=torch.uint8)
        self.arrays = tuple(torch.empty((self.n, *s), dtype=torch.float32) for s in self.shapes)
        self.shared = False
        if shared and self.n > 0:
            free = _shm_free_bytes()
            if free is None or free > 2 * (self.nbytes + self.n):
                try:
                    self.filled.share_memory_()
                    for a in self.arrays:
                        a.share_memory_()
                    self.shared = True
                except RuntimeError:  # no shared memory on this system: stay process-local
                    self.filled = torch.zeros(self.n, dtype=torch.uint8)
                    self.arrays = tuple(
                        torch.empty((self.n, *s), dtype=torch.float32) for s in self.shapes
                    )

    def __len__(self) -> int:
        """Number of items filled so far."""
        return int(self.filled.sum())

    def missing(self) -> list[int]:
        """Indices not filled yet, in increasing order."""
        return torch.nonzero(self.filled == 0).flatten().tolist()

    def get(self, index: int) -> tuple[torch.Tensor, ...] | None:
        """A fresh copy of item ``index``, or None if it is not cached (or out of range)."""
        if not 0 <= index < self.n or not self.filled[index]:
            return None
        return tuple(a[index].clone() for a in self.arrays)

    def put(self, index: int, item: Sequence[torch.Tensor]) -> None:
        """Store item ``index``; an item that does not match the layout is not stored."""
        if not 0 <= index < self.n or len(item) != len(self.arrays):
            return
        for t, a in zip(item, self.arrays, strict=True):
            if t.dtype != torch.float32 or tuple(t.shape) != tuple(a.shape[1:]):
                return
        for t, a in zip(item, self.arrays, strict=True):
            a[index].copy_(t)
        self.filled[index] = 1  # after the data: a reader seeing the flag sees the item

    def __repr__(self) -> str:
        where = "shared" if self.shared else "local"
        return f"ItemCache({len(self)}/{self.n} items, {self.nbytes / 2**20:.1f} MiB, {where})"


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def make_cache(cache: bool | None, n: int, shapes: Sequence[tuple[int, ...]]) -> ItemCache | None:
    """The cache a dataset of ``n`` items of ``shapes`` gets for its ``cache`` argument.

    ``True``: always; ``False``: never (None returned); ``None``: when the items take at most
    :data:`CACHE_LIMIT_BYTES`.
    """
    if cache is False or n <= 0:
        return None
    if cache is None and sum(n * 4 * _prod(tuple(s)) for s in shapes) > CACHE_LIMIT_BYTES:
        return None
    return ItemCache(n, shapes)


class CachedItems:
    """Mixin of the datasets: ``__getitem__`` through an optional :class:`ItemCache`.

    A dataset sets ``self.cache`` (an :class:`ItemCache` or None) and implements
    ``compute_item(index)``, the uncached item. Indices outside ``0 .. n-1`` always go to
    ``compute_item`` (so errors and negative indices behave as without a cache).
    """

    cache: ItemCache | None = None

    def compute_item(self, index: int) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError  # abstract

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        index = int(index)
        c = self.cache
        if c is None:
            return self.compute_item(index)
        hit = c.get(index)
        if hit is not None:
            return hit
        item = self.compute_item(index)
        c.put(index, item)
        return item

    def prefill(self, num_workers: int = 0) -> int:
        """Compute and cache every item not cached yet; returns how many were computed.

        With ``num_workers > 0`` the items are computed by that many DataLoader worker
        processes writing into the shared cache (no-op speed-up when the cache fell back to
        process-local memory: then the items are computed here). Without a cache: returns 0.
        """
        c = self.cache
        if c is None:
            return 0
        todo = c.missing()
        if not todo:
            return 0
        if num_workers > 0 and c.shared:
            from torch.utils.data import DataLoader

            loader = DataLoader(
                self, batch_size=None, sampler=todo, num_workers=num_workers, collate_fn=_discard
            )
            for _ in loader:
                pass
        else:
            for i in todo:
                self[i]
        return len(todo)


def _discard(item: object) -> None:
    """``collate_fn`` of :meth:`CachedItems.prefill`: the workers keep the items, send nothing."""
    return None
