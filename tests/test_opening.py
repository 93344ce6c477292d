"""The opening's words are the run's: the title card and the teaser's hook quote a real question
and the model's real answer from the first scene's recorded run, and name the model from its
registry entry. Expected words are read here from the trace and the registry, never from the
scenes' code; a forged answer is said as forged."""

from __future__ import annotations

import copy
import math

import pytest

pytest.importorskip("manim")

from manim import config  # noqa: E402
from scene_checks import SMOKE, render  # noqa: E402

from astrai.checkpoint import read_config, tensor_names  # noqa: E402
from astrai.models import MODELS  # noqa: E402
from astrai.models.store import check  # noqa: E402
from astrai.trace import recorded  # noqa: E402
from astrai.trace.events import Arrive  # noqa: E402
from astrai.workload import parse_workload  # noqa: E402
from scenes.cards import TitleCard  # noqa: E402
from scenes.framework.cues import Timed, problems  # noqa: E402
from scenes.framework.exchange import exchange  # noqa: E402
from scenes.paged_cache import HOOK, PagedCacheScene, hook  # noqa: E402
from scenes.storyboard import STORYBOARD  # noqa: E402

NAME = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def trace():
    """The first storyboard scene's run (the opening quotes it), from the trace store."""
    assert STORYBOARD[0] == ("scenes.paged_cache", "PagedCacheScene")
    return recorded(PagedCacheScene.WORKLOAD)


def finals(trace) -> dict[str, str]:
    return trace.events[-1].state["output_text"]


def chats(trace) -> dict[str, str]:
    return {r["name"]: r["chat"] for r in trace.workload["request"] if "chat" in r}


def test_the_registry_counts_the_models_own_parameters():
    if check(NAME) is not None:
        pytest.skip("the model is not converted here (make setup)")
    config_ = read_config(NAME).config
    assert MODELS[NAME].parameters == sum(math.prod(s) for s in tensor_names(config_).values())
    assert MODELS[NAME].label and MODELS[NAME].label in MODELS[NAME].title
    assert MODELS[NAME].family and MODELS[NAME].label.startswith(MODELS[NAME].family)


def test_the_quoted_exchange_is_a_question_the_model_read_and_its_answer(trace):
    ex = exchange(trace)
    assert ex is not None
    read = next(e.prompt_text for e in trace.events if isinstance(e, Arrive) and e.task == ex.task)
    assert ex.question == chats(trace)[ex.task] and ex.question in read
    assert ex.answer == finals(trace)[ex.task].strip()
    # a whole answer, and the shortest of those: the one that reads in a few seconds
    whole = [t for t in chats(trace) if finals(trace)[t].strip().endswith((".", "!", "?"))]
    assert ex.task in whole
    assert len(ex.question) + len(ex.answer) == min(
        len(chats(trace)[t]) + len(finals(trace)[t].strip()) for t in whole)


def said(scene) -> list[str]:
    return [line.text for _, line in scene.lines]


def check_subtitles(scene) -> None:
    """The subtitles are exactly the spoken words, within the reading limits."""
    words = " ".join(said(scene)).split()
    assert " ".join(c[2].replace("\n", " ") for c in scene.cues).split() == words
    cues = [Timed(start, start + shown, text) for start, shown, text in scene.cues]
    assert problems(cues, 1 / config.frame_rate) == []


def test_the_title_card_names_the_model_and_says_the_real_exchange(trace, tmp_path):
    card = render(TitleCard, tmp_path, trace=trace)
    src = MODELS[trace.workload["model"]["checkpoint"]]
    ex = exchange(trace)
    lines = said(card)
    assert lines[0] == (f'Asked "{ex.question}", {src.family}, a '
                        f'{round(src.parameters / 1e6)}-million-parameter model, answered: '
                        f'"{ex.answer}"')
    assert lines[-1].endswith("No number and no word is typed in.")
    check_subtitles(card)


def test_a_forged_answer_is_said_as_forged(trace, tmp_path):
    forged = copy.deepcopy(trace)
    task = exchange(trace).task
    forged.events[-1].state["output_text"][task] = "Four."
    card = render(TitleCard, tmp_path, trace=forged)
    assert said(card)[0].endswith('answered: "Four."')
    assert hook(forged).split(' answers: "', 1)[1].startswith('Four."')


def test_the_teasers_hook_is_the_same_exchange_in_a_few_seconds(trace):
    ex = exchange(trace)
    family = MODELS[trace.workload["model"]["checkpoint"]].family
    line = hook(trace)
    assert line.startswith(f'Asked "{ex.question}", {family} answers: "{ex.answer}" ')
    assert len(line) <= 170  # about 11 s of speech: the teaser's first shot is at most 12.5


def test_a_run_without_chat_requests_keeps_the_general_words(tmp_path):
    import tomllib

    plain = recorded(parse_workload(tomllib.loads(SMOKE), "smoke"))
    assert exchange(plain) is None and hook(plain) == HOOK
    card = render(TitleCard, tmp_path, trace=plain)
    assert not said(card)[0].startswith("Asked")
    check_subtitles(card)
