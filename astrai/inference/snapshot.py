"""Snapshots of a PagedCache: what an `atomic()` block puts back when something escapes it.

A snapshot saves each part's declared STATE (O(pages), not K/V) and, while it is open, the K/V of
every page taken that was not free when it was taken (a cached prefix page evicted, a page a
preempted request held): pages free then hold nothing anyone reads.

A snapshot belongs to the cache that took it and is open until it is restored or its block ends.
Blocks nest (a caller's block around `Scheduler.step()`, which runs in a block of its own), so a
cache keeps a stack of open snapshots and every open one keeps, for itself, the pages taken
after it: when an inner block completes, its snapshot closes, and the outer one still holds the
K/V of the prefix pages the inner step evicted, to put back if the outer block fails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from astrai.errors import BadSnapshot
from astrai.inference.allocator import was_free

if TYPE_CHECKING:
    from astrai.inference.cache import PagedCache
    from astrai.inference.kv import KVStore


class Snapshot:
    """What `PagedCache.snapshot` saved: the cache it belongs to, each part's declared STATE
    (the free bits then among it), and the K/V of pages taken since that were not free then
    (filled in as taken)."""

    __slots__ = ("cache", "allocator", "prefix", "kept")

    def __init__(self, cache: PagedCache):
        self.cache = cache
        self.allocator = cache.allocator.snapshot()
        self.prefix = cache.prefix.snapshot()
        self.kept: dict[int, tuple] = {}


class Snapshots:
    """The open snapshots of one cache, outermost first."""

    __slots__ = ("open",)

    def __init__(self):
        self.open: list[Snapshot] = []

    def take(self, cache: PagedCache) -> Snapshot:
        snap = Snapshot(cache)
        self.open.append(snap)
        return snap

    def keep(self, idx: int, kv: KVStore) -> None:
        """Page idx is being taken: each open snapshot it was not free in keeps its K/V as
        they are now (one copy, shared: nothing writes to a kept copy)."""
        page = None
        for snap in self.open:
            if idx not in snap.kept and not was_free(snap.allocator, idx):
                if page is None:
                    page = kv.page(idx)
                snap.kept[idx] = page

    def opened(self, snap: object, cache: PagedCache) -> int:
        """Where `snap` stands among the open snapshots; BadSnapshot, naming why, if it is not
        one of them (another cache's, already restored, or its block ended)."""
        if not isinstance(snap, Snapshot):
            raise BadSnapshot("restore needs a snapshot this cache took, got "
                              f"{type(snap).__name__}")
        if snap.cache is not cache:
            raise BadSnapshot(f"restore: the snapshot was taken of another cache "
                              f"({snap.cache!r}); a snapshot belongs to the cache that took it")
        for i, s in enumerate(self.open):
            if s is snap:
                return i
        raise BadSnapshot("restore: the snapshot is closed (restored already, or its atomic() "
                          "block ended): the K/V of pages taken since were not kept")

    def is_open(self, snap: Snapshot) -> bool:
        return any(s is snap for s in self.open)

    def close(self, snap: Snapshot) -> None:
        """`snap` and every snapshot opened after it stop keeping pages."""
        for i, s in enumerate(self.open):
            if s is snap:
                del self.open[i:]
                return
