"""Workload files: every shipped one loads and runs; every malformed field is named."""

from __future__ import annotations

import copy

import pytest

from astrai.errors import WorkloadError
from astrai.inference.cache import pages_for
from astrai.models.store import check
from astrai.trace import recorded
from astrai.workload import build, load_workload, parse_workload, run_workload, workload_names

MODEL = "smollm2-135m-instruct"
_missing = check(MODEL)
real_model = pytest.mark.skipif(_missing is not None,
                                reason=f"the real model is not installed ({_missing}); make setup")
# The storyboard's workloads run the real model; the others stay on the seeded tiny model.
STORYBOARD = ("seed", "prefix", "sampling", "traffic", "preemption", "write_gather")

BASE = {
    "name": "t",
    "cache": {"n_pages": 8, "page_size": 4},
    "prefixes": {"sys": 6},
    "request": [
        {"name": "a", "prompt_len": 5, "max_new_tokens": 2},
        {"name": "b", "prefix": "sys", "prompt_len": 9, "max_new_tokens": 2, "after": "a"},
    ],
}


def test_shipped_workloads_load_and_finish():
    names = workload_names()
    assert {"seed", "prefix", "batching", "preemption", "slots"} <= set(names)
    for name in names:
        if name in STORYBOARD and _missing is not None:
            continue  # needs the real model (the next test says so)
        wl = load_workload(name)
        if wl.checkpoint is None:
            _, _, scheduler = build(wl)
            outputs = run_workload(wl, scheduler)
            scheduler.cache.check()
        else:  # a real-model run: the one the scenes replay, kept in the trace store
            trace = recorded(wl, lines=False)
            outputs = trace.outputs
            assert not any(trace.events[-1].state["refs"]), name  # every page given back
        assert {n: r.max_new_tokens for r in wl.requests for n in r.sample_names} == {
            k: len(v) for k, v in outputs.items()
        }


@real_model
@pytest.mark.parametrize("name", STORYBOARD)
def test_storyboard_workloads_run_the_real_model_on_text(name):
    wl = load_workload(name)
    assert wl.checkpoint == MODEL
    assert all(r.text for r in wl.requests)  # every prompt is real text


@real_model
def test_seed_workload_tells_the_seeds_story():
    """Real questions through the chat template; A's answer needs a page its prompt did not (it
    grows in decode), B arrives a step later, C once A is done."""
    wl = load_workload("seed")
    assert wl.checkpoint == "smollm2-135m-instruct"
    a, b, c = wl.requests
    assert all(r.chat and r.text.endswith("<|im_start|>assistant\n") for r in wl.requests)
    ps = wl.page_size
    assert pages_for(len(a.prompt) + a.max_new_tokens - 1, ps) > pages_for(len(a.prompt), ps)
    assert (b.arrival, c.after) == (1, "A")


def test_prompts_are_deterministic_and_prefixes_shared():
    one, two = parse_workload(BASE), parse_workload(copy.deepcopy(BASE))
    assert one == two
    b = one.requests[1]
    assert len(b.prompt) == 9 and b.prefix == "sys"
    other = parse_workload({**BASE, "request": [
        {"name": "c", "prefix": "sys", "prompt_len": 7, "max_new_tokens": 1}]})
    assert other.requests[0].prompt[:6] == b.prompt[:6]
    assert other.requests[0].prompt[6:] != b.prompt[6:8]


def test_a_list_of_prefixes_joins_them_in_order():
    data = {**BASE, "prefixes": {"sys": 6, "other": 4}, "request": [
        {"name": "a", "prefix": "sys", "prompt_len": 8, "max_new_tokens": 1},
        {"name": "o", "prefix": "other", "prompt_len": 5, "max_new_tokens": 1},
        {"name": "c", "prefix": ["other", "sys"], "prompt_len": 12, "max_new_tokens": 1}]}
    a, o, c = parse_workload(data).requests
    assert c.prefix == ("other", "sys")
    assert c.prompt[:4] == o.prompt[:4] and c.prompt[4:10] == a.prompt[:6]
    assert parse_workload(parse_workload(data).to_json()) == parse_workload(data)
    for bad in ([], ["other", "nope"], [3]):
        data["request"][2]["prefix"] = bad
        with pytest.raises(WorkloadError, match=r"request\[2\].prefix must name one of"):
            parse_workload(data)
    data["request"][2].update(prefix=["other", "sys"], prompt_len=9)
    with pytest.raises(WorkloadError, match=r"request\[2\].prompt_len must be an int >= 10"):
        parse_workload(data)


def test_round_trip_through_json():
    wl = load_workload("prefix")
    assert parse_workload(wl.to_json()) == wl


def test_load_by_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[cache]\nn_pages = 4\npage_size = 2\n'
                    '[[request]]\nname = "x"\nprompt = [1, 2, 3]\nmax_new_tokens = 1\n')
    wl = load_workload(path)
    assert wl.name == "mine" and wl.requests[0].prompt == (1, 2, 3)


def _with(path, value):
    data = copy.deepcopy(BASE)
    *head, last = path
    node = data
    for key in head:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("cache", "n_pages"), 0, "cache.n_pages must be an int >= 1, got 0"),
        (("cache", "n_pages"), KeyError, "cache.n_pages is missing"),
        (("cache", "page_size"), "64", "cache.page_size must be an int >= 1, got '64'"),
        (("cache", "dtype"), "int8", "cache.dtype must be one of"),
        (("cache", "pages"), 3, "unknown field cache.pages"),
        (("model", ), {"n_heads": 3}, "model: ModelConfig.n_heads (3) must be a multiple"),
        (("model", ), {"d_model": "big"}, "model.d_model must be int"),
        (("scheduler", ), {"max_batch": 0}, "scheduler.max_batch must be an int >= 1"),
        (("scheduler", ), {"prefix_caching": 1}, "scheduler.prefix_caching must be true or false"),
        (("scheduler", ), {"temperature": -1}, "scheduler.temperature must be >= 0"),
        (("request", ), [], "workload.request must be a non-empty array"),
        (("request", 0, "name"), "b", "request[1].name must be a unique"),
        (("request", 0, "prompt_len"), -3, "request[0].prompt_len must be an int >= 1"),
        (("request", 0, "prompt_len"), KeyError, "request[0].prompt_len is missing"),
        (("request", 0, "max_new_tokens"), 0, "request[0].max_new_tokens must be an int >= 1"),
        (("request", 0, "arrival"), -1, "request[0].arrival must be an int >= 0"),
        (("request", 0, "prompt"), [1, 999], "request[0].prompt must be non-empty token ids"),
        (("request", 0, "colour"), "red", "unknown field request[0].colour"),
        (("request", 1, "prefix"), "nope", "request[1].prefix must name one of"),
        (("request", 1, "prompt_len"), 5, "request[1].prompt_len must be an int >= 6"),
        (("request", 1, "after"), "zzz", "request[1].after must name another request"),
        (("request", 0, "after"), "b", "request.after forms a cycle"),
        (("prefixes", "sys"), 0, "prefixes.sys must be an int >= 1"),
        (("stuff", ), 1, "unknown field workload.stuff"),
    ],
)
def test_malformed_fields_are_named(path, value, message):
    with pytest.raises(WorkloadError) as info:
        parse_workload(_with(path, value), "bad.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("bad.toml: ")


def test_bad_files(tmp_path):
    with pytest.raises(WorkloadError, match="no workload 'nothing'"):
        load_workload("nothing")
    with pytest.raises(WorkloadError, match="does not exist"):
        load_workload(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[cache\n")
    with pytest.raises(WorkloadError, match="not valid TOML"):
        load_workload(broken)


# ---- chat requests ---------------------------------------------------------------------------

CHAT = {
    "name": "chat",
    "system": "You answer in one word.",
    "cache": {"n_pages": 8, "page_size": 16},
    "model": {"checkpoint": MODEL},
    "request": [
        {"name": "a", "chat": "Capital of France?", "max_new_tokens": 2},
        {"name": "b", "chat": "Capital of Italy?", "max_new_tokens": 2},
        {"name": "c", "chat": "Capital of Spain?", "system": "Be brief.", "max_new_tokens": 2},
    ],
}


@real_model
def test_chat_requests_go_through_the_template_and_share_the_system_prompt():
    from astrai.chat import chat_prompt
    from astrai.text import load_tokenizer

    wl = parse_workload(copy.deepcopy(CHAT))
    a, b, c = wl.requests
    assert a.text == chat_prompt(MODEL, [{"role": "system", "content": CHAT["system"]},
                                         {"role": "user", "content": "Capital of France?"}])
    assert a.prompt == tuple(load_tokenizer(MODEL).encode(a.text))
    assert (a.system, c.system) == (CHAT["system"], "Be brief.")
    head = chat_prompt(MODEL, [{"role": "system", "content": CHAT["system"]}],
                       add_generation_prompt=False)
    assert a.text.startswith(head) and b.text.startswith(head) and not c.text.startswith(head)
    n = len(load_tokenizer(MODEL).encode(head))
    assert a.prompt[:n] == b.prompt[:n] and a.prompt != b.prompt
    assert parse_workload(wl.to_json()) == wl  # a trace's workload reads back the same
    assert wl.to_json()["request"][0]["prompt"] == list(a.prompt)  # ids beside the text
    data = copy.deepcopy(CHAT)
    data["request"][0]["prompt"] = list(b.prompt)
    with pytest.raises(WorkloadError, match=r"request\[0\].chat cannot be combined with "
                                            r"prompt other than its own tokens"):
        parse_workload(data)


@pytest.mark.parametrize("change, message", [
    ({"prompt_text": "x"}, r"request\[0\].chat cannot be combined with prompt_text"),
    ({"prompt_len": 4}, r"request\[0\].chat cannot be combined with prompt_len"),
    ({"chat": "  "}, r"request\[0\].chat must be a non-empty message"),
    ({"chat": 3}, r"request\[0\].chat must be a string"),
    ({"system": 3}, r"request\[0\].system must be a string"),
])
def test_bad_chat_requests_are_named(change, message):
    data = copy.deepcopy(CHAT)
    data.pop("model")  # the field is checked before the template is needed
    data["request"][0].update(change)
    with pytest.raises(WorkloadError, match=message):
        parse_workload(data)


def test_chat_needs_a_model_with_a_template_and_system_needs_chat():
    data = copy.deepcopy(CHAT)
    data.pop("model")
    with pytest.raises(WorkloadError, match=r"request\[0\].chat needs model.checkpoint"):
        parse_workload(data)
    data = {**BASE, "request": [{"name": "a", "prompt_len": 3, "max_new_tokens": 1,
                                 "system": "Hi"}]}
    with pytest.raises(WorkloadError, match=r"request\[0\].system needs chat"):
        parse_workload(data)
    with pytest.raises(WorkloadError, match=r"workload.system must be a string"):
        parse_workload({**BASE, "system": 5})


@real_model
def test_a_chat_requests_prefix_is_its_system_message():
    from astrai.chat import chat_prompt
    from astrai.text import load_tokenizer

    data = {**copy.deepcopy(CHAT), "prefixes": {"sys": "You are kind.", "run": 4}}
    data.pop("system")
    data["request"][0]["prefix"] = data["request"][1]["prefix"] = "sys"
    wl = parse_workload(copy.deepcopy(data))
    a, b, _ = wl.requests
    block = load_tokenizer(MODEL).encode(chat_prompt(
        MODEL, [{"role": "system", "content": "You are kind."}], add_generation_prompt=False))
    assert wl.prefixes == {"sys": len(block), "run": 4}  # a length, as the scenes read it
    assert a.system == b.system == "You are kind." and a.prefix == "sys"
    assert list(a.prompt[:len(block)]) == block == list(b.prompt[:len(block)])
    assert parse_workload(wl.to_json()) == wl  # the trace keeps the length and the message
    for change, message in (
            ({"prefix": "run"}, r"request\[0\].prefix names a token run"),
            ({"system": "Other."}, r"request\[0\].system differs from the system message"),
            ({"prefix": ["sys"]}, r"request\[0\].prefix must name one system message")):
        bad = copy.deepcopy(data)
        bad["request"][0].update(change)
        with pytest.raises(WorkloadError, match=message):
            parse_workload(bad)
    bad = copy.deepcopy(data)
    bad["request"][0] = {"name": "a", "prefix": "sys", "prompt_len": 30, "max_new_tokens": 1}
    with pytest.raises(WorkloadError, match=r"request\[0\].prefix names a system message"):
        parse_workload(bad)
    js = wl.to_json()
    js["prefixes"]["sys"] += 1  # a trace whose length is not its message's
    with pytest.raises(WorkloadError, match=r"request\[0\].prefix must be the \d+ tokens"):
        parse_workload(js)


def test_a_system_message_prefix_needs_a_model():
    data = {**BASE, "prefixes": {"sys": "You are kind."}}
    with pytest.raises(WorkloadError, match=r"prefixes.sys must be a length; a system message"):
        parse_workload(data)
