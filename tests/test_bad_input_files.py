"""Hostile workload files and CLI arguments: one line naming the input, exit 2, nothing built."""

from __future__ import annotations

import copy
import errno
import os
import tomllib
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astrai import workload as workload_module
from astrai.errors import WorkloadError
from astrai.trace import __main__ as cli
from astrai.workload import (
    MAX_STEPS,
    build,
    estimate_bytes,
    load_workload,
    parse_workload,
    run_workload,
)

BASE = {
    "name": "t",
    "cache": {"n_pages": 8, "page_size": 4},
    "model": {"n_layers": 1, "d_model": 16, "n_heads": 2, "n_kv_heads": 1, "head_dim": 8,
              "d_ff": 16},
    "scheduler": {"max_batch": 2, "temperature": 0.5},
    "prefixes": {"sys": 6},
    "request": [
        {"name": "a", "prompt_len": 5, "max_new_tokens": 2},
        {"name": "b", "prefix": "sys", "prompt_len": 9, "max_new_tokens": 3, "after": "a"},
        {"name": "c", "prompt": [1, 2, 3], "max_new_tokens": 2, "arrival": 1},
    ],
}


def bad(change, *words):
    data = copy.deepcopy(BASE)
    change(data)
    with pytest.raises(WorkloadError) as info:
        parse_workload(data, "bad.toml")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("bad.toml: ")
    for w in words:
        assert w in msg
    return msg


def req(i):
    return lambda d: d["request"][i]


# ---- 7. silently accepted before ---------------------------------------------------------------

@pytest.mark.parametrize("change,words", [
    (lambda d: d["request"][2].update(prompt_len=3), ("request[2].prompt_len", "prompt")),
    (lambda d: d["request"][2].update(prompt=[True, 1]), ("request[2].prompt",)),
    (lambda d: d["scheduler"].update(max_batch=True), ("scheduler.max_batch",)),
    (lambda d: d["request"][0].update(max_new_tokens=2.0), ("request[0].max_new_tokens",)),
    (lambda d: d["request"][0].update(name="a\nfree=11111111"), ("request[0].name",
                                                                "printable")),
    (lambda d: d["request"][0].update(name="x" * 201), ("request[0].name",)),
    (lambda d: d["scheduler"].update(temperature=float("nan")), ("scheduler.temperature",)),
    (lambda d: d["scheduler"].update(temperature=float("inf")), ("scheduler.temperature",)),
])
def test_silently_accepted_inputs_are_named(change, words):
    bad(change, *words)


# ---- 5. sizes, checked before anything is generated or allocated --------------------------------

@pytest.mark.parametrize("change,field", [
    (lambda d: d["cache"].update(n_pages=10**9), "cache.n_pages"),
    (lambda d: d["cache"].update(page_size=10**9), "cache.page_size"),
    (lambda d: d["model"].update(vocab_size=10**10), "model"),
    (lambda d: d["model"].update(d_ff=10**10), "model"),
])
def test_huge_pools_and_models_are_refused_by_estimate(change, field):
    bad(change, field, "MiB")


def test_the_estimate_is_checked_against_available_memory(monkeypatch):
    data = copy.deepcopy(BASE)
    wl = parse_workload(data)
    need = estimate_bytes(wl.n_pages, wl.page_size, wl.model, wl.dtype)
    assert need > 2 * 8 * 4 * 8 * 4  # at least the K/V pool
    monkeypatch.setattr(workload_module, "available_bytes", lambda device: need)  # < 2x need
    with pytest.raises(WorkloadError, match="cache.n_pages 8"):
        parse_workload(data, "bad.toml")
    with pytest.raises(WorkloadError, match="MiB available"):
        build(wl)  # checked again for the device it is built on


@pytest.mark.parametrize("change,words", [
    (lambda d: d["request"][0].update(arrival=10**9), ("request[0].arrival", str(MAX_STEPS))),
    (lambda d: d["request"][0].update(prompt_len=10**9), ("request[0].prompt_len", "fit")),
    (lambda d: d["request"][0].update(max_new_tokens=10**9), ("request[0].prompt_len",)),
    (lambda d: d["request"][2].update(prompt=[1] * 40), ("request[2].prompt", "fit")),
    (lambda d: d["prefixes"].update(sys=10**9), ("prefixes.sys",)),
])
def test_requests_that_could_never_run_are_refused_at_parse(change, words):
    bad(change, *words)


# ---- 6. devices -------------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["meta", "bogus", "cuda:x", "mps", ""])
def test_unknown_devices_are_named(device):
    bad(lambda d: d["cache"].update(device=device), "cache.device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_named_at_build():
    data = copy.deepcopy(BASE)
    data["cache"]["device"] = "cuda"
    wl = parse_workload(data)  # a file may name CUDA: another machine may run it
    with pytest.raises(WorkloadError, match="no CUDA device"):
        build(wl)
    with pytest.raises(WorkloadError, match="no CUDA device"):
        build(parse_workload(BASE), device="cuda")


# ---- 6. the file itself -----------------------------------------------------------------------

def test_unreadable_workload_files_get_one_line(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"name = \"x\"\x00\xff")
    latin = tmp_path / "latin.toml"
    latin.write_bytes('name = "caf\u00e9"'.encode("latin-1"))
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 50_000 + "]" * 50_000)
    cases = {tmp_path: "directory", fifo: "not a regular file", binary: "binary",
             latin: "UTF-8", deep: "nested", tmp_path / "none.toml": "does not exist",
             "": "no workload named", "  ": "no workload named"}
    for path, words in cases.items():
        with pytest.raises(WorkloadError, match=words) as info:
            load_workload(path)
        assert "\n" not in str(info.value)


# ---- the large input space: mutated files -------------------------------------------------------

LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**12),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
                   st.lists(st.integers(-1, 300), max_size=4), st.dictionaries(st.text(max_size=3),
                                                                               st.integers(),
                                                                               max_size=2))


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _runs_or_is_refused(data):
    try:
        wl = parse_workload(data, "m.toml")
    except WorkloadError as e:
        assert "\n" not in str(e)
        return
    big = estimate_bytes(wl.n_pages, wl.page_size, wl.model, wl.dtype) > 2**25
    if big or max(r.arrival for r in wl.requests) > 100:
        return  # valid, and slow to run: parsing it was the point
    _, _, scheduler = build(wl)
    outputs = run_workload(wl, scheduler, max_steps=2_000)
    assert {r.name: r.max_new_tokens for r in wl.requests} == {
        k: len(v) for k, v in outputs.items()
    }
    scheduler.cache.check()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_workloads_run_or_are_named(data):
    """Any one value replaced, or a field added: WorkloadError, or a workload that runs."""
    doc = copy.deepcopy(BASE)
    path = data.draw(st.sampled_from([p for p in _paths(doc) if p]))
    node = doc
    for k in path[:-1]:
        node = node[k]
    if data.draw(st.booleans()) or not isinstance(node, dict):
        node[path[-1]] = data.draw(LEAVES)
    else:
        node[data.draw(st.sampled_from(["prompt", "prompt_len", "arrival", "after", "x"]))] = \
            data.draw(LEAVES)
    _runs_or_is_refused(doc)


SEED_TEXT = (Path(workload_module.__file__).parent / "workloads" / "seed.toml").read_text()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(at=st.integers(0, len(SEED_TEXT)), junk=st.binary(min_size=1, max_size=4))
def test_mutated_toml_bytes_load_or_are_named(tmp_path_factory, at, junk):
    path = tmp_path_factory.mktemp("m") / "m.toml"
    raw = SEED_TEXT.encode()
    path.write_bytes(raw[:at] + junk + raw[at:])
    try:
        wl = load_workload(path)
    except WorkloadError as e:
        assert "\n" not in str(e)
        return
    assert wl.n_pages > 0 and wl.requests
    # Same as parsing the text ourselves: nothing was read from anywhere else.
    assert wl == parse_workload(tomllib.loads(path.read_text()), "m.toml")


# ---- 6. the CLI --------------------------------------------------------------------------------

def run_cli(capsys, *argv):
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def no_run(monkeypatch):
    """The output is checked before the run: a run here would be a failure."""
    def boom(*a, **k):
        raise AssertionError("the workload ran before the output was checked")

    monkeypatch.setattr(cli, "record", boom)


def test_cli_checks_the_output_before_running(tmp_path, capsys, no_run):
    cases = {str(tmp_path): "is a directory", str(tmp_path / "no" / "t.json"): "does not exist",
             "/dev/full": "not a regular file", "": "no output file"}
    for out, words in cases.items():
        rc, stdout, err = run_cli(capsys, "seed", "-o", out, "-q")
        assert rc == 2 and stdout == ""
        assert err.startswith("error: ") and words in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_write_failure_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    target = tmp_path / "t.json"
    target.write_text("old")

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    small = tmp_path / "w.toml"
    small.write_text(tomli_w(BASE))
    monkeypatch.setattr(Path, "write_text", full)
    rc, _, err = run_cli(capsys, str(small), "-o", str(target), "-q")
    monkeypatch.undo()
    assert rc == 2 and "No space left" in err and err.count("\n") == 1
    assert target.read_text() == "old"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json", "w.toml"]  # no temp file


@pytest.mark.parametrize("argv,words", [
    (("",), "no workload named"),
    (("nothing",), "no workload 'nothing'"),
    (("seed", "--device", "bogus"), "device 'bogus'"),
    (("seed", "--device", "meta"), "device 'meta'"),
])
def test_cli_errors_are_one_line_exit_2(capsys, argv, words):
    rc, stdout, err = run_cli(capsys, *argv)
    assert rc == 2 and stdout == "" and words in err and err.count("\n") == 1


def test_cli_refuses_a_fifo_workload_without_blocking(tmp_path, capsys):
    fifo = tmp_path / "w.toml"
    os.mkfifo(fifo)
    rc, _, err = run_cli(capsys, str(fifo))
    assert rc == 2 and "not a regular file" in err


def test_cli_writes_the_trace_it_printed(tmp_path, capsys):
    small = tmp_path / "w.toml"
    small.write_text(tomli_w(BASE))
    rc, stdout, _ = run_cli(capsys, str(small), "-o", str(tmp_path / "t.json"))
    assert rc == 0 and stdout.startswith("workload t:")
    from astrai.trace import load_trace
    assert load_trace(tmp_path / "t.json").outputs.keys() == {"a", "b", "c"}


def tomli_w(data: dict) -> str:
    """Just enough TOML for BASE (no TOML writer ships with Python)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, (dict, list))]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += [f"[{k}]"] + [f"{a} = {value(b)}" for a, b in v.items()]
    for item in data["request"]:
        lines += ["[[request]]"] + [f"{a} = {value(b)}" for a, b in item.items()]
    return "\n".join(lines) + "\n"


# ---- never delete or overwrite what the program did not write ----------------------------------

from astrai.files import Output, replacing, write_text  # noqa: E402
from astrai.folders import MANIFEST, new_folder, not_owned, remove_owned  # noqa: E402


class Refused(Exception):
    pass


def test_a_symlinked_output_is_refused_and_its_target_untouched(tmp_path):
    private = tmp_path / "private.txt"
    private.write_text("secret")
    link = tmp_path / "t.json"
    link.symlink_to(private)
    with pytest.raises(Refused, match="t.json: is a symbolic link"):
        Output(link, Refused)
    with pytest.raises(Refused, match="symbolic link"):
        write_text(link, "new", Refused)
    assert link.is_symlink() and private.read_text() == "secret"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["private.txt", "t.json"]


def test_an_output_turned_into_a_symlink_while_writing_is_not_replaced(tmp_path):
    target, private = tmp_path / "out.mp4", tmp_path / "private"
    private.write_text("secret")
    with pytest.raises(Refused, match="symbolic link"):
        with replacing(target, Refused, suffix=".mp4") as tmp:
            assert tmp.suffix == ".mp4" and tmp.parent == tmp_path and tmp.exists()
            tmp.write_text("new")
            target.symlink_to(private)  # swapped in while the writer ran
    assert target.is_symlink() and private.read_text() == "secret"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "private"]


def test_replacing_writes_whole_or_leaves_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with replacing(target, Refused) as tmp:
            tmp.write_text("half")
            raise RuntimeError("the writer failed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    with replacing(target, Refused) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_the_temporary_file_never_takes_an_existing_name(tmp_path):
    """Each write makes a fresh name: files already beside the target are not touched."""
    target = tmp_path / "a.txt"
    theirs = {tmp_path / n: n for n in ("a.tmp.txt", "a.txt.tmp", ".a.txt.tmp", "a.txt.new")}
    for p, text in theirs.items():
        p.write_text(text)
    for _ in range(3):
        write_text(target, "x", Refused)
    assert all(p.read_text() == text for p, text in theirs.items())
    assert len(list(tmp_path.iterdir())) == len(theirs) + 1


def _fill(folder: Path, text: str = "page") -> None:
    (folder / "index.html").write_text(text)
    (folder / "scenes").mkdir()
    (folder / "scenes" / "a.mp4").write_text("clip")


def test_a_new_folder_is_marked_as_ours_and_replaced_whole(tmp_path):
    out = tmp_path / "site"
    with new_folder(out, Refused) as tmp:
        assert tmp.parent == tmp_path and tmp != out and tmp.name.startswith(".site.")
        _fill(tmp, "one")
    assert (out / MANIFEST).is_file() and not_owned(out) is None
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # not mkdtemp's 0700
    with new_folder(out, Refused) as tmp:
        (tmp / "index.html").write_text("two")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "index.html"]
    assert (out / "index.html").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no temporary folder left


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("change,words", [
    (lambda out: (out / "notes.txt").write_text("mine"), "holds notes.txt, which this"),
    (lambda out: (out / "scenes" / "mine").mkdir(), "holds scenes/mine/"),
    (lambda out: (out / "index.html").write_text("edited by hand"), "index.html, changed"),
    (lambda out: (out / MANIFEST).write_text("{"), f"no {MANIFEST}"),
    (lambda out: (out / MANIFEST).unlink(), f"no {MANIFEST}"),
    (lambda out: (out / "scenes" / "a.mp4").unlink() or (out / "scenes" / "a.mp4").symlink_to(
        "/etc/hostname"), "holds scenes/a.mp4, which"),
])
def test_a_folder_holding_anything_else_is_refused_by_name_and_kept(tmp_path, change, words):
    out = tmp_path / "site"
    with new_folder(out, Refused) as tmp:
        _fill(tmp)
    change(out)
    before = sorted((str(p.relative_to(out)), p.is_symlink() or p.is_dir() or p.read_bytes())
                    for p in out.rglob("*"))
    for attempt in (lambda: new_folder(out, Refused).__enter__(),
                    lambda: remove_owned(out, Refused)):
        with pytest.raises(Refused, match=words) as info:
            attempt()
        assert str(out) in str(info.value) and "\n" not in str(info.value)
    after = sorted((str(p.relative_to(out)), p.is_symlink() or p.is_dir() or p.read_bytes())
                   for p in out.rglob("*"))
    assert after == before and sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_a_user_folder_and_a_sibling_named_like_a_temporary_are_never_touched(tmp_path):
    """The old page build deleted DIR (it held an index.html) and DIR.new with everything."""
    out, sibling = tmp_path / "site", tmp_path / "site.new"
    for d in (out, sibling):
        d.mkdir()
        (d / "index.html").write_text("my own page")
        (d / "notes.txt").write_text("mine")
    with pytest.raises(Refused, match="did not write"):
        with new_folder(out, Refused):
            raise AssertionError("the block ran")
    empty = tmp_path / "empty"
    empty.mkdir()
    with new_folder(empty, Refused) as tmp:  # an empty folder holds nothing to lose
        (tmp / "index.html").write_text("page")
    for d in (out, sibling):
        assert sorted(p.name for p in d.iterdir()) == ["index.html", "notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "site", "site.new"]


@pytest.mark.parametrize("make,words", [
    (lambda p: p.write_text("a file"), "is a file, not a folder"),
    (lambda p: p.symlink_to(p.parent / "real", target_is_directory=True),
     "is a symbolic link"),
])
def test_a_file_or_symlink_where_the_folder_goes_is_refused_and_nothing_is_left(tmp_path, make,
                                                                               words):
    (tmp_path / "real").mkdir()
    out = tmp_path / "site"
    make(out)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(Refused, match=words):
        with new_folder(out, Refused):
            raise AssertionError("the block ran")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert list((tmp_path / "real").iterdir()) == []


def test_a_failed_build_leaves_the_old_folder_and_no_temporary(tmp_path):
    out = tmp_path / "deep" / "er" / "site"
    with pytest.raises(RuntimeError):
        with new_folder(out, Refused) as tmp:
            _fill(tmp)
            raise RuntimeError("a file the page needs is missing")
    assert list(tmp_path.iterdir()) == []  # the parents it made went too
    with new_folder(out, Refused) as tmp:
        _fill(tmp, "old")
    with pytest.raises(KeyboardInterrupt):
        with new_folder(out, Refused) as tmp:
            _fill(tmp, "new")
            raise KeyboardInterrupt
    assert (out / "index.html").read_text() == "old"
    assert sorted(p.name for p in out.parent.iterdir()) == ["site"]


def test_removing_an_owned_folder_keeps_what_came_in_after_the_check(tmp_path, monkeypatch):
    """Only what the manifest lists is deleted, even if a file arrives after the check."""
    from astrai import folders

    out = tmp_path / "site"
    with new_folder(out, Refused) as tmp:
        _fill(tmp)
    monkeypatch.setattr(folders, "check_owned", lambda *a: (out / "scenes" / "late").write_text(
        "mine"))
    with pytest.raises(Refused, match="kept"):
        remove_owned(out, Refused)
    assert [str(p.relative_to(out)) for p in out.rglob("*")] == ["scenes", "scenes/late"]


def test_the_voice_cache_never_writes_through_a_link(tmp_path, monkeypatch):
    np = pytest.importorskip("numpy")
    from scenes.framework import voice

    private = tmp_path / "private.txt"
    private.write_text("mine")
    cache = tmp_path / "voice"
    cache.mkdir()
    with pytest.raises(voice.VoiceError, match="symbolic link"):
        (cache / "w.wav").symlink_to(private)
        voice.write_wav(cache / "w.wav", np.zeros(100, dtype=np.int16))
    (cache / "w.wav").unlink()
    narrator = voice.Narrator(on=True, cache=cache)
    monkeypatch.setattr(narrator, "synthesize", lambda say, *a: np.full(voice.RATE, 1000,
                                                                         dtype=np.int16))
    cue = narrator.cue("Hello there.")  # written whole: the wav, then its stamp
    stamp = cue.wav.with_suffix(".json")
    assert cue.wav.is_file() and stamp.is_file()
    stamp.unlink()
    stamp.symlink_to(private)
    with pytest.raises(voice.VoiceError, match="symbolic link"):
        narrator.cue("Hello there.")
    assert private.read_text() == "mine" and stamp.is_symlink()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary


def test_the_trace_store_never_writes_through_a_link(tmp_path, monkeypatch):
    from astrai.trace import store

    monkeypatch.setenv(store.ENV, str(tmp_path / "traces"))
    store.forget()
    wl = parse_workload(copy.deepcopy(BASE), "t.toml")
    first = store.recorded(wl)
    (kept,) = (tmp_path / "traces").glob("*.json")
    private = tmp_path / "private.json"
    private.write_text("mine")
    kept.unlink()
    kept.symlink_to(private)
    store.forget()
    again = store.recorded(wl)  # the link is not a trace: recorded again, and not kept there
    store.forget()
    assert again.to_json() == first.to_json()
    assert private.read_text() == "mine" and kept.is_symlink()


def test_saved_traces_and_checkpoints_never_write_through_a_link(tmp_path):
    from astrai.checkpoint import load_checkpoint, save_checkpoint
    from astrai.errors import CheckpointError, OutputError
    from astrai.model import ModelConfig, TinyModel
    from astrai.trace import load_trace, record, save_trace

    private = tmp_path / "private.txt"
    private.write_text("mine")
    trace = record(parse_workload(copy.deepcopy(BASE), "t.toml"))
    save_trace(trace, tmp_path / "t.json")
    assert load_trace(tmp_path / "t.json").to_json() == trace.to_json()
    (tmp_path / "link.json").symlink_to(private)
    with pytest.raises(OutputError, match="link.json: is a symbolic link"):
        save_trace(trace, tmp_path / "link.json")
    model = TinyModel(ModelConfig(n_layers=1, d_model=16, n_heads=2, n_kv_heads=1, head_dim=8,
                                  d_ff=16, vocab_size=32))
    for name in ("config.json", "model.safetensors"):
        folder = tmp_path / name.split(".")[0]
        save_checkpoint(model, folder)
        assert load_checkpoint(folder).config == model.config
        (folder / name).unlink()
        (folder / name).symlink_to(private)
        with pytest.raises(CheckpointError, match=f"{name}: is a symbolic link"):
            save_checkpoint(model, folder)
    assert private.read_text() == "mine"


def test_cli_refuses_an_output_that_is_a_symlink_before_running(tmp_path, capsys, no_run):
    private = tmp_path / "private.txt"
    private.write_text("mine")
    (tmp_path / "t.json").symlink_to(private)
    rc, stdout, err = run_cli(capsys, "seed", "-o", str(tmp_path / "t.json"), "-q")
    assert rc == 2 and stdout == "" and err.count("\n") == 1
    assert "t.json: is a symbolic link" in err and private.read_text() == "mine"


def test_a_file_linked_from_elsewhere_may_change_there_and_a_swapped_file_is_refused(tmp_path):
    """A hard-linked medium edited or touched under its other name is still the build's link
    (nothing is lost by removing this name); a listed name now holding another file is not."""
    media = tmp_path / "cut.mp4"
    media.write_text("cut")
    out = tmp_path / "site"
    with new_folder(out, Refused) as tmp:
        os.link(media, tmp / "cut.mp4")
        (tmp / "index.html").write_text("page")
    with open(media, "a") as f:  # edited in place where the build found it
        f.write(" and more")
    assert not_owned(out) is None
    os.rename(out / "index.html", tmp_path / "kept.html")  # its inode stays in use elsewhere
    (out / "index.html").write_text("page")  # same text, but a file someone else wrote
    assert "index.html, changed" in not_owned(out)
