"""Engine anchors: every line of engine source a scene's code panel marks, named once.

An anchor is (name, file, fn, effect): `fn` is a function's qualname in an engine file, and
`effect` the source fragments (in order of preference) naming the line that does what the beat
shows; the panel marks the first of them found on a line that ran. A fragment with a newline
spans consecutive lines (each part on its line) and names the last, for a line too plain to be
told apart on its own (a `break`). Scenes and the beat registry refer to anchors by
name and never spell engine source themselves, so when the engine changes, this table is the
one place to update, and `problems()` (run by the tests) names every entry it no longer fits.

Source is read as text through astrai.trace.source; nothing here imports the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from astrai.trace import source as engine_source

CACHE = "astrai/inference/cache.py"
ALLOC = "astrai/inference/allocator.py"
PREFIX = "astrai/inference/prefix.py"
KV = "astrai/inference/kv.py"
SCHED = "astrai/inference/scheduler.py"
MODEL = "astrai/model.py"

# Words on a line that make it notification or recording code, never the work a beat shows.
NOT_WORK = ("listener", "observer")


@dataclass(frozen=True)
class Anchor:
    name: str
    file: str
    fn: str
    effect: tuple[str, ...]


def _table(*anchors: Anchor) -> dict[str, Anchor]:
    table: dict[str, Anchor] = {}
    for a in anchors:
        if a.name in table:
            raise ValueError(f"engine anchor {a.name!r} is named twice")
        table[a.name] = a
    return table


ANCHORS: dict[str, Anchor] = _table(
    # The K/V store and the flat slots a write goes to.
    Anchor("store.shape", KV, "KVStore.__init__", ("shape = (n_layers, n_pages + 1",)),
    Anchor("slots.flat_index", KV, "KVStore.slot_index", ("return (page * ps",)),
    Anchor("slots.null_page", KV, "KVStore.slot_index", ("page = torch.where(valid",)),
    Anchor("write.index_copy", KV, "KVStore.write_slots",
           ("._k_slots[layer_id].index_copy_(",)),
    Anchor("gather.index", KV, "KVStore.gather_index", ("return torch.where(cols < 0",)),
    Anchor("gather.select", KV, "KVStore.gather_pages",
           ("torch.index_select(self._k_pages",)),
    Anchor("gather.cut", KV, "KVStore.gather_pages", ("k = k_out.view(",)),
    Anchor("view.init", KV, "CacheView.__init__", ("self.page_table = page_table",)),
    Anchor("view.write", KV, "CacheView.write",
           ("cache.write_slots(layer_id, self._slots, k, v)",)),
    Anchor("cow.copy_kv", KV, "KVStore.copy_page", ("self._k_store[:, dst",)),
    # The allocator: free bits, refcounts, the LRU of cached pages.
    Anchor("pages_for.ceil", CACHE, "pages_for",
           ("return (n_tokens + page_size - 1) // page_size",)),
    # the lowest free bit cleared (with none free, alloc_n evicts: evict.pop_lru)
    Anchor("take.lowest_free", ALLOC, "PageAllocator._take", ("word ^= lsb",)),
    # a cached page revived out of the LRU; else one more holder
    Anchor("share.inc_ref", CACHE, "PagedCache.inc_ref",
           ("self.prefix.revive(idx)", "self._refs[idx] += 1")),
    Anchor("evict.pop_lru", PREFIX, "PrefixIndex.evict_lru",
           ("idx, _ = self._lru.popitem(last=False)",)),
    # free again, else kept cached, else one holder fewer: whichever ran
    Anchor("free.drop_ref", CACHE, "PagedCache.free",
           ("self.allocator.release(idx)", "self.prefix.park(idx)", "self._refs[idx] = refs")),
    Anchor("free.keep_cached", CACHE, "PagedCache.free", ("self.prefix.park(idx)",)),
    # The prefix index.
    Anchor("record.chunk_keys", PREFIX, "PrefixIndex.record_prefix",
           ("chunks = list(self._chunks(token_ids))",)),
    Anchor("record.store_entry", PREFIX, "PrefixIndex.record_prefix",
           ("self._entries[page] = entry",)),
    Anchor("lookup.probe", PREFIX, "PrefixIndex.lookup_prefix", ("self._page_of_key.get(key)",)),
    Anchor("lookup.stop_on_miss", PREFIX, "PrefixIndex.lookup_prefix",
           ("if page is None:\nbreak",)),
    # The scheduler.
    Anchor("submit.enqueue", SCHED, "Scheduler.submit", ("self.waiting.append(task)",)),
    Anchor("cleanup.find_finished", SCHED, "Scheduler._cleanup",
           ("for task in [t for t in self.running",)),
    Anchor("cleanup.release", SCHED, "Scheduler._cleanup", ("self._release(task)",)),
    Anchor("fit.compare", SCHED, "Scheduler._fit", ("if needed > available:",)),
    Anchor("fit.skip_last_token", SCHED, "Scheduler._fit", ("lookup_prefix(tokens[:-1])",)),
    Anchor("prefill.chunk", SCHED, "Scheduler._prefill", ("chunks = ",)),
    Anchor("grow.alloc", SCHED, "Scheduler._grow", ("got = self.cache.alloc_n(1",)),
    Anchor("grow.pick_victim", SCHED, "Scheduler._grow", ("victim = self.running[-1]",)),
    Anchor("preempt.requeue", SCHED, "Scheduler._preempt", ("self.waiting.appendleft(task)",)),
    Anchor("forward.finish", SCHED, "Scheduler._forward", ("task.status = Status.FINISHED",)),
    Anchor("fork.share_pages", SCHED, "Scheduler._fork", ("self.cache.inc_ref",)),
    Anchor("cow.drop_shared", SCHED, "Scheduler._copy_on_write", ("cache.free(src,",)),
    # The model (the write/gather scene's attention).
    Anchor("model.attend", MODEL, "TinyModel.forward", ("o = F.scaled_dot_product_attention(",)),
)


def anchor(name: str) -> Anchor:
    """The entry named `name`; LookupError naming it if there is none."""
    try:
        return ANCHORS[name]
    except KeyError:
        raise LookupError(f"no engine anchor named {name!r}") from None


def fragment_lines(fragment: str, source: Sequence[str]) -> list[int]:
    """Rows of `source` that `fragment` names, in order (see the module doc for newlines)."""
    parts = fragment.split("\n")
    n = len(parts)
    return [k + n - 1 for k in range(len(source) - n + 1)
            if all(part in source[k + j] for j, part in enumerate(parts))]


def marked_line(a: Anchor, source: Sequence[str], start: int,
                ran: Collection[int] | None = None) -> int | None:
    """The absolute line the anchor marks in `source` (a function's lines, the first numbered
    `start`): that of the first effect fragment found on a line in `ran` (any line if None);
    None if no fragment is."""
    for fragment in a.effect:
        for k in fragment_lines(fragment, source):
            if ran is None or start + k in ran:
                return start + k
    return None


def engine_lines(file: str, fn: str) -> list[str] | None:
    """The source lines of function `fn` of a panel file, read as text; None if there is none."""
    if file not in engine_source.PANEL_FILES or fn not in engine_source.functions(file):
        return None
    return engine_source.source_of(file, fn)[0]


def problems(anchors: Iterable[Anchor] | None = None,
             lines_of: Callable[[str, str], list[str] | None] = engine_lines) -> list[str]:
    """What no longer fits the source, one message per fault, each starting with the entry's
    name: its function is gone from its file, an effect fragment is on no line of it or on
    more than one, or the line it names is notification code."""
    out = []
    for a in ANCHORS.values() if anchors is None else anchors:
        lines = lines_of(a.file, a.fn)
        if lines is None:
            out.append(f"{a.name}: {a.fn} is not a function defined in {a.file}")
            continue
        if not a.effect:
            out.append(f"{a.name}: names no line of {a.fn}")
        for fragment in a.effect:
            hits = fragment_lines(fragment, lines)
            if len(hits) != 1:
                out.append(f"{a.name}: {fragment!r} is on {len(hits)} lines of {a.fn} "
                           f"({a.file}), not exactly one")
            elif any(word in lines[hits[0]] for word in NOT_WORK):
                out.append(f"{a.name}: {fragment!r} marks notification code in {a.fn}: "
                           f"{lines[hits[0]].strip()!r}")
    return out
