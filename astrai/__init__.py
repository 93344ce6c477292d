"""astrai: a paged KV cache and a continuous-batching scheduler, recorded for animation."""

import os

# Torch's OpenMP threads spin while they wait for work. Where processes share the cores (the
# promo renders its parts side by side, a test run beside a render), spinning threads starve
# each other: a real-model run measured 47 s instead of 2.6 s on two loaded cores. Passive
# waiting costs nothing when the machine is idle. OpenMP reads this once, when torch loads:
# it holds for every process that imports astrai before torch (an explicit setting wins).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
