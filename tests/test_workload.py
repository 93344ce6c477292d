"""Workload files: every shipped one loads and runs; every malformed field is named."""

from __future__ import annotations

import copy

import pytest

from astrai.errors import WorkloadError
from astrai.workload import build, load_workload, parse_workload, run_workload, workload_names

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
        wl = load_workload(name)
        _, _, scheduler = build(wl)
        outputs = run_workload(wl, scheduler)
        assert {n: r.max_new_tokens for r in wl.requests for n in r.sample_names} == {
            k: len(v) for k, v in outputs.items()
        }
        scheduler.cache.check()


def test_seed_workload_is_the_seeds_geometry():
    wl = load_workload("seed")
    assert (wl.n_pages, wl.page_size) == (8, 64)
    a, b, c = wl.requests
    assert (len(a.prompt), len(a.prompt) + a.max_new_tokens, len(b.prompt)) == (120, 180, 90)
    assert c.after == "A"


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
