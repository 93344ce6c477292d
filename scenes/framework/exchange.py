"""A real question and the model's real answer, read from a recorded run, and the model's name as
the narrator says it: the opening's words, never typed in.

    ex = exchange(recorded("seed"))
    ex.question, ex.answer    # "What is 2 plus 2?", "The answer to this classic math problem is 4."
    model_words(trace)        # "SmolLM2, a 135-million-parameter model" (its registry entry)

The question is a chat request's message, checked to be inside the prompt the model read (the
arrival's prompt text); the answer is that request's output text once the run is over.
"""

from __future__ import annotations

from dataclasses import dataclass

from astrai.models import MODELS
from astrai.trace import Trace
from astrai.trace.events import Arrive


@dataclass(frozen=True)
class Exchange:
    task: str  # the request's name in the run
    question: str  # its chat message, as the model read it
    answer: str  # what the model wrote


def exchanges(trace: Trace) -> list[Exchange]:
    """Every chat request of the run with a non-empty answer, in the workload's order."""
    read = {e.task: e.prompt_text or "" for e in trace.events if isinstance(e, Arrive)}
    out_text = trace.events[-1].state.get("output_text", {}) if trace.events else {}
    out = []
    for r in trace.workload.get("request", []):
        question, name = r.get("chat"), r.get("name")
        answer = " ".join(str(out_text.get(name, "")).split())
        if isinstance(question, str) and question.strip() and question in read.get(name, "") \
                and answer:
            out.append(Exchange(name, " ".join(question.split()), answer))
    return out


def exchange(trace: Trace) -> Exchange | None:
    """The shortest exchange of the run whose answer ends a sentence (a whole answer, not one
    cut by its token budget), else the shortest; None when the run has no chat request."""
    found = exchanges(trace)
    whole = [x for x in found if x.answer.endswith((".", "!", "?"))] or found
    return min(whole, key=lambda x: len(x.question) + len(x.answer), default=None)


def model_words(trace: Trace, size: bool = True) -> str | None:
    """'SmolLM2, a 135-million-parameter model' (or with size=False 'SmolLM2'): the run's named
    model as the narrator says it, from its registry entry; None for any other model."""
    src = MODELS.get(str(trace.workload.get("model", {}).get("checkpoint")))
    if src is None or not src.family or (size and not src.parameters):
        return None
    if not size:
        return src.family
    return f"{src.family}, a {round(src.parameters / 1e6)}-million-parameter model"


def model_label(trace: Trace) -> str | None:
    """The run's named model as shown: 'SmolLM2-135M-Instruct'; None for any other model."""
    src = MODELS.get(str(trace.workload.get("model", {}).get("checkpoint")))
    return src.label if src is not None and src.label else None
