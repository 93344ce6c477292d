"""astrai: a paged KV cache and a continuous-batching scheduler, recorded for animation."""
