"""Named models: the set-up conversion into the model cache (the same bytes twice, a damaged copy
rebuilt, a folder it did not make left alone) and each bad input a one-line named error: an
unknown name, a model not installed, a damaged converted file, a prompt past the context."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from astrai.chat import chat_prompt
from astrai.checkpoint import main as checkpoint_main
from astrai.checkpoint import read_config, save_checkpoint
from astrai.errors import (
    CheckpointError,
    ContextTooLong,
    ModelDamaged,
    ModelNotInstalled,
    OutputError,
    TokenizerError,
    UnknownModel,
    WorkloadError,
)
from astrai.model import ModelConfig, TinyModel
from astrai.models import MODELS, ModelSource
from astrai.models.install import install
from astrai.models.install import main as install_main
from astrai.models.store import STAMP, check, locate, model_dir, read_stamp
from astrai.workload import load_workload, parse_workload

NAME = "smollm2-135m-instruct"
SMALL = ("config.json", "tokenizer.json", "chat_template.jinja", STAMP)
INSTALLED = model_dir(NAME)  # where set-up put it (read before any test moves the cache)
INSTALLED_PROBLEM = check(NAME)


@pytest.fixture
def models(tmp_path, monkeypatch):
    """An empty model cache of the test's own; the installed one is left alone."""
    root = tmp_path / "models"
    monkeypatch.setenv("ASTRAI_MODELS", str(root))
    return root


def _workload(checkpoint, **request):
    return {"cache": {"n_pages": 8, "page_size": 16}, "model": {"checkpoint": checkpoint},
            "request": [{"name": "A", "prompt_len": 4, "max_new_tokens": 2, **request}]}


def _one_line_error(capsys, code):
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_an_unknown_name_is_named_with_the_known_ones(models, capsys):
    with pytest.raises(UnknownModel, match=f"no model named 'smolm2' .*known: {NAME}"):
        read_config("smolm2")
    with pytest.raises(WorkloadError, match=f"no model named 'smolm2' .*known: {NAME}"):
        parse_workload(_workload("smolm2"))
    assert "smolm2" in _one_line_error(capsys, checkpoint_main(["smolm2"]))
    assert "smolm2" in _one_line_error(capsys, install_main(["smolm2"]))
    assert not models.exists()  # nothing was made for it


def test_a_model_not_installed_names_make_setup(models, capsys, monkeypatch):
    with pytest.raises(ModelNotInstalled, match="make setup"):
        locate(NAME)
    with pytest.raises(WorkloadError, match="not converted yet.*make setup"):
        parse_workload(_workload(NAME))
    assert "make setup" in _one_line_error(capsys, checkpoint_main([NAME]))
    # a package that is not there at all: named, before anything is looked for in the cache
    monkeypatch.setitem(MODELS, "absent", ModelSource("absent", "t", "MIT",
                                                      "no_such_model_package", "m.gguf", "0", 1))
    with pytest.raises(ModelNotInstalled, match="no_such_model_package is not installed"):
        locate("absent")
    with pytest.raises(ModelNotInstalled, match="no_such_model_package"):
        install("absent")
    assert not models.exists()


def test_help_prints_usage(capsys):
    with pytest.raises(SystemExit) as done:
        checkpoint_main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m astrai.checkpoint") and NAME in out


def test_a_folder_the_converter_did_not_make_is_left_alone(models, capsys):
    folder = model_dir(NAME)
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    (folder / "config.json").write_text("{}")
    with pytest.raises(OutputError, match="'notes.txt', which the converter did not write"):
        install(NAME)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "notes.txt"]
    assert (folder / "config.json").read_text() == "{}"
    with pytest.raises(ModelDamaged, match="make setup"):
        locate(NAME)  # and at use: damaged, with the fix named
    shutil.rmtree(folder)
    folder.write_text("a file where the folder goes")
    assert "in the way" in _one_line_error(capsys, install_main([NAME]))
    assert folder.read_text() == "a file where the folder goes"


def test_a_source_file_that_is_not_the_pinned_one_is_refused(models, tmp_path, monkeypatch):
    pkg = tmp_path / "pkgs" / "fake_model_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    (pkg / "m.gguf").write_bytes(b"GGUF not really")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    real = hashlib.sha256(b"GGUF not really").hexdigest()
    monkeypatch.setitem(MODELS, "fake", ModelSource("fake", "t", "MIT", "fake_model_pkg",
                                                    "m.gguf", "0" * 64, 15))
    with pytest.raises(ModelDamaged, match="not the pinned file"):
        install("fake")
    monkeypatch.setitem(MODELS, "fake", ModelSource("fake", "t", "MIT", "fake_model_pkg",
                                                    "m.gguf", real, 15))
    with pytest.raises(CheckpointError, match="not a readable GGUF file"):
        install("fake")
    assert list(models.iterdir()) == []  # the temporary folder went with the failure


def test_a_prompt_past_the_context_is_refused(tmp_path):
    save_checkpoint(TinyModel(ModelConfig()), tmp_path / "tiny")  # context 4096 tokens
    assert read_config(tmp_path / "tiny").context == 4096
    data = _workload(str(tmp_path / "tiny"), prompt_len=4000, max_new_tokens=97)
    data["cache"]["n_pages"] = 300
    parse_workload(data)  # positions 0..4095: the last new token is never fed back
    data["request"][0]["max_new_tokens"] = 98
    with pytest.raises(ContextTooLong, match=r"request\[0\] has 4000 prompt tokens.*4096"):
        parse_workload(data)


def test_chat_prompt_refusals(tmp_path):
    save_checkpoint(TinyModel(ModelConfig()), tmp_path / "tiny")
    with pytest.raises(CheckpointError, match="has no chat template"):
        chat_prompt(tmp_path / "tiny", [{"role": "user", "content": "hi"}])
    template = tmp_path / "tiny" / "chat_template.jinja"
    for text in ("{% for m in messages %}", "{{ ''.__class__.__mro__[1].__subclasses__() }}"):
        template.write_text(text)  # a broken template; one reaching for Python's internals
        with pytest.raises(CheckpointError, match="cannot be rendered"):
            chat_prompt(tmp_path / "tiny", [{"role": "user", "content": "hi"}])
    template.write_text("{{ raise_exception('only one message') }}")
    with pytest.raises(TokenizerError, match="refused the messages: only one message"):
        chat_prompt(tmp_path / "tiny", [{"role": "user", "content": "hi"}])
    for bad in ([], [{"role": "robot", "content": "hi"}], [{"role": "user"}], "hi"):
        with pytest.raises(TokenizerError):
            chat_prompt(tmp_path / "tiny", bad)


@pytest.mark.skipif(INSTALLED_PROBLEM is not None, reason="the real model is not installed "
                    f"({INSTALLED_PROBLEM}); make setup")
def test_conversion_gives_the_same_bytes_and_rebuilds_a_damaged_copy(models):
    # The copy set-up made (another process, on this machine) against one made now.
    first = read_stamp(INSTALLED)
    folder = model_dir(NAME)
    folder.mkdir(parents=True)
    for name in SMALL:
        shutil.copy(INSTALLED / name, folder / name)
    # a converted folder whose weights were cut short
    with open(INSTALLED / "model.safetensors", "rb") as f:
        (folder / "model.safetensors").write_bytes(f.read(4096))
    assert "model.safetensors is damaged" in check(NAME)
    with pytest.raises(ModelDamaged, match="model.safetensors is damaged.*make setup"):
        read_config(NAME)
    path, made = install(NAME)
    assert made and path == folder and check(NAME) is None
    assert read_stamp(folder) == first  # every file's sha256, the source's, the converter's
    assert read_config(NAME).path == folder
    assert install(NAME) == (folder, False)  # intact: left as it is
    assert sorted(p.name for p in models.iterdir()) == [NAME]  # no temporary folder left


def test_a_workload_file_names_the_model_or_a_folder_beside_it(tmp_path, models):
    toml = '[cache]\nn_pages = 4\npage_size = 8\n[model]\ncheckpoint = "{}"\n' \
           '[[request]]\nname = "A"\nprompt_len = 3\nmax_new_tokens = 2\n'
    (tmp_path / "w.toml").write_text(toml.format("smolm2"))
    with pytest.raises(WorkloadError, match="no model named 'smolm2'"):
        load_workload(tmp_path / "w.toml")
    save_checkpoint(TinyModel(ModelConfig()), tmp_path / "smolm2")  # a folder of that name
    assert load_workload(tmp_path / "w.toml").checkpoint == str(tmp_path / "smolm2")
    (tmp_path / "w.toml").write_text(toml.format(NAME))
    with pytest.raises(WorkloadError, match="not converted yet"):  # the name, not a folder
        load_workload(tmp_path / "w.toml")
