"""The engine: the paged KV cache and the scheduler that drives it."""
