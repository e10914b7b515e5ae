"""Qwen3 token counting offline: the known counts, the added tokens, and agreement with
llama.cpp's own tokenizer (an independent implementation) on a Qwen3 GGUF's vocabulary.

The known counts were measured with Qwen's tokenizer (shared/notes/embedded-engine.md,
section 5). The GGUF is the tiny Qwen3 of tests/support/qwen3_gguf.py, loaded vocabulary only.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.qwen3_gguf import cached_qwen3_gguf

from modelport.protocols.qwen3.prompt import render_prompt
from modelport.tokenizers import qwen3
from modelport.tokenizers.qwen3 import ADDED_TOKENS, Qwen3Tokenizer, qwen3_tokenizer

PARAGRAPH = (
    "Qwen3 是阿里云通义千问团队发布的大语言模型系列。It supports both thinking and "
    "non-thinking modes, 支持 119 种语言和方言。"
)
LOGGER = "modelport.tokenizers.qwen3"


@pytest.fixture(scope="module")
def tokenizer() -> Qwen3Tokenizer:
    loaded = qwen3_tokenizer()
    assert loaded is not None, "dashscope's qwen.tiktoken is missing: run `make install`"
    return loaded


@pytest.fixture
def first_load() -> Iterator[None]:
    """Each test using this sees qwen3_tokenizer() before its first call, and leaves it so."""
    qwen3._load.cache_clear()
    yield
    qwen3._load.cache_clear()


def test_a_chinese_greeting_is_one_token(tokenizer: Qwen3Tokenizer) -> None:
    assert tokenizer.encode("你好") == [108386]
    assert tokenizer.count("你好") == 1


@pytest.mark.parametrize(
    ("messages", "enable_thinking", "expected"),
    [
        pytest.param([{"role": "user", "content": "你好"}], None, 9, id="greeting"),
        pytest.param([{"role": "user", "content": "你好"}], False, 13, id="greeting-thinking-off"),
        pytest.param(
            [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": PARAGRAPH},
            ],
            False,
            62,
            id="system-paragraph-thinking-off",
        ),
    ],
)
def test_rendered_prompts_count_as_qwen3_counts_them(
    tokenizer: Qwen3Tokenizer,
    messages: list[dict[str, str]],
    enable_thinking: bool | None,
    expected: int,
) -> None:
    assert tokenizer.count(render_prompt(messages, enable_thinking=enable_thinking)) == expected


def test_a_mixed_paragraph(tokenizer: Qwen3Tokenizer) -> None:
    assert tokenizer.count(PARAGRAPH) == 39


def test_added_tokens_are_single_ids_from_151643(tokenizer: Qwen3Tokenizer) -> None:
    assert len(ADDED_TOKENS) == 26
    for offset, token in enumerate(ADDED_TOKENS):
        assert tokenizer.encode(token) == [151_643 + offset]
    assert tokenizer.encode("<|im_end|>") == [151_645]
    assert tokenizer.encode("</think>") == [151_668]
    # Inside text too: a user who types a tag costs what the model reads.
    ids = tokenizer.encode("a<think>b</tool_call>")
    assert ids == [*tokenizer.encode("a"), 151_667, *tokenizer.encode("b"), 151_658]


def test_text_is_normalised_to_nfc(tokenizer: Qwen3Tokenizer) -> None:
    decomposed = "cafe\u0301 re\u0301sume\u0301"
    assert tokenizer.encode(decomposed) == tokenizer.encode("café résumé")


def test_an_added_token_is_matched_before_normalisation(tokenizer: Qwen3Tokenizer) -> None:
    # NFC would merge the tag's ">" with a combining long solidus overlay into "≯"; Hugging
    # Face matches added tokens first and normalises only the text between them.
    assert tokenizer.encode("<think>\u0338x") == [151_667, *tokenizer.encode("\u0338x")]
    assert tokenizer.encode("e\u0301<think>") == [*tokenizer.encode("é"), 151_667]


def test_the_tokenizer_is_loaded_once(tokenizer: Qwen3Tokenizer) -> None:
    assert qwen3_tokenizer() is qwen3_tokenizer()


def test_threads_asking_at_once_share_one_load(first_load: None) -> None:
    barrier = threading.Barrier(4)
    loaded: list[Qwen3Tokenizer | None] = []

    def first_use() -> None:
        barrier.wait()
        loaded.append(qwen3_tokenizer())

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loaded[0] is not None
    assert all(each is loaded[0] for each in loaded)


def test_without_dashscope_there_is_no_tokenizer_and_one_warning(
    first_load: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(qwen3, "ranks_path", lambda: None)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert qwen3_tokenizer() is None
        assert qwen3_tokenizer() is None
    assert [record.getMessage() for record in caplog.records] == [
        "Qwen3 token counting is off: the dashscope package, which ships Qwen's BPE ranks "
        "(qwen.tiktoken), is not installed"
    ]


def test_without_tiktoken_there_is_no_tokenizer(
    first_load: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # `import tiktoken` now fails
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert qwen3_tokenizer() is None
    assert [record.getMessage() for record in caplog.records] == [
        "Qwen3 token counting is off: tiktoken is not installed"
    ]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"YQ== 0\nYg== 1\n", id="too-few-ranks"),
        pytest.param(b"not base64! 0\n", id="not-base64"),
        pytest.param(b"YQ==\n", id="no-rank"),
    ],
)
def test_a_file_that_is_not_qwens_ranks_is_refused(
    first_load: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    content: bytes,
) -> None:
    path = tmp_path / "qwen.tiktoken"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        Qwen3Tokenizer.from_ranks_file(path)
    monkeypatch.setattr(qwen3, "ranks_path", lambda: path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert qwen3_tokenizer() is None
    assert len(caplog.records) == 1
    assert "cannot read Qwen's BPE ranks" in caplog.records[0].getMessage()


# --- agreement with llama.cpp -------------------------------------------------------------

FIXED_TEXTS = [
    "",
    "Hello, world!",
    "你好，世界。今天天气怎么样？",
    "日本語のテキストと한국어 텍스트, ｶﾀｶﾅ",
    "😀👍🏽👨‍👩‍👧🇨🇳 emoji sequences",
    "def f(x):\n\treturn x ** 2  # square\n\n\nclass A:\n    pass\n",
    '{"city": "北京", "days": [1, 2, 3], "ok": true}',
    "   leading and trailing   ",
    "\n\n\n\n",
    "\r\n\r\n\t \t",
    "a  b   c    d     e",
    "12345678901234567890 3.14159 1,000,000",
    "don't I'LL we've THEY'RE it's",
    "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>',
    "x<|endoftext|>y<|fim_prefix|>z<|file_sep|>",
    PARAGRAPH,
    "Ünïcödé ñ ß ø å æ œ ﬁ",
    "مرحبا بالعالم שלום עולם",
    "नमस्ते दुनिया ສະບາຍດີ",
]

FRAGMENTS = st.sampled_from(
    [
        *ADDED_TOKENS, " ", "  ", "\n", "\n\n", "\t", "\r\n", "   \n", "你好", "通义千问", "ｶﾀｶﾅ",
        "😀", "👍🏽", "👨‍👩‍👧", "🇨🇳", "123456", "3.14", "don't", "I'LL", "{\"a\": [1, 2]}",
        "    return",
    ]
)  # fmt: skip
# Code points unassigned in Python's Unicode tables are left out: tiktoken's regex knows newer
# ones as letters and llama.cpp does not, which splits the text differently.
ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cn"]), max_size=16)
# NFC already, as the engine hands prompts to llama.cpp (which does not normalise).
MIXED_TEXT = st.lists(st.one_of(FRAGMENTS, ANY_TEXT), max_size=10).map(
    lambda pieces: unicodedata.normalize("NFC", "".join(pieces))
)


@pytest.fixture(scope="module")
def llama_vocab(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import llama_cpp

    path = cached_qwen3_gguf(tmp_path_factory.mktemp("qwen3-vocab"))
    return llama_cpp.Llama(str(path), vocab_only=True, verbose=False)


def llama_tokens(llama_vocab: Any, text: str) -> list[int]:
    tokens: list[int] = llama_vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    return tokens


@pytest.mark.engine
@pytest.mark.parametrize("text", FIXED_TEXTS)
def test_fixed_texts_match_llama_cpp(
    tokenizer: Qwen3Tokenizer, llama_vocab: Any, text: str
) -> None:
    assert tokenizer.encode(text) == llama_tokens(llama_vocab, text)


@pytest.mark.engine
@settings(max_examples=300, deadline=None)
@given(text=MIXED_TEXT)
def test_random_texts_match_llama_cpp(
    tokenizer: Qwen3Tokenizer, llama_vocab: Any, text: str
) -> None:
    assert tokenizer.encode(text) == llama_tokens(llama_vocab, text)
