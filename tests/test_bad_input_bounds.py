"""Second round: every file read is bounded, every run limited, every refusal one named line."""

from __future__ import annotations

import copy
import json
import os
import signal
import stat
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_bad_input_files import BASE, bad, run_cli, tomli_w

from astrai import workload as workload_module
from astrai.checkpoint import load_checkpoint, read_config, save_checkpoint, tensor_names
from astrai.errors import CheckpointError, TokenizerError, TraceFormatError, WorkloadError
from astrai.files import Output
from astrai.model import ModelConfig, TinyModel
from astrai.text import FileTokenizer
from astrai.trace import Trace, load_trace, record
from astrai.trace import __main__ as cli
from astrai.trace.text import format_trace
from astrai.workload import (
    MAX_NEW_TOKENS,
    MAX_PROMPT_TOKENS,
    MAX_REQUESTS,
    load_workload,
    parse_workload,
)

TINY = ModelConfig(vocab_size=256, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1,
                   head_dim=8, d_ff=16)


@contextmanager
def within(seconds: int = 10):
    """Fail instead of hanging: a FIFO opened for reading would block forever."""
    def late(*_):
        raise TimeoutError(f"blocked for {seconds} s")

    old = signal.signal(signal.SIGALRM, late)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(TinyModel(TINY), path)
    return path


def copy_of(checkpoint: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ck"
    out.mkdir()
    for f in checkpoint.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


# ---- config, index, shards, tokenizer: regular files only, capped ----------------------------

@pytest.mark.parametrize("make,words", [
    (lambda p: os.mkfifo(p), "not a regular file"),
    (lambda p: os.symlink("/dev/zero", p), "not a regular file"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_text("{" * 50_000 + "}" * 50_000), "config.json"),
    (lambda p: p.write_text('{"vocab_size": ' + "9" * 5000 + "}"), "not JSON"),
    (lambda p: p.write_bytes(b"\xff\xfe{}"), "UTF-8"),
])
def test_config_json_that_is_not_a_small_regular_file(checkpoint, tmp_path, make, words):
    ck = copy_of(checkpoint, tmp_path)
    (ck / "config.json").unlink()
    make(ck / "config.json")
    with within(), pytest.raises(CheckpointError, match=words) as info:
        read_config(ck)
    assert "\n" not in str(info.value)


def test_an_index_that_is_a_fifo_is_refused(checkpoint, tmp_path):
    ck = copy_of(checkpoint, tmp_path)
    os.mkfifo(ck / "model.safetensors.index.json")
    with within(), pytest.raises(CheckpointError, match="not a regular file"):
        read_config(ck)


def test_a_shard_that_is_a_fifo_is_refused(checkpoint, tmp_path):
    ck = copy_of(checkpoint, tmp_path)
    (ck / "model.safetensors").unlink()
    names = {name: "model-00001.safetensors" for name in tensor_names(TINY)}
    (ck / "model.safetensors.index.json").write_text(json.dumps({"weight_map": names}))
    os.mkfifo(ck / "model-00001.safetensors")
    info = read_config(ck)
    with within(), pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(info)


@pytest.mark.parametrize("make,words", [
    (lambda p: os.mkfifo(p), "not a regular file"),
    (lambda p: os.symlink("/dev/zero", p), "not a regular file"),
    (lambda p: p.mkdir(), "is a directory"),
])
def test_a_tokenizer_that_is_not_a_regular_file_is_refused(tmp_path, make, words):
    make(tmp_path / "tokenizer.json")
    with within(), pytest.raises(TokenizerError, match=words):
        FileTokenizer(tmp_path / "tokenizer.json")


def test_a_workload_naming_a_checkpoint_whose_config_is_a_fifo(checkpoint, tmp_path):
    ck = copy_of(checkpoint, tmp_path)
    (ck / "config.json").unlink()
    os.mkfifo(ck / "config.json")
    wl = tmp_path / "w.toml"
    wl.write_text(f'[cache]\nn_pages = 4\npage_size = 4\n[model]\ncheckpoint = "{ck}"\n'
                  '[[request]]\nname = "a"\nprompt = [1, 2]\nmax_new_tokens = 2\n')
    with within(), pytest.raises(WorkloadError, match="not a regular file") as info:
        load_workload(wl)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("checkpoint_path,words", [
    ("a\0b", "NUL byte"), ("~nosuchuser_astrai/m", "unknown user"),
])
def test_checkpoint_paths_no_file_can_have_are_named(tmp_path, checkpoint_path, words):
    wl = tmp_path / "w.toml"
    wl.write_text(f'[cache]\nn_pages = 4\npage_size = 4\n[model]\ncheckpoint = '
                  f'{json.dumps(checkpoint_path)}\n'
                  '[[request]]\nname = "a"\nprompt = [1, 2]\nmax_new_tokens = 2\n')
    with pytest.raises(WorkloadError, match=words):
        load_workload(wl)
    data = copy.deepcopy(BASE)
    data["model"] = {"checkpoint": checkpoint_path}
    bad(lambda d: d.update(model={"checkpoint": checkpoint_path}), "model.checkpoint")


def test_read_config_of_a_path_with_a_nul_byte():
    with pytest.raises(CheckpointError, match="not a directory"):
        read_config("a\0b")


# ---- numbers too long to be numbers ----------------------------------------------------------

def test_a_5000_digit_integer_in_a_workload_or_trace_is_one_line(tmp_path):
    wl = tmp_path / "w.toml"
    wl.write_text(f"[cache]\nn_pages = {'9' * 5000}\n")
    with pytest.raises(WorkloadError, match="w.toml"):
        load_workload(wl)
    tr = tmp_path / "t.json"
    tr.write_text('{"version": ' + "9" * 5000 + "}")
    with pytest.raises(TraceFormatError, match="t.json"):
        load_trace(tr)


@pytest.mark.parametrize("change,field", [
    (lambda d: d["scheduler"].update(seed=2**64), "scheduler.seed"),
    (lambda d: d["scheduler"].update(seed=2**200), "scheduler.seed"),
    (lambda d: d["model"].update(seed=2**64), "model.seed"),
    (lambda d: d["model"].update(seed=-(2**70)), "model.seed"),
])
def test_seeds_past_64_bits_are_named(change, field):
    bad(change, field, "64 bits")


# ---- workload names --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../tests/bad", "../../nowhere/x", "seed/../seed", "a\nb",
                                  "\x1b[2J", "seed\0", "nothing"])
def test_a_workload_name_never_walks_into_another_folder(name):
    with pytest.raises(WorkloadError, match="no workload") as info:
        load_workload(name)
    assert str(info.value).isprintable()


@pytest.mark.parametrize("name", ["a\nfree=111", "\x1b[31mred", "", "x" * 201, "tab\there"])
def test_workload_names_obey_the_printable_name_rule(name):
    bad(lambda d: d.update(name=name), "workload.name", "printable")


def test_the_text_trace_escapes_what_it_prints():
    trace = record(parse_workload(BASE), lines=False)
    trace.workload["name"] = "evil\n\x1b[2Jforged"  # past validation: built, not loaded
    trace.geometry["device"] = "cpu\rX"
    lines = list(format_trace(trace))
    assert len(lines) == 2 + len(trace.events) + len(trace.outputs)
    assert all(line.isprintable() for line in lines)
    assert "\\x1b[2J" in lines[0]


# ---- limits ----------------------------------------------------------------------------------

@pytest.mark.parametrize("change,field,limit", [
    (lambda d: d["request"][0].update(max_new_tokens=50_000), "request[0].max_new_tokens",
     MAX_NEW_TOKENS),
    (lambda d: d["request"].extend({"name": f"r{i}", "prompt_len": 1, "max_new_tokens": 1}
                                   for i in range(10_000)), "workload.request", MAX_REQUESTS),
    (lambda d: d["request"][2].update(prompt=[1] * 60_000), "request[2].prompt",
     MAX_PROMPT_TOKENS),
    (lambda d: d["request"][0].update(prompt_len=60_000), "request[0].prompt_len",
     MAX_PROMPT_TOKENS),
])
def test_documented_limits_are_refused_with_their_field(change, field, limit):
    def big_pool(d):
        d["cache"].update(n_pages=1000, page_size=128)
        change(d)

    bad(big_pool, field, str(limit))


def test_the_limits_are_in_the_workload_docs():
    readme = (Path(__file__).parents[1] / "docs" / "workloads.md").read_text()
    for limit in (MAX_NEW_TOKENS, MAX_PROMPT_TOKENS, MAX_REQUESTS, workload_module.MAX_STEPS):
        assert f"{limit:,}" in readme or str(limit) in readme


def test_the_estimate_covers_the_prefill_attention(monkeypatch):
    """A prompt within the limit whose prefill mask and scores would not fit is refused at
    parse, before any tensor exists; the same pool with a short prompt is fine."""
    data = copy.deepcopy(BASE)
    data["cache"].update(n_pages=300, page_size=128)
    data["request"] = [{"name": "a", "prompt_len": 30_000, "max_new_tokens": 1}]
    monkeypatch.setattr(workload_module, "available_bytes", lambda device: 4 << 30)
    with pytest.raises(WorkloadError, match="attention"):
        parse_workload(data, "bad.toml")
    data["request"][0]["prompt_len"] = 100
    parse_workload(data, "ok.toml")


# ---- the CLI: Ctrl-C, modes, temporary files -------------------------------------------------

def test_ctrl_c_is_one_line_exit_130_and_leaves_no_file(tmp_path, capsys, monkeypatch):
    def interrupted(*a, **k):
        assert list(tmp_path.iterdir()) == [], "a file exists while the run is going"
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "record", interrupted)
    rc, out, err = run_cli(capsys, "seed", "-o", str(tmp_path / "t.json"))
    assert rc == 130 and out == "" and err == "error: interrupted\n"
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_the_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "t.json"
    target.write_text("old")
    out = Output(target, OSError)

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", interrupted)
    with pytest.raises(KeyboardInterrupt):
        out.write("new")
    monkeypatch.undo()
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_nothing_waits_beside_the_target_while_a_run_goes(tmp_path):
    """What kill -9 would leave behind: nothing until the run is over."""
    Output(tmp_path / "t.json", OSError)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask,existing,want", [
    (0o022, None, 0o644), (0o002, None, 0o664), (0o022, 0o644, 0o644), (0o022, 0o600, 0o600),
    (0o077, 0o664, 0o664),
])
def test_output_files_get_the_usual_mode(tmp_path, umask, existing, want):
    target = tmp_path / "t.json"
    if existing is not None:
        target.write_text("old")
        target.chmod(existing)
    old = os.umask(umask)
    try:
        Output(target, OSError).write("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == want
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_cli_output_is_readable_by_others_under_umask_022(tmp_path, capsys):
    small = tmp_path / "w.toml"
    small.write_text(tomli_w(BASE))
    old = os.umask(0o022)
    try:
        rc, _, _ = run_cli(capsys, str(small), "-o", str(tmp_path / "t.json"), "-q")
    finally:
        os.umask(old)
    assert rc == 0 and stat.S_IMODE((tmp_path / "t.json").stat().st_mode) == 0o644
    assert Trace.from_json(json.loads((tmp_path / "t.json").read_text())).events


@pytest.mark.parametrize("argv,words", [
    (("seed\0",), "no workload"),
    (("../tests/x",), "no workload"),
])
def test_cli_refusals_stay_one_line(capsys, argv, words):
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 2 and out == "" and words in err and err.count("\n") == 1
    assert err.rstrip("\n").isprintable()


def test_the_checkpoint_cli_exits_2_in_one_line(tmp_path):
    import subprocess
    import sys

    os.mkfifo(tmp_path / "config.json")
    out = subprocess.run([sys.executable, "-m", "astrai.checkpoint", str(tmp_path)],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1


def test_a_long_recording_shows_its_progress_on_a_terminal(capsys):
    from types import SimpleNamespace

    from astrai.inference.scheduler import Status

    progress = cli._Progress()
    progress.tty, progress.start, progress.last = True, 0.0, 0.0  # long past the first seconds
    tasks = {"a": SimpleNamespace(status=Status.DONE), "b": SimpleNamespace(status=Status.RUNNING)}
    progress(SimpleNamespace(step_count=41, tasks=tasks))
    cli._progress_done()
    err = capsys.readouterr().err
    assert "recording: step 41, 1 of 2 requests done" in err and err.endswith("\r\x1b[K")
    quiet = cli._Progress()
    quiet.tty = False  # piped or captured: nothing is written
    quiet(SimpleNamespace(step_count=1, tasks=tasks))
    assert capsys.readouterr().err == ""
