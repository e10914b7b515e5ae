"""Qwen3's Hugging Face tokenizer files, written from Qwen's BPE ranks: no model hub here.

`tokenizer.json` is laid out as Qwen2/Qwen3's own (the file vLLM and SGLang load): NFC
normalisation, Qwen's pre-tokenizer regex then byte-level mapping, a byte-level BPE model over
the 151,643 ranks of `qwen.tiktoken` (dashscope's wheel) with the merge list derived from the
ranks (`qwen3_gguf.derive_merges`, checked there against llama.cpp's Qwen2 vocabulary), and
Qwen3's 26 added tokens from id 151643. `tokenizer_config.json` carries the official chat
template (tests/data/qwen3.jinja) and the special tokens as Qwen3's does (no BOS, eos
`<|im_end|>`).

`cached_qwen3_tokenizer_dir` writes both once per input hash (about 3 s, a 7 MB file).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tests.support.qwen3_gguf import (
    ADDED_TOKENS,
    N_BASE_TOKENS,
    PRETOKENIZER,
    TEMPLATE_PATH,
    _byte_symbols,
    bpe_ranks,
    derive_merges,
    ranks_path,
)

BYTE_LEVEL = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}


def tokenizer_json() -> dict[str, Any]:
    """Qwen3's tokenizer.json, as a JSON value."""
    ranks = bpe_ranks()
    symbols = _byte_symbols()

    def text(token: bytes) -> str:
        return "".join(symbols[b] for b in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = [f"{text(left)} {text(right)}" for left, right in derive_merges(ranks)]
    added = [
        {
            "id": N_BASE_TOKENS + i,
            "content": content,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": special,
        }
        for i, (content, special) in enumerate(ADDED_TOKENS)
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": PRETOKENIZER},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {"type": "ByteLevel", **BYTE_LEVEL},
            ],
        },
        "post_processor": {"type": "ByteLevel", **BYTE_LEVEL},
        "decoder": {"type": "ByteLevel", **BYTE_LEVEL},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def tokenizer_config() -> dict[str, Any]:
    """The parts of Qwen3's tokenizer_config.json that rendering a prompt reads."""
    return {
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "chat_template": TEMPLATE_PATH.read_text(encoding="utf-8"),
        "model_max_length": 131072,
        "tokenizer_class": "Qwen2Tokenizer",
    }


def _input_hash() -> str:
    digest = hashlib.sha256()
    digest.update(Path(__file__).read_bytes())
    digest.update((Path(__file__).parent / "qwen3_gguf.py").read_bytes())
    digest.update(TEMPLATE_PATH.read_bytes())
    digest.update(ranks_path().read_bytes())
    return digest.hexdigest()[:16]


def cached_qwen3_tokenizer_dir(directory: Path) -> Path:
    """A folder in `directory` holding tokenizer.json and tokenizer_config.json, written unless
    a folder from the same inputs is already there."""
    target = directory / f"qwen3-tokenizer-{_input_hash()}"
    if (target / "tokenizer_config.json").is_file():
        return target
    partial = directory / f"qwen3-tokenizer.{os.getpid()}.partial"
    partial.mkdir(parents=True, exist_ok=True)
    (partial / "tokenizer.json").write_text(
        json.dumps(tokenizer_json(), ensure_ascii=False), encoding="utf-8"
    )
    (partial / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(), ensure_ascii=False, indent=2), encoding="utf-8"
    )
    os.replace(partial, target)  # whole or absent, should the run be interrupted
    return target
