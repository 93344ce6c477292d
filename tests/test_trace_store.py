"""The trace store: a run is recorded once and shared, and never served once anything that
decides it changed (the engine, the package, the workload, an argument of the recording)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TOY_PREFIX

from astrai.compare import prefix
from astrai.errors import TraceFormatError, WorkloadError
from astrai.models.store import check, identity
from astrai.trace import record, save_trace, source, store
from astrai.trace.record import rerun, workload_of
from astrai.workload import parse_workload

MODEL = "smollm2-135m-instruct"
_missing = check(MODEL)

TOY = parse_workload(TOY_PREFIX)


@pytest.fixture
def kept(tmp_path, monkeypatch):
    """A fresh store in tmp_path; `kept.runs` counts the recordings actually made."""
    folder = tmp_path / "traces"
    monkeypatch.setenv(store.ENV, str(folder))
    store.forget()
    runs = []

    def counting(*args, **kw):
        runs.append((args, kw))
        return record(*args, **kw)

    monkeypatch.setattr(store, "record", counting)
    yield type("Kept", (), {"folder": folder, "runs": runs})
    store.forget()


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def test_a_run_is_recorded_once_then_read_from_the_memo(kept):
    first = store.recorded(TOY)
    assert first.to_json() == record(TOY).to_json()  # the same trace record() makes
    assert store.recorded(TOY) is first
    assert len(kept.runs) == 1
    (path,) = files(kept.folder)
    assert path.name.startswith("toy-") and path.suffix == ".json"
    # written whole: no temporary file beside it
    assert not [p for p in kept.folder.iterdir() if p.name.endswith(".tmp")]


def test_another_process_reads_the_file_through_the_checked_loader(kept, monkeypatch):
    made = store.recorded(TOY, lines=False)
    store.forget()  # as a new process: only the file is left
    loads = []
    real = store.parse_json
    monkeypatch.setattr(store, "parse_json", lambda *a: loads.append(a) or real(*a))
    again = store.recorded(TOY, lines=False)
    assert len(kept.runs) == 1 and len(loads) == 1
    assert again.to_json() == made.to_json()


def test_a_second_process_reuses_the_file(kept):
    store.recorded(TOY)
    code = (
        "import json, sys\n"
        "from astrai.trace import store\n"
        "from astrai.workload import parse_workload\n"
        "def never(*a, **k):\n"
        "    raise SystemExit('recorded again')\n"
        "store.record = never\n"
        f"t = store.recorded(parse_workload(json.loads({json.dumps(json.dumps(TOY.to_json()))})))\n"
        "print(len(t.events))\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(record(TOY).events)


def test_a_changed_engine_is_recorded_again(kept, monkeypatch):
    store.recorded(TOY)
    real = source.digests()
    changed = {**real, "astrai/inference/cache.py": "0" * 64}
    monkeypatch.setattr(source, "digests", lambda: changed)
    store.recorded(TOY)
    assert len(kept.runs) == 2 and len(files(kept.folder)) == 2
    store.forget()  # not from the file either: its key names the other digests
    store.recorded(TOY)
    assert len(kept.runs) == 3


def test_a_changed_package_is_recorded_again(kept, monkeypatch):
    store.recorded(TOY)
    monkeypatch.setattr(store, "code_digest", lambda: "another model or recorder")
    store.recorded(TOY)
    assert len(kept.runs) == 2


@pytest.mark.parametrize("change", [
    lambda wl: dataclasses.replace(wl, seed=wl.seed + 1),
    lambda wl: dataclasses.replace(wl, prefix_caching=False),
    lambda wl: dataclasses.replace(wl, requests=(dataclasses.replace(
        wl.requests[0], max_new_tokens=wl.requests[0].max_new_tokens + 1), *wl.requests[1:])),
])
def test_a_changed_workload_is_recorded_again(kept, change):
    store.recorded(TOY)
    other = store.recorded(change(TOY))
    assert len(kept.runs) == 2
    assert other.workload == change(TOY).to_json()


@pytest.mark.parametrize("args", [
    {"lines": False}, {"capture": True}, {"device": "cpu"},
])
def test_every_argument_of_the_recording_is_in_the_key(kept, args):
    base = store.recorded(TOY)
    other = store.recorded(TOY, **args)
    if args == {"device": "cpu"}:  # the workload's own device: the same recording
        assert other is base and len(kept.runs) == 1
        return
    assert len(kept.runs) == 2
    assert kept.runs[1][1] == {"device": None, "lines": True, "capture": False,
                               "max_steps": store.MAX_STEPS, **args}
    assert bool(other.captures) == args.get("capture", False)


def test_a_finished_run_is_kept_once_whatever_limit_asks_for_it(kept):
    base = store.recorded(TOY)
    steps = base.events[-1].step + 1
    assert store.recorded(TOY, max_steps=steps) is base  # it fits: the same run
    store.forget()
    assert store.recorded(TOY, max_steps=steps).to_json() == base.to_json()  # from its file
    assert len(kept.runs) == 1
    for _ in range(2):  # from the memo, then from the file: refused as record() refuses it
        with pytest.raises(WorkloadError, match=f"not done after {steps - 1} steps"):
            store.recorded(TOY, max_steps=steps - 1)
        store.forget()
    assert len(kept.runs) == 1


def test_a_damaged_or_foreign_file_is_never_served(kept):
    good = store.recorded(TOY)
    (path,) = files(kept.folder)
    for bad in ("", path.read_text()[: len(path.read_text()) // 2]):
        path.write_text(bad)
        store.forget()
        assert store.recorded(TOY).to_json() == good.to_json()
        kept_data = json.loads(path.read_text())  # replaced, whole, with the key's fields
        assert kept_data.pop("recording") == store.fields_of(TOY, None, True, False)
        assert kept_data == good.to_json()
    runs = len(kept.runs)
    # a valid trace of another workload under this run's name
    save_trace(record(dataclasses.replace(TOY, seed=7)), path)
    store.forget()
    assert store.recorded(TOY).workload == TOY.to_json()
    assert len(kept.runs) == runs + 1


def test_a_file_from_other_engine_files_is_never_served(kept):
    store.recorded(TOY, lines=False)  # no code frames: the loader alone would not notice
    (path,) = files(kept.folder)
    data = json.loads(path.read_text())
    data["source"] = {f: "f" * 64 for f in data["source"]}
    path.write_text(json.dumps(data))
    store.forget()
    assert store.recorded(TOY, lines=False).source == source.digests()
    assert len(kept.runs) == 2


def test_a_refused_run_is_not_kept(kept):
    for _ in range(2):
        with pytest.raises(WorkloadError, match="not done after 3 steps"):
            store.recorded(TOY, max_steps=3)
    assert len(kept.runs) == 2 and files(kept.folder) == []
    with pytest.raises(TraceFormatError, match="needs more than 3 steps"):
        rerun(TOY, 3)


def test_off_keeps_nothing_on_disk(kept, monkeypatch):
    monkeypatch.setenv(store.ENV, "off")
    assert store.directory() is None
    store.recorded(TOY)
    store.recorded(TOY)
    assert len(kept.runs) == 1 and not kept.folder.exists()


def test_a_checkpoint_folder_workload_is_never_kept(kept, monkeypatch):
    wl = dataclasses.replace(TOY, checkpoint="/weights/that/may/change")
    monkeypatch.setattr(store, "record", lambda *a, **k: kept.runs.append(a) or "fresh")
    assert store.recorded(wl) == "fresh" and store.recorded(wl) == "fresh"
    assert len(kept.runs) == 2 and not kept.folder.exists()


@pytest.mark.skipif(_missing is not None, reason=f"the real model is not installed ({_missing})")
def test_a_named_model_is_kept_and_its_converted_files_are_in_the_key(kept, monkeypatch):
    wl = parse_workload({
        "name": "real", "cache": {"n_pages": 4, "page_size": 16},
        "model": {"checkpoint": MODEL}, "scheduler": {"prefix_caching": False},
        "request": [{"name": "a", "chat": "Hi", "max_new_tokens": 2}]})
    first = store.recorded(wl, lines=False)
    store.forget()  # as a new process: read from the file, not run again
    again = store.recorded(wl, lines=False)
    assert len(kept.runs) == 1 and again.outputs == first.outputs
    fields = store.fields_of(wl, None, False, False)
    assert fields["model"] == identity(MODEL) and fields["model"]["files"]
    # a comparison may run a named model's trace again (nothing it names is a path)
    assert workload_of(first, "a test") == wl
    # the same model converted into other bytes is another model: recorded again
    other = {**identity(MODEL), "files": {"model.safetensors": "0" * 64}}
    monkeypatch.setattr(store, "identity", lambda name: other)
    store.forget()
    store.recorded(wl, lines=False)
    assert len(kept.runs) == 2


def test_comparisons_and_scenes_record_through_the_store(kept):
    wl = dataclasses.replace(TOY, name="toy-prefix")
    first = prefix.compare(workload=wl)
    assert len(kept.runs) == 2  # prefix caching on (traced) and off (the comparison run)
    store.forget()
    again = prefix.compare(workload=wl)
    assert len(kept.runs) == 2 and again.off_outputs == first.off_outputs
    # a scene given the trace runs the same comparison again, under the trace's step limit:
    # the run already kept fits it, so nothing is recorded again
    prefix.compare(trace=first.trace)
    store.forget()
    prefix.compare(trace=first.trace)
    assert len(kept.runs) == 2


def test_the_default_folder_is_media_traces_of_the_checkout(monkeypatch):
    monkeypatch.delenv(store.ENV, raising=False)
    root = Path(store.__file__).resolve().parents[2]
    assert store.directory() == root / "media" / "traces"


def test_a_scene_loads_its_workload_through_the_store(kept, tmp_path):
    pytest.importorskip("manim")
    from scenes.framework.capture import load_captured
    from scenes.framework.replay import load

    toml = tmp_path / "mine.toml"
    toml.write_text('name = "mine"\n[cache]\nn_pages = 4\npage_size = 4\n[model]\nn_layers = 1\n'
                    '[[request]]\nname = "A"\nprompt_len = 5\nmax_new_tokens = 3\n')
    assert load(str(toml)) is load(str(toml))
    assert load_captured(str(toml)).captures
    assert [kw["capture"] for _, kw in kept.runs] == [False, True]
    toml.write_text(toml.read_text().replace("max_new_tokens = 3", "max_new_tokens = 4"))
    assert len(load(str(toml)).outputs["A"]) == 4  # the file changed: recorded again
    assert len(kept.runs) == 3


# ---- a kept file proves it is its key's recording ---------------------------------------------


def digest_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256")


def rewrite(path: Path, data: dict) -> None:
    """The file changed and its digest written to match: a forger who knows the format."""
    import hashlib

    text = json.dumps(data, separators=(",", ":"))
    path.write_text(text)
    digest_of(path).write_text(hashlib.sha256(text.encode()).hexdigest())


def test_the_file_carries_its_key_and_its_digest(kept):
    import hashlib

    store.recorded(TOY)
    (path,) = files(kept.folder)
    data = json.loads(path.read_text())
    fields = data["recording"]
    assert fields["lines"] is True and fields["capture"] is False
    assert hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32] in path.name
    assert digest_of(path).read_text() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_recording_filed_under_another_key_is_never_served(kept):
    """Without line tracing under the name of the run with it: recorded again, with lines."""
    plain = store.recorded(TOY, lines=False)
    assert not any(ev.code for ev in plain.events)
    (plain_path,) = files(kept.folder)
    traced_path = plain_path.with_name(
        f"toy-{store.key_of(TOY, None, True, False)[:32]}.json")
    traced_path.write_bytes(plain_path.read_bytes())  # file and digest copied across
    digest_of(traced_path).write_bytes(digest_of(plain_path).read_bytes())
    store.forget()
    assert any(ev.code for ev in store.recorded(TOY).events)
    assert len(kept.runs) == 2
    # its fields rewritten to the other key's too: its content still says no lines
    data = json.loads(traced_path.read_text())
    data["events"] = [{k: v for k, v in ev.items() if k not in ("code", "returned")}
                      for ev in data["events"]]
    rewrite(traced_path, data)
    store.forget()
    assert any(ev.code for ev in store.recorded(TOY).events)
    assert len(kept.runs) == 3


def test_a_recording_without_captures_is_never_served_for_one_with_them(kept):
    store.recorded(TOY, capture=True)
    (path,) = files(kept.folder)
    data = json.loads(path.read_text())
    del data["captures"]
    rewrite(path, data)  # a valid trace, its key's fields and a matching digest
    store.forget()
    assert store.recorded(TOY, capture=True).captures
    assert len(kept.runs) == 2


def test_a_forged_self_consistent_file_is_never_served(kept):
    """Outputs and the token events replaced together pass every check of the loader: the
    digest its writer kept says the file is not the one written."""
    real = store.recorded(TOY, lines=False)
    (path,) = files(kept.folder)
    data = json.loads(path.read_text())
    for ev in data["events"]:
        if ev["kind"] == "tokens":
            ev["tokens"] = {name: 0 for name in ev["tokens"]}
    data["outputs"] = {name: [0] * len(out) for name, out in data["outputs"].items()}
    path.write_text(json.dumps(data, separators=(",", ":")))
    assert store.parse_json(path.read_text())  # the loader alone takes it
    from astrai.trace.format import load_trace

    assert load_trace(path).outputs != real.outputs
    store.forget()
    assert store.recorded(TOY, lines=False).outputs == real.outputs
    assert len(kept.runs) == 2


@pytest.mark.parametrize("damage", ["missing", "wrong", "directory"])
def test_a_file_without_its_writers_digest_is_recorded_again(kept, damage):
    store.recorded(TOY, lines=False)
    (path,) = files(kept.folder)
    digest = digest_of(path)
    digest.unlink()
    if damage == "wrong":
        digest.write_text("0" * 64)
    elif damage == "directory":
        digest.mkdir()
    store.forget()
    store.recorded(TOY, lines=False)
    assert len(kept.runs) == 2


def test_a_lock_held_by_a_stopped_process_is_named_not_waited_on_forever(kept, monkeypatch):
    import signal
    import time

    from astrai.errors import TraceStoreBusy

    store.recorded(TOY, lines=False)
    (path,) = files(kept.folder)
    root = Path(__file__).resolve().parents[1]
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import os, signal, sys\nfrom pathlib import Path\nfrom astrai.trace import store\n"
         "with store._locked(Path(sys.argv[1])):\n    os.kill(os.getpid(), signal.SIGSTOP)\n",
         str(path)], cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        _, status = os.waitpid(holder.pid, os.WUNTRACED)  # returns once it has stopped
        assert os.WIFSTOPPED(status)
        monkeypatch.setattr(store, "LOCK_WAIT", 0.5)
        store.forget()
        start = time.monotonic()
        with pytest.raises(TraceStoreBusy) as e:
            store.recorded(TOY, lines=False)
        assert time.monotonic() - start < 5
        msg = str(e.value)
        assert f"process {holder.pid} (stopped)" in msg and "\n" not in msg
        assert len(kept.runs) == 1  # nothing recorded, nothing replaced
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    store.recorded(TOY, lines=False)  # its lock went with it
    assert len(kept.runs) == 1
