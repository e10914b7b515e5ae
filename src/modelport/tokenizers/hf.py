"""Exact token counts from a Hugging Face `tokenizer.json` (the file vLLM, SGLang and TGI load
with the model), through the `tokenizers` library, and what the files beside it say about the
chat template: `chat_template.jinja`, or `tokenizer_config.json`'s "chat_template", with its
"bos_token" and "eos_token".

`tokenizers` is imported only when a backend names a tokenizer.json, and loading one takes a
fraction of a second to a few seconds (a large vocabulary): callers load it off the event loop.
Imports nothing from modelport.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tokenizers

CONFIG_NAME = "tokenizer_config.json"
TEMPLATE_NAME = "chat_template.jinja"  # where newer transformers save the template


class HFTokenizer:
    """A tokenizer.json's encoder; `count` is safe to call from several threads."""

    def __init__(self, tokenizer: tokenizers.Tokenizer) -> None:
        # A tokenizer saved for training may pad or truncate every encoding: counts need
        # neither.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer

    @classmethod
    def from_file(cls, path: Path) -> HFTokenizer:
        """Raises OSError for a missing file, ValueError for one that is not a tokenizer.json,
        ImportError without the `tokenizers` library."""
        import tokenizers  # only for backends that name a tokenizer.json

        if not path.is_file():
            raise FileNotFoundError(f"no such file: {str(path)!r}")
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # the library raises a bare Exception for a malformed file
            raise ValueError(f"{str(path)!r} is not a Hugging Face tokenizer.json: {exc}") from None
        return cls(tokenizer)

    def count(self, text: str) -> int:
        """Tokens in `text` as the engine counts text it is given or generates: added tokens
        matched as themselves, no special tokens added around it (a chat template writes the
        ones a prompt has into its text)."""
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


@dataclass(frozen=True)
class TokenizerConfig:
    """What the files beside a tokenizer.json say about rendering a prompt. A token text is
    None when it is not known (no tokenizer_config.json), "" when the model has no such token."""

    # Chat templates by name: "default", and e.g. "tool_use" for requests with tools, as
    # transformers chooses between them.
    chat_templates: Mapping[str, str] = field(default_factory=dict)
    bos_token: str | None = None
    eos_token: str | None = None


def read_tokenizer_config(directory: Path) -> TokenizerConfig:
    """The chat template(s) and special-token texts from `directory` (the tokenizer.json's):
    chat_template.jinja wins over tokenizer_config.json's "chat_template", as in transformers.
    Missing files give an empty configuration; ValueError for a malformed one."""
    raw: Any = {}
    config_path = directory / CONFIG_NAME
    found = config_path.is_file()
    if found:
        try:
            raw = json.loads(config_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{str(config_path)!r} is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{str(config_path)!r} is not a JSON object")
    templates = _templates(raw.get("chat_template"), config_path)
    template_path = directory / TEMPLATE_NAME
    if template_path.is_file():
        templates["default"] = template_path.read_text(encoding="utf-8")
    return TokenizerConfig(
        chat_templates=templates,
        bos_token=_token_text(raw.get("bos_token")) if found else None,
        eos_token=_token_text(raw.get("eos_token")) if found else None,
    )


def _templates(value: Any, where: Path) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):
        return {"default": value}
    # Several named templates: [{"name": "default", "template": "..."}, {"name": "tool_use", …}]
    if isinstance(value, list) and all(
        isinstance(item, dict)
        and isinstance(item.get("name"), str)
        and isinstance(item.get("template"), str)
        for item in value
    ):
        return {item["name"]: item["template"] for item in value}
    raise ValueError(f"{str(where)!r}: chat_template is neither a string nor a list of templates")


def _token_text(value: Any) -> str:
    """A special token as tokenizer_config.json writes it (its text, or an AddedToken object);
    "" for a token the model does not have (null), which transformers renders as nothing."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return ""
