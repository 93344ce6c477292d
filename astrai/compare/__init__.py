"""Counterfactuals as second real runs: each module runs the same requests twice through real
code (prefix caching on and off, continuous and static batching, a paged and a contiguous cache,
a tight pool and one big enough never to preempt) and reports what both runs did. Scenes and the
promo's closing card read these figures; nothing here is a formula standing in for a run.

    prefix.compare()      the prefix cache on vs off          (scenes/prefix_cache.py)
    preemption.compare()  a tight pool vs one that never preempts (scenes/preemption.py)
    batching.compare()    continuous vs static batching        (scenes/batching.py)
    memory.compare()      contiguous vs paged K/V memory        (scenes/memory_waste.py)
    sampling.compare()    n samples of one prompt vs n independent requests
                                                         (scenes/parallel_sampling.py)
"""
