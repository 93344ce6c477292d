"""Llama checkpoints through the paged cache: small random models made and saved by transformers
(nothing downloaded), loaded by astrai.checkpoint, checked token for token against generate()."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")
tokenizers = pytest.importorskip("tokenizers")

from astrai.checkpoint import (  # noqa: E402
    describe,
    load_checkpoint,
    model_bytes,
    read_config,
    resolve_dtype,
    save_checkpoint,
)
from astrai.errors import (  # noqa: E402
    CheckpointError,
    CheckpointTensorError,
    CheckpointTooLarge,
    UnsupportedCheckpoint,
    WorkloadError,
)
from astrai.model import ModelConfig, TinyModel  # noqa: E402
from astrai.trace import record  # noqa: E402
from astrai.trace.events import Arrive, Tokens  # noqa: E402
from astrai.workload import build, load_workload, parse_workload, run_workload  # noqa: E402

VOCAB = 128


def _hf_model(tied: bool = False, seed: int = 0, **extra):
    cfg = transformers.LlamaConfig(**extra,
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=tied, initializer_range=0.2, rms_norm_eps=1e-5, rope_theta=5000.0,
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(cfg).eval()
    model.generation_config.eos_token_id = None  # our scheduler runs to max_new_tokens
    return model


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<unk>", "<s>"])
    corpus = ["the cat sat on the mat", "pages hold keys and values", "a paged cache"] * 20
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """One random model saved twice (one file; many shards) with a tokenizer, and its HF twin."""
    root = tmp_path_factory.mktemp("ckpt")
    hf = _hf_model()
    hf.save_pretrained(root / "one")
    hf.save_pretrained(root / "sharded", max_shard_size="20KB")
    tok = _tokenizer()
    for d in ("one", "sharded"):
        tok.save(str(root / d / "tokenizer.json"))
    return root, hf, tok


def _copy(ckpt, tmp_path, name="sharded"):
    dst = tmp_path / "c"
    shutil.copytree(ckpt[0] / name, dst)
    return dst


def _edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def _prompts(n: int, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (int(5 + 7 * i),), generator=g).tolist() for i in range(n)]


def _generate(hf, prompt, n):
    ids = torch.tensor([prompt])
    # An explicit mask: generate() would otherwise treat prompt tokens equal to pad as padding.
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                      do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def test_config_maps_onto_model_config(ckpt):
    root, hf, _ = ckpt
    c = read_config(root / "sharded").config
    h = hf.config
    assert (c.vocab_size, c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.d_ff) == (
        h.vocab_size, h.hidden_size, h.num_hidden_layers, h.num_attention_heads,
        h.num_key_value_heads, h.intermediate_size)
    assert c.head_dim == h.hidden_size // h.num_attention_heads
    assert c.norm_eps == h.rms_norm_eps and c.rope_theta == 5000.0 and not c.tied_head


@pytest.mark.parametrize("layout", ["one", "sharded"])
def test_weights_and_dense_logits_match_transformers(ckpt, layout):
    root, hf, _ = ckpt
    assert len(list((root / "sharded").glob("*.safetensors"))) > 3  # really sharded
    model = load_checkpoint(root / layout)
    assert torch.equal(model.layers[1].wk, hf.model.layers[1].self_attn.k_proj.weight)
    assert torch.equal(model.head, hf.lm_head.weight)
    tokens = torch.tensor(_prompts(2, seed=3)[1:] * 2)
    with torch.no_grad():
        want = hf(tokens).logits
    torch.testing.assert_close(model.forward_dense(tokens), want, atol=1e-5, rtol=1e-5)


def test_greedy_through_paged_cache_equals_generate_under_preemption(ckpt):
    root, hf, _ = ckpt
    prompts = _prompts(6)
    new = [14, 10, 12, 9, 11, 8]
    wl = parse_workload({
        "cache": {"n_pages": 10, "page_size": 8},
        "model": {"checkpoint": str(root / "sharded")},
        "scheduler": {"max_batch": 4},
        "request": [{"name": f"r{i}", "prompt": p, "max_new_tokens": n}
                    for i, (p, n) in enumerate(zip(prompts, new))],
    })
    cache, model, scheduler = build(wl)
    outputs = run_workload(wl, scheduler)
    assert sum(t.preemptions for t in scheduler.tasks.values()) >= 1  # the pool was tight
    for i, (p, n) in enumerate(zip(prompts, new)):
        assert outputs[f"r{i}"] == _generate(hf, p, n), f"request r{i}"
    assert len({tuple(o) for o in outputs.values()}) == len(outputs)  # not one token repeated


def test_tied_embeddings(tmp_path):
    hf = _hf_model(tied=True, seed=5)
    hf.save_pretrained(tmp_path / "tied")
    model = load_checkpoint(tmp_path / "tied")
    assert model.config.tied_head and model.head is model.embed
    tokens = torch.tensor([_prompts(1, seed=4)[0]])
    with torch.no_grad():
        want = hf(tokens).logits
    torch.testing.assert_close(model.forward_dense(tokens), want, atol=1e-5, rtol=1e-5)


def test_llama3_rope_scaling(tmp_path):
    # original_max 64: most of head_dim 16's frequencies fall in the stretched or blended bands
    llama3 = {"rope_type": "llama3", "rope_theta": 5000.0, "factor": 8.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    hf = _hf_model(seed=6, rope_parameters=llama3)
    hf.save_pretrained(tmp_path / "l3")
    model = load_checkpoint(tmp_path / "l3")
    assert (model.config.rope_factor, model.config.rope_original_max_pos) == (8.0, 64)
    plain = TinyModel(dataclasses.replace(model.config, rope_factor=1.0))
    assert not torch.allclose(model.inv_freq, plain.inv_freq)  # the scaling changed something
    torch.testing.assert_close(model.inv_freq, hf.model.rotary_emb.inv_freq)
    tokens = torch.tensor([_prompts(3, seed=8)[2]])
    with torch.no_grad():
        want = hf(tokens).logits
    torch.testing.assert_close(model.forward_dense(tokens), want, atol=1e-5, rtol=1e-5)
    save_checkpoint(model, tmp_path / "again")  # and it saves what it loaded
    assert read_config(tmp_path / "again").config == model.config


def test_prompt_text_uses_the_checkpoint_tokenizer_and_trace_carries_text(ckpt):
    root, hf, tok = ckpt
    wl = parse_workload({
        "cache": {"n_pages": 8, "page_size": 8},
        "model": {"checkpoint": str(root / "one")},
        "request": [{"name": "A", "prompt_text": "the cat sat on the mat", "max_new_tokens": 9},
                    {"name": "B", "prompt_len": 6, "max_new_tokens": 4}],
    })
    ids = tok.encode("the cat sat on the mat").ids
    assert wl.requests[0].prompt == tuple(ids) and ids[0] == tok.token_to_id("<s>")
    trace = record(wl, lines=False)
    assert trace.outputs["A"] == _generate(hf, ids, 9)
    arrive = {ev.task: ev for ev in trace.events if isinstance(ev, Arrive)}
    assert arrive["A"].prompt_text == "the cat sat on the mat"
    assert arrive["B"].prompt_text is None
    final = trace.events[-1].state["output_text"]
    assert final == {"A": tok.decode(trace.outputs["A"], skip_special_tokens=True)}
    assert all(set(ev.text) <= {"A"} for ev in trace.events if isinstance(ev, Tokens))


def test_workload_round_trip_and_relative_path(ckpt, tmp_path):
    root, _, _ = ckpt
    shutil.copytree(root / "one", tmp_path / "model")
    (tmp_path / "mine.toml").write_text(
        '[cache]\nn_pages = 4\npage_size = 8\n[model]\ncheckpoint = "model"\n'
        '[[request]]\nname = "A"\nprompt_text = "a paged cache"\nmax_new_tokens = 3\n')
    wl = load_workload(tmp_path / "mine.toml")
    assert wl.checkpoint == str((tmp_path / "model").resolve())
    assert wl.model == read_config(tmp_path / "model").config and wl.dtype == "auto"
    assert parse_workload(wl.to_json()) == wl


def test_the_tiny_model_saved_as_a_checkpoint_is_a_transformers_llama(tmp_path):
    tiny = TinyModel(ModelConfig(seed=3, norm_eps=1e-5))
    save_checkpoint(tiny, tmp_path / "tiny")
    back = load_checkpoint(tmp_path / "tiny")
    assert back.config == ModelConfig(norm_eps=1e-5)  # the seed is not part of a checkpoint
    assert all(torch.equal(a, b) for a, b in zip(back.parameters(), tiny.parameters()))
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "tiny").eval()
    tokens = torch.tensor([list(range(40, 70))])
    with torch.no_grad():
        want = hf(tokens).logits
    torch.testing.assert_close(tiny.forward_dense(tokens), want, atol=1e-5, rtol=1e-5)


def test_half_precision_checkpoints_keep_their_dtype_where_asked(tmp_path):
    hf = _hf_model(seed=2).to(torch.bfloat16)
    hf.save_pretrained(tmp_path / "bf16")
    info = read_config(tmp_path / "bf16")
    assert info.dtype == "bfloat16"
    assert resolve_dtype(info, torch.device("cuda"), None) == torch.bfloat16
    assert resolve_dtype(info, torch.device("cpu"), None) == torch.float32
    assert load_checkpoint(info).dtype == torch.float32  # CPU default: widened, exactly
    model = load_checkpoint(info, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert torch.equal(model.layers[0].w_up, hf.model.layers[0].mlp.up_proj.weight)
    assert "bfloat16" in "\n".join(describe(tmp_path / "bf16"))


# ---- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, words", [
    ({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}, "model_type 'mistral'"),
    ({"auto_map": {"AutoModelForCausalLM": "modeling_x.Model"}}, "auto_map"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 5e5, "factor": 8.0}},
     "rope_type 'yarn'"),
    ({"attention_bias": True}, "attention_bias"),
    ({"hidden_act": "gelu"}, "hidden_act"),
])
def test_unsupported_configs_are_refused(ckpt, tmp_path, changes, words):
    path = _copy(ckpt, tmp_path)
    _edit_config(path, **changes)
    with pytest.raises(UnsupportedCheckpoint, match=words):
        read_config(path)


def test_missing_extra_and_misshapen_tensors_are_named(ckpt, tmp_path):
    path = _copy(ckpt, tmp_path, "one")
    weights = safetensors_torch.load_file(path / "model.safetensors")
    name = "model.layers.1.mlp.up_proj.weight"

    def save(w):
        safetensors_torch.save_file(w, path / "model.safetensors", metadata={"format": "pt"})

    save({k: v for k, v in weights.items() if k != name})
    with pytest.raises(CheckpointTensorError, match=f"{name}' is missing"):
        read_config(path)
    save({**weights, "model.layers.1.mlp.extra.weight": torch.zeros(2)})
    with pytest.raises(CheckpointTensorError, match="unexpected tensor 'model.layers.1.mlp.extra"):
        read_config(path)
    save({**weights, name: torch.zeros(95, 64)})
    with pytest.raises(CheckpointTensorError, match=rf"{name}' has shape \[95, 64\]"):
        load_checkpoint(path)


def test_index_must_name_files_inside_the_directory(ckpt, tmp_path):
    path = _copy(ckpt, tmp_path)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors"
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="model.norm.weight"):
        read_config(path)


def test_pickled_weights_are_not_read(ckpt, tmp_path):
    path = _copy(ckpt, tmp_path, "one")
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="only safetensors"):
        read_config(path)


def test_too_large_is_refused_before_allocating(ckpt, monkeypatch):
    import astrai.checkpoint as ck

    root = ckpt[0]
    need = model_bytes(read_config(root / "one").config, torch.float32)
    monkeypatch.setattr(ck, "available_bytes", lambda device: need - 1)
    with pytest.raises(CheckpointTooLarge, match="GiB"):
        load_checkpoint(root / "one")
    monkeypatch.setattr(ck, "available_bytes", lambda device: need)
    assert load_checkpoint(root / "one").dtype == torch.float32  # exactly enough fits


@pytest.mark.parametrize("request_, words", [
    ({"prompt_text": "the cat", "prompt": [1, 2]}, "cannot be combined with prompt"),
    ({"prompt_text": "the cat", "prompt_len": 4}, "cannot be combined with prompt_len"),
    ({"prompt_text": ""}, "non-empty"),
    ({"prompt_text": 3}, "must be a string"),
])
def test_prompt_text_errors(ckpt, request_, words):
    data = {"cache": {"n_pages": 4, "page_size": 8},
            "model": {"checkpoint": str(ckpt[0] / "one")},
            "request": [{"name": "A", "max_new_tokens": 2, **request_}]}
    with pytest.raises(WorkloadError, match=words):
        parse_workload(data)


def test_checkpoint_workload_errors(ckpt, tmp_path):
    base = {"cache": {"n_pages": 4, "page_size": 8},
            "request": [{"name": "A", "prompt_len": 3, "max_new_tokens": 2}]}
    one = str(ckpt[0] / "one")
    with pytest.raises(WorkloadError, match="model.n_layers cannot be combined"):
        parse_workload({**base, "model": {"checkpoint": one, "n_layers": 3}})
    with pytest.raises(WorkloadError, match="model.checkpoint: checkpoint .* not a directory"):
        parse_workload({**base, "model": {"checkpoint": str(tmp_path / "none")}})
    path = _copy(ckpt, tmp_path, "one")
    (path / "tokenizer.json").unlink()
    with pytest.raises(WorkloadError, match="needs a tokenizer.json"):
        parse_workload({**base, "model": {"checkpoint": str(path)},
                        "request": [{"name": "A", "prompt_text": "hi", "max_new_tokens": 2}]})
