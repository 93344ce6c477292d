"""The storyboard's scenes, in the order the explainer plays them: (module, class).

One place lists them: `make render`, the promo and the tests read this list.
"""

STORYBOARD: list[tuple[str, str]] = [
    ("scenes.paged_cache", "PagedCacheScene"),
    ("scenes.prefix_cache", "PrefixCacheScene"),
    ("scenes.parallel_sampling", "ParallelSamplingScene"),
    ("scenes.batching", "BatchingScene"),
    ("scenes.memory_waste", "MemoryWasteScene"),
    ("scenes.preemption", "PreemptionScene"),
    ("scenes.write_gather", "WriteGatherScene"),
]
