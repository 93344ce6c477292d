"""Shared helpers for the PagedCache tests: a state snapshot and an `unchanged` guard."""

from __future__ import annotations  # noqa: I001  (astrai before torch: see astrai/__init__)

import os
from contextlib import contextmanager

import pytest

import astrai  # noqa: F401
import torch

from astrai.inference.cache import PagedCache

# Scenes built in tests are paced by the narrator's estimate (NARRATION=off) unless a test asks
# for the real voice (tests/test_voice.py and the promo smoke render synthesize for real).
os.environ.setdefault("NARRATION", "off")


def cache_state(cache: PagedCache) -> dict:
    """Everything observable about the allocator and prefix cache (not the K/V contents)."""
    return {
        "free_mask": cache.free_mask,
        "refs": cache.refs,
        "cached": cache.cached_pages,
        "n_free": cache.n_free,
        "n_cached": cache.n_cached,
        "n_used": cache.n_used,
        "n_available": cache.n_available,
        "recorded": tuple(p for p in range(cache.n_pages) if cache.is_recorded(p)),
    }


@contextmanager
def _unchanged(cache: PagedCache, *lookups):
    """Assert the cache state (and the given prefix lookups) is the same after the block."""
    before = cache_state(cache)
    hits = [cache.lookup_prefix(t) for t in lookups]
    yield
    assert cache_state(cache) == before
    assert [cache.lookup_prefix(t) for t in lookups] == hits
    cache.check()


@pytest.fixture
def unchanged():
    return _unchanged


@pytest.fixture
def state():
    return cache_state


def make_cache(n_pages: int = 8, page_size: int = 4, **kw) -> PagedCache:
    kw.setdefault("n_layers", 1)
    kw.setdefault("n_kv_heads", 1)
    kw.setdefault("head_dim", 2)
    return PagedCache(n_pages=n_pages, page_size=page_size, **kw)


@pytest.fixture
def new_cache():
    return make_cache


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def _dense_attention(model, tokens: list[int], layer: int = 0):
    """Scores and softmax weights [n_heads, len(tokens)] of the last token's query at `layer`,
    computed over the whole sequence from position 0 with no cache (the reference a captured
    decode step's attention must equal). Layer 0 only: later layers need the full forward."""
    if layer != 0:
        raise ValueError("the dense reference covers layer 0")
    import math

    import torch.nn.functional as F

    ids = torch.tensor([tokens], dtype=torch.int64)
    pos = torch.arange(len(tokens)).view(1, -1)
    cos, sin = model._rotary(pos)
    q, k, _ = model._qkv(model.layers[0], F.embedding(ids, model.embed), cos, sin)
    k = k.repeat_interleave(model.n_rep, dim=2)  # [1, S, n_heads, D]
    scores = torch.einsum("hd,shd->hs", q[0, -1].float(), k[0].float()) / math.sqrt(q.shape[-1])
    return scores, torch.softmax(scores, dim=-1)


@pytest.fixture
def dense_attention():
    return _dense_attention


@pytest.fixture(scope="session")
def smoke_promo(tmp_path_factory):
    """The smoke promo, rendered and narrated for real once a session: a title card, then a
    chapter card and the paged-cache scene on a one-request workload, at 480p15, joined twice
    (the second time every part is up to date). No WebM: tests that need one encode it."""
    from types import SimpleNamespace

    from scene_checks import SMOKE

    from promo import parts as P
    from promo.build import build

    d = tmp_path_factory.mktemp("promo")
    wl = d / "smoke.toml"
    wl.write_text(SMOKE)
    module, cls = "scenes.paged_cache", "PagedCacheScene"
    parts = [P.title_part("teaser"), *P.scene_parts(module, cls, 1, "full", str(wl))]
    was = os.environ.get("NARRATION")
    os.environ["NARRATION"] = "on"  # narrated for real: the voice is part of set-up
    try:
        first = build(("smoke",), "l", d / "out", jobs=2, webm=False, plans={"smoke": parts},
                      log=lambda *_: None)[0]
        again = build(("smoke",), "l", d / "out", jobs=2, webm=False, plans={"smoke": parts},
                      log=lambda *_: None)[0]
    finally:
        os.environ["NARRATION"] = was if was is not None else "off"
    return SimpleNamespace(cut=first, again=again, parts=parts, dir=d / "out")


# A seeded one-layer model on 6 pages of 4 slots: two requests share an 8-token prefix (share,
# record, cache) and grow in decode. Tests that need a small prefix-cache run start from it.
TOY_PREFIX = {
    "name": "toy",
    "cache": {"n_pages": 6, "page_size": 4},
    "model": {"n_layers": 1, "d_model": 16, "n_heads": 2, "n_kv_heads": 1, "head_dim": 8,
              "d_ff": 16},
    "prefixes": {"sys": 8},
    "request": [
        {"name": "a", "prefix": "sys", "prompt_len": 10, "max_new_tokens": 6},
        {"name": "b", "prefix": "sys", "prompt_len": 9, "max_new_tokens": 9, "arrival": 1},
    ],
}

def tiny_twin(wl):
    """The same requests (token ids, lengths, arrivals) on a one-layer seeded model with the
    real model's vocabulary. The scheduler stops a request at max_new_tokens alone, so the
    twin allocates, shares, copies and preempts exactly as the real run does, in a fraction
    of its time: tests that check a comparison against live runs use it."""
    import dataclasses

    from astrai.model import ModelConfig

    vocab = max([256] + [t + 1 for r in wl.requests for t in r.prompt])
    model = ModelConfig(vocab_size=vocab, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1,
                        head_dim=8, d_ff=16)
    requests = tuple(dataclasses.replace(r, text=None, chat=None, system=None)
                     for r in wl.requests)
    return dataclasses.replace(wl, name=f"{wl.name}-twin", checkpoint=None, model=model,
                               requests=requests, dtype="float32")


# With workers (pytest-xdist, `-n 2` in pyproject.toml), the tests of one file run on one
# worker, so its module fixtures are built once; the files that render the smoke promo or need
# the closing card's figures share one worker too: the promo is rendered once a session and each
# comparison's contiguous or static run once a process (astrai/compare/once.py).
FIGURES = {"test_promo.py", "test_site.py", "test_compare_memory.py", "test_compare_batching.py",
           "test_scene_memory.py", "test_scene_batching.py", "test_scenes_unchanged.py"}


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return "figures" if file.rsplit("/", 1)[-1] in FIGURES else file

    return ByFile(config, log)
