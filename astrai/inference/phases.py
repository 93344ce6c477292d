"""The phases a trace's events happen in: the four of a scheduler step, in order, and the two
the recorder adds around them (before the first step, and between steps when a request comes).

A `StrEnum`: the engine hands members to its observer and compares with them; a member equals
its name as a string, which is what a trace holds (the recorder writes `str(phase)`, the plain
name, so a recorded trace and one loaded from its file hold the same values).
"""

from __future__ import annotations

from enum import StrEnum


class StepPhase(StrEnum):
    INIT = "init"  # attached, before any step: the constructors' calls
    ARRIVE = "arrive"  # a request submitted between steps
    CLEANUP = "cleanup"
    REFILL = "refill"
    PREFILL = "prefill"
    DECODE = "decode"


# The phases of one step, in order (the one place they are ordered).
STEP_PHASES = (StepPhase.CLEANUP, StepPhase.REFILL, StepPhase.PREFILL, StepPhase.DECODE)
