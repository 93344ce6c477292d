"""PageAllocator: which pages are free and how many holders each has.

A free bitmask in 30-page words plus a summary word with one bit per word that still has a free
page, so the lowest free page is found in O(1) (two lowest-set-bit steps) whatever the pool
size, and a refcount per page. Lowest free first keeps a small run's pages at the front of the
pool, which is what the scenes draw.

It knows nothing of prefixes, K/V or owners: a page is free (its bit set) or taken (bit clear);
a taken page with refs 0 is one the prefix index keeps cached, and only the cache composing
both can say so. Callers check page ids; the allocator trusts them (it is the hot path).

Why it is shaped so (alloc+free is a few hundred nanoseconds of interpreter work, so each step
counts): words are 30 pages because CPython's ints below 2**30 are one digit, and `&`, `^`, `-`
on those cost about half what they cost on a 64-bit word; `_low` keeps the lowest word with a
free page, so the summary is only searched when that word runs out; each page's word and bit
come from one table (a list index is cheaper than a divide); alloc is `_take` itself and free
inlines release, since a call is a good part of the cost.
"""

from __future__ import annotations

from astrai.errors import DoubleFree
from astrai.inference.state import Stateful

_WORD = 30  # pages per word of the free bitmask (one CPython int digit)
_BIT = [1 << i for i in range(_WORD)]
_POS = {bit: i for i, bit in enumerate(_BIT)}  # a one-bit value -> its position


class PageAllocator(Stateful):
    # What a step changes, copied by snapshot() and put back by restore(); everything else on
    # an instance is fixed at construction (tests check the two lists cover every field).
    STATE = ("_words", "_summary", "_low", "n_free", "refs")
    FIXED = ("n_pages", "n_words", "_where")

    def __init__(self, n_pages: int):
        self.n_pages = n_pages
        self.n_words = n_words = (n_pages + _WORD - 1) // _WORD
        # One empty word past the last: _low points at it when no page is free.
        self._words = [(1 << _WORD) - 1] * n_words + [0]
        if n_pages % _WORD:
            self._words[n_words - 1] = (1 << (n_pages % _WORD)) - 1
        self._summary = (1 << n_words) - 1
        self._low = 0  # the lowest word with a free page (n_words: none)
        self.n_free = n_pages
        self.refs = [0] * n_pages
        self._where = [(i // _WORD, _BIT[i % _WORD]) for i in range(n_pages)]  # word, bit

    def _take(self, _pos=_POS) -> int:
        """Take the lowest free page with one holder; -1 if none is free. (`_pos`, the bit ->
        position table, is a default so the hot path reads it as a local.)"""
        w = self._low
        words = self._words
        word = words[w]
        if not word:
            return -1
        lsb = word & -word  # its lowest set bit is the lowest free page
        word ^= lsb  # clear it: the page is taken
        words[w] = word
        if not word:  # the word ran out: the next one with a free page, from the summary
            summary = self._summary ^ (1 << w)
            self._summary = summary
            self._low = (summary & -summary).bit_length() - 1 if summary else self.n_words
        self.n_free -= 1
        idx = w * _WORD + _pos[lsb]
        self.refs[idx] = 1
        return idx

    alloc = _take  # one call per page on the hot path, not a wrapper around _take

    def free(self, idx: int) -> int:
        """Drop one holder; at 0 the page is free again. Returns the holders left."""
        refs = self.refs
        if refs[idx] != 1:  # shared (or held by nobody: DoubleFree)
            return self._drop(idx)
        refs[idx] = 0
        # release(idx), inlined
        w, bit = self._where[idx]
        words = self._words
        word = words[w]
        if not word:
            self._summary |= 1 << w
            if w < self._low:
                self._low = w
        words[w] = word + bit  # the bit is clear: + sets it (and is cheaper)
        self.n_free += 1
        return 0

    def _drop(self, idx: int) -> int:
        left = self.refs[idx] - 1
        if left < 0:
            raise DoubleFree(f"free({idx}): page {idx} holds no reference")
        self.refs[idx] = left
        return left

    def release(self, idx: int) -> None:
        """Set the page's bit again (and its word's summary bit): the page is free."""
        w, bit = self._where[idx]
        words = self._words
        word = words[w]
        if not word:  # the word's first free page
            self._summary |= 1 << w
            if w < self._low:
                self._low = w
        words[w] = word | bit
        self.n_free += 1

    def is_free(self, idx: int) -> bool:
        w, bit = self._where[idx]
        return bool(self._words[w] & bit)

    @property
    def free_mask(self) -> int:
        """Bit i set <=> page i is free."""
        return join_words(self._words[: self.n_words])

    def problems(self) -> list[str]:
        """What disagrees inside the allocator (empty if nothing does)."""
        problems = []
        mask, n = self.free_mask, self.n_pages
        if mask >> n:
            problems.append(f"mask has bits above page {n - 1}")
        n_set = mask.bit_count()
        if n_set != self.n_free:
            problems.append(f"n_free {self.n_free} != {n_set} set bits")
        for w, word in enumerate(self._words[: self.n_words]):
            if bool(word) != bool(self._summary >> w & 1):
                problems.append(f"summary bit {w} disagrees with word {w}")
        if self._summary >> self.n_words:
            problems.append("summary has bits past the last word")
        if self._words[self.n_words:] != [0]:
            problems.append("the word past the last has bits")
        summary = self._summary
        low = (summary & -summary).bit_length() - 1 if summary else self.n_words
        if self._low != low:
            problems.append(f"_low is word {self._low}; the lowest with a free page is {low}")
        if any(r < 0 for r in self.refs):
            problems.append("negative refcount")
        if any(self.refs[i] for i in range(n) if self.is_free(i)):
            problems.append("a free page has holders")
        return problems


def join_words(words: list[int]) -> int:
    """The words as one int, word w at bit w * 30: pairs joined level by level, so building a
    big pool's mask costs O(n log n), not the O(n^2) of or-ing each word into a growing int."""
    width = _WORD
    while len(words) > 1:
        if len(words) % 2:
            words = [*words, 0]
        words = [lo | hi << width for lo, hi in zip(words[::2], words[1::2])]
        width *= 2
    return words[0] if words else 0


def was_free(saved: tuple, idx: int) -> bool:
    """Whether page idx was free when `saved` (a PageAllocator snapshot()) was taken."""
    words = saved[PageAllocator.STATE.index("_words")]
    return bool(words[idx // _WORD] >> idx % _WORD & 1)
