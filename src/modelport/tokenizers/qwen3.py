"""Exact Qwen3 token counts offline: tiktoken over Qwen's byte-level BPE ranks.

Qwen1.5, 2, 2.5 and 3 share one vocabulary: 151,643 byte-level BPE tokens, whose ranks ship as
`qwen.tiktoken` in the `dashscope` package (installed without its dependencies: the file is
read, the package never imported), followed by Qwen3's 26 added tokens from id 151,643. This
encodes as Hugging Face's Qwen3 tokenizer does: the added tokens are matched as themselves
wherever they appear (text that contains `<think>` costs what the model sees), the text between
them is normalised to NFC, split by Qwen's pre-tokenizer pattern and BPE-encoded.

`qwen3_tokenizer()` loads it on first use (a few tenths of a second, mostly parsing the
2.5 MB file) and shares it. Where dashscope or tiktoken is missing it returns None, after one
warning, and callers fall back to whatever count they have. Imports nothing from modelport.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import logging
import re
import threading
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

log = logging.getLogger(__name__)

N_BASE_TOKENS = 151_643  # the BPE ranks, ids 0..151642; the added tokens follow

# Qwen3's added tokens (tokenizer_config.json), ids 151643.. in this order.
ADDED_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)
ADDED_TOKEN_IDS = {text: N_BASE_TOKENS + i for i, text in enumerate(ADDED_TOKENS)}

# Qwen2's pre-tokenizer (tokenizer.json), unchanged in Qwen3.
PRETOKENIZER = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_ADDED = re.compile("|".join(map(re.escape, ADDED_TOKENS)))


class Qwen3Tokenizer:
    """Encodes text into Qwen3 token ids. Safe to share between threads."""

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self._encoding = encoding

    @classmethod
    def from_ranks_file(cls, path: Path) -> Qwen3Tokenizer:
        """The tokenizer over the ranks in `path` (qwen.tiktoken: one `base64-token rank` per
        line). Raises OSError or ValueError for a file that is not Qwen's ranks, ImportError
        without tiktoken."""
        import tiktoken  # a runtime dependency, but its absence must only cost the counts

        encoding = tiktoken.Encoding(
            "qwen3",
            pat_str=PRETOKENIZER,
            mergeable_ranks=_read_ranks(path),
            special_tokens=ADDED_TOKEN_IDS,
        )
        return cls(encoding)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, added tokens included, as Qwen3's tokenizer gives them."""
        if unicodedata.is_normalized("NFC", text):
            return self._encoding.encode(text, allowed_special="all", disallowed_special=())
        # Hugging Face matches the added tokens before it normalises, so NFC applies to the
        # text between them: it cannot merge a tag's `>` with a following U+0338 into `≯`.
        ids: list[int] = []
        start = 0
        for match in _ADDED.finditer(text):
            ids += self._ordinary(text[start : match.start()])
            ids.append(ADDED_TOKEN_IDS[match.group()])
            start = match.end()
        ids += self._ordinary(text[start:])
        return ids

    def count(self, text: str) -> int:
        """How many tokens `text` is to Qwen3."""
        return len(self.encode(text))

    def _ordinary(self, text: str) -> list[int]:
        return self._encoding.encode_ordinary(unicodedata.normalize("NFC", text))


def ranks_path() -> Path | None:
    """Where the installed dashscope keeps qwen.tiktoken; None without dashscope. Found without
    importing the package, whose __init__ needs the SDK's dependencies."""
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"


_load_lock = threading.Lock()


def qwen3_tokenizer() -> Qwen3Tokenizer | None:
    """The shared Qwen3 tokenizer, loaded by the first call; None where it cannot be loaded
    (logged once)."""
    with _load_lock:  # one load, even when the first calls come from several threads
        return _load()


@functools.cache
def _load() -> Qwen3Tokenizer | None:
    path = ranks_path()
    if path is None:
        log.warning(
            "Qwen3 token counting is off: the dashscope package, which ships Qwen's BPE ranks "
            "(qwen.tiktoken), is not installed"
        )
        return None
    try:
        return Qwen3Tokenizer.from_ranks_file(path)
    except ImportError:
        log.warning("Qwen3 token counting is off: tiktoken is not installed")
    except (OSError, ValueError) as exc:
        log.warning("Qwen3 token counting is off: cannot read Qwen's BPE ranks: %s", exc)
    return None


def _read_ranks(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError:  # binascii.Error included
            raise ValueError(f"{path}, line {number}: not `<base64 token> <rank>`") from None
    if set(ranks.values()) != set(range(N_BASE_TOKENS)) or len(ranks) != N_BASE_TOKENS:
        raise ValueError(f"{path} does not hold ranks 0..{N_BASE_TOKENS - 1} once each")
    return ranks
