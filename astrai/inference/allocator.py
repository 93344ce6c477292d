"""PageAllocator: which pages are free and how many holders each has.

A free bitmask in 64-page words plus a summary word with one bit per word that still has a free
page, so the lowest free page is found in O(1) (two lowest-set-bit steps) whatever the pool
size, and a refcount per page. Lowest free first keeps a small run's pages at the front of the
pool, which is what the scenes draw.

It knows nothing of prefixes, K/V or owners: a page is free (its bit set) or taken (bit clear);
a taken page with refs 0 is one the prefix index keeps cached, and only the cache composing
both can say so. Callers check page ids; the allocator trusts them (it is the hot path).
"""

from __future__ import annotations

from astrai.errors import DoubleFree
from astrai.inference.state import Stateful

_WORD = 64  # pages per word of the free bitmask


class PageAllocator(Stateful):
    # What a step changes, copied by snapshot() and put back by restore(); everything else on
    # an instance is fixed at construction (tests check the two lists cover every field).
    STATE = ("_words", "_summary", "n_free", "refs")
    FIXED = ("n_pages",)

    def __init__(self, n_pages: int):
        self.n_pages = n_pages
        n_words = (n_pages + _WORD - 1) // _WORD
        self._words = [(1 << _WORD) - 1] * n_words
        if n_pages % _WORD:
            self._words[-1] = (1 << (n_pages % _WORD)) - 1
        self._summary = (1 << n_words) - 1
        self.n_free = n_pages
        self.refs = [0] * n_pages

    def alloc(self) -> int:
        """Take the lowest free page with one holder; -1 if none is free."""
        idx = self._take()
        if idx >= 0:
            self.refs[idx] = 1
        return idx

    def _take(self) -> int:
        summary = self._summary
        if not summary:
            return -1
        w = (summary & -summary).bit_length() - 1  # lowest word with a free page
        word = self._words[w]
        lsb = word & -word  # its lowest set bit is the lowest free page
        word ^= lsb  # clear it: the page is taken
        self._words[w] = word
        if not word:
            self._summary = summary ^ (1 << w)
        self.n_free -= 1
        return w * _WORD + lsb.bit_length() - 1

    def free(self, idx: int) -> int:
        """Drop one holder; at 0 the page is free again. Returns the holders left."""
        refs = self.refs[idx] - 1
        if refs < 0:
            raise DoubleFree(f"free({idx}): page {idx} holds no reference")
        self.refs[idx] = refs
        if not refs:
            self.release(idx)
        return refs

    def release(self, idx: int) -> None:
        """Set the page's bit again (and its word's summary bit): the page is free."""
        w = idx >> 6
        self._words[w] |= 1 << (idx & 63)
        self._summary |= 1 << w
        self.n_free += 1

    def is_free(self, idx: int) -> bool:
        return bool(self._words[idx >> 6] >> (idx & 63) & 1)

    @property
    def free_mask(self) -> int:
        """Bit i set <=> page i is free."""
        mask = 0
        for w, word in enumerate(self._words):
            mask |= word << (w * _WORD)
        return mask

    def problems(self) -> list[str]:
        """What disagrees inside the allocator (empty if nothing does)."""
        problems = []
        mask, n = self.free_mask, self.n_pages
        if mask >> n:
            problems.append(f"mask has bits above page {n - 1}")
        n_set = bin(mask).count("1")
        if n_set != self.n_free:
            problems.append(f"n_free {self.n_free} != {n_set} set bits")
        for w, word in enumerate(self._words):
            if bool(word) != bool(self._summary >> w & 1):
                problems.append(f"summary bit {w} disagrees with word {w}")
        if self._summary >> len(self._words):
            problems.append("summary has bits past the last word")
        if any(r < 0 for r in self.refs):
            problems.append("negative refcount")
        if any(self.refs[i] for i in range(n) if mask >> i & 1):
            problems.append("a free page has holders")
        return problems
