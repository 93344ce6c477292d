"""Chat prompts: messages put through a checkpoint's chat template, the text an instruct model
was trained to read.

    text = chat_prompt("smollm2-135m-instruct", [{"role": "user", "content": "Hi"}])
    # '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, ...<|im_end|>\\n'
    # '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'

The template is the checkpoint's `chat_template.jinja` (or the `chat_template` of its
tokenizer_config.json): a Jinja template, so data, rendered in Jinja's immutable sandbox (no
attribute access to Python internals, nothing imported); jinja2 comes with torch. Blocks are
trimmed as Hugging Face renders them, so the text is the one the model saw in training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from astrai.errors import CheckpointError, TokenizerError
from astrai.files import read_text

__all__ = ["chat_prompt", "chat_template"]

MAX_TEMPLATE_BYTES = 1 << 20
ROLES = ("system", "user", "assistant")


def chat_template(checkpoint: str | Path) -> str:
    """The checkpoint's chat template (a folder or a named model)."""
    from astrai.models.store import checkpoint_dir

    folder = checkpoint_dir(checkpoint)
    path = folder / "chat_template.jinja"
    if os.path.lexists(path):
        return read_text(path, CheckpointError, MAX_TEMPLATE_BYTES)
    config = folder / "tokenizer_config.json"
    if os.path.lexists(config):
        text = read_text(config, CheckpointError, 64 * MAX_TEMPLATE_BYTES)
        try:
            template = json.loads(text).get("chat_template")
        except (ValueError, AttributeError):
            raise CheckpointError(f"{config}: not a JSON object") from None
        if isinstance(template, str):
            return template
    raise CheckpointError(f"{folder}: has no chat template (chat_template.jinja or "
                          "tokenizer_config.json's chat_template)")


def _raise(message):
    raise TokenizerError(f"the chat template refused the messages: {message}")


def chat_prompt(checkpoint: str | Path, messages: list[dict],
                add_generation_prompt: bool = True) -> str:
    """The prompt text for `messages` ({"role": "system" | "user" | "assistant", "content":
    text}), ending where the assistant's answer begins (add_generation_prompt)."""
    if not isinstance(messages, list) or not messages:
        raise TokenizerError("a chat needs a non-empty list of messages")
    for i, m in enumerate(messages):
        if (not isinstance(m, dict) or set(m) != {"role", "content"}
                or m["role"] not in ROLES or not isinstance(m["content"], str)):
            raise TokenizerError(f"message {i} must be {{'role': one of {', '.join(ROLES)}, "
                                 f"'content': text}}, got {m!r}"[:200])
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    source = chat_template(checkpoint)
    try:
        return env.from_string(source).render(messages=messages,
                                              add_generation_prompt=add_generation_prompt)
    except TemplateError as e:
        raise CheckpointError(f"{checkpoint}: its chat template cannot be rendered: "
                              f"{e}") from None
