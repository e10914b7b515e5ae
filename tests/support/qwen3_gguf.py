"""A tiny Qwen3 GGUF with random weights but Qwen3's real tokenizer and chat template.

No Qwen3 GGUF can be downloaded here, yet what must be proven about serving one (the prompt
the template renders, thinking on/off, tools, the exact token count) depends only on the
tokenizer and the template, not on the weights. So this module writes a `qwen3`-architecture
file the way llama.cpp's converter writes a real one, with:

- Qwen's byte-level BPE ranks (`qwen.tiktoken`, shipped in the `dashscope` wheel and shared by
  Qwen1.5/2/2.5/3): 151,643 tokens, with the merge list derived from the ranks;
- Qwen3's 26 added tokens (ids 151643..151668) and the padding to 151,936 rows;
- the official Qwen3 chat template (tests/data/qwen3.jinja);
- a 2-layer model with 64-wide embeddings and random weights from a fixed seed (25 MB).

The token list and merges were checked once against llama.cpp's own Qwen2 vocabulary file
(`models/ggml-vocab-qwen2.gguf`, converted from Hugging Face): all 151,643 tokens, their types
and all 151,387 merges are identical. `reference_encoding()` is the independent check the
tests use: tiktoken on the same ranks, with Qwen's pre-tokenizer pattern, NFC normalisation
and the added tokens, which is how Hugging Face's Qwen2 tokenizer counts.
`cached_qwen3_gguf` builds the file once per input hash (about 3 s).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import os
import unicodedata
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt
import tiktoken

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "data" / "qwen3.jinja"

N_BASE_TOKENS = 151_643  # the BPE ranks; the added tokens follow
N_VOCAB = 151_936  # Qwen3's embedding rows: the ids past the added tokens are padding

# Qwen3's added tokens from id 151643, with `special` as tokenizer_config.json gives it.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
TOKEN_IDS = {text: N_BASE_TOKENS + i for i, (text, _) in enumerate(ADDED_TOKENS)}
ENDOFTEXT = TOKEN_IDS["<|endoftext|>"]
IM_END = TOKEN_IDS["<|im_end|>"]
# What llama.cpp ends generation on for this vocabulary: eos, <|endoftext|> and the FIM
# separators it recognises by name.
EOG_IDS = tuple(
    TOKEN_IDS[text]
    for text in ("<|endoftext|>", "<|im_end|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")
)

# Qwen2's pre-tokenizer (tokenizer.json), the same for Qwen3.
PRETOKENIZER = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The model's shape: Qwen3-0.6B's layout (query heads wider than the embedding, grouped KV
# heads, q/k norms, tied output embedding) at toy size.
N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = 32
N_FF = 128
CONTEXT_LENGTH = 40_960  # as Qwen3's GGUFs declare; the engine's context comes from the card
SEED = 20250429


def ranks_path() -> Path:
    """qwen.tiktoken inside the installed dashscope package, found without importing it (its
    __init__ needs the SDK's dependencies, which are not installed)."""
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("dashscope is not installed: run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"


@cache
def bpe_ranks() -> dict[bytes, int]:
    """Token bytes -> rank (= token id) for the 151,643 byte-level tokens."""
    ranks: dict[bytes, int] = {}
    for line in ranks_path().read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if sorted(ranks.values()) != list(range(N_BASE_TOKENS)):
        raise ValueError("qwen.tiktoken does not hold ranks 0..151642 exactly once")
    return ranks


@cache
def reference_encoding() -> tiktoken.Encoding:
    """An independent Qwen3 tokenizer: tiktoken's BPE, not llama.cpp's."""
    return tiktoken.Encoding(
        "qwen3-reference",
        pat_str=PRETOKENIZER,
        mergeable_ranks=bpe_ranks(),
        special_tokens=TOKEN_IDS,
    )


def reference_tokens(text: str) -> list[int]:
    """`text` as Hugging Face's Qwen3 tokenizer encodes it: NFC first, and every added token
    matched as itself wherever it appears."""
    normalized = unicodedata.normalize("NFC", text)
    return reference_encoding().encode(normalized, allowed_special="all", disallowed_special=())


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each byte, the form BPE tokens take in a GGUF: printable
    Latin-1 bytes stand for themselves, the other 68 take the code points from 256 on."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    symbols: list[str] = [""] * 256
    extra = 256
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(extra)
            extra += 1
    return symbols


def derive_merges(ranks: dict[bytes, int]) -> Iterator[tuple[bytes, bytes]]:
    """The BPE merge list, in rank order, that reproduces tiktoken's rank-based encoding.

    A token of rank r is what byte-level BPE builds from its bytes using only the merges of
    lower rank, and that must stop at exactly two pieces: the merge that makes the token.
    """
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) < 2:
            continue
        pieces = [token[i : i + 1] for i in range(len(token))]
        while len(pieces) > 2:
            best: tuple[int, int] | None = None
            for i in range(len(pieces) - 1):
                merged = ranks.get(pieces[i] + pieces[i + 1])
                if merged is not None and merged < rank and (best is None or merged < best[0]):
                    best = (merged, i)
            if best is None:
                break
            i = best[1]
            pieces[i : i + 2] = [pieces[i] + pieces[i + 1]]
        if len(pieces) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) is not one merge of lower ranks")
        yield pieces[0], pieces[1]


def gguf_vocabulary() -> tuple[list[str], list[int], list[str]]:
    """Token texts, token types and merges as llama.cpp's converter writes them for Qwen3."""
    ranks = bpe_ranks()
    symbols = _byte_symbols()

    def text(token: bytes) -> str:
        return "".join(symbols[b] for b in token)

    by_id = sorted(ranks, key=ranks.__getitem__)
    tokens = [text(token) for token in by_id]
    types = [gguf.TokenType.NORMAL] * N_BASE_TOKENS
    for added, special in ADDED_TOKENS:
        tokens.append(added)
        # The converter makes an added token CONTROL when it is special or looks like <|…|>;
        # the others (<think>, <tool_call>, …) are USER_DEFINED: text the model may emit.
        looks_special = added.startswith("<|") and added.endswith("|>")
        control = special or looks_special
        types.append(gguf.TokenType.CONTROL if control else gguf.TokenType.USER_DEFINED)
    for i in range(len(tokens), N_VOCAB):
        tokens.append(f"[PAD{i}]")
        types.append(gguf.TokenType.UNUSED)
    merges = [f"{text(left)} {text(right)}" for left, right in derive_merges(ranks)]
    return tokens, [int(t) for t in types], merges


def _weights() -> Iterator[tuple[str, npt.NDArray[np.float16] | npt.NDArray[np.float32]]]:
    """Every tensor llama.cpp's qwen3 loader needs, in numpy's (rows, columns) order (GGUF
    stores the dimensions reversed). Matrices are f16, norms f32; the output layer is the
    token embedding (tied, as in Qwen3-0.6B)."""
    rng = np.random.default_rng(SEED)
    names = gguf.TENSOR_NAMES
    tensor = gguf.MODEL_TENSOR

    def matrix(rows: int, columns: int) -> npt.NDArray[np.float16]:
        return rng.normal(0.0, 0.5, size=(rows, columns)).astype(np.float16)

    def norm(width: int) -> npt.NDArray[np.float32]:
        return np.ones(width, dtype=np.float32)

    yield names[tensor.TOKEN_EMBD] + ".weight", matrix(N_VOCAB, N_EMBD)
    yield names[tensor.OUTPUT_NORM] + ".weight", norm(N_EMBD)
    for bid in range(N_LAYER):
        layer: dict[gguf.MODEL_TENSOR, npt.NDArray[np.float16] | npt.NDArray[np.float32]] = {
            tensor.ATTN_NORM: norm(N_EMBD),
            tensor.ATTN_Q: matrix(N_HEAD * HEAD_DIM, N_EMBD),
            tensor.ATTN_K: matrix(N_HEAD_KV * HEAD_DIM, N_EMBD),
            tensor.ATTN_V: matrix(N_HEAD_KV * HEAD_DIM, N_EMBD),
            tensor.ATTN_OUT: matrix(N_EMBD, N_HEAD * HEAD_DIM),
            tensor.ATTN_Q_NORM: norm(HEAD_DIM),
            tensor.ATTN_K_NORM: norm(HEAD_DIM),
            tensor.FFN_NORM: norm(N_EMBD),
            tensor.FFN_GATE: matrix(N_FF, N_EMBD),
            tensor.FFN_UP: matrix(N_FF, N_EMBD),
            tensor.FFN_DOWN: matrix(N_EMBD, N_FF),
        }
        for kind, array in layer.items():
            yield names[kind].format(bid=bid) + ".weight", array


def write_qwen3_gguf(path: Path) -> None:
    """Write the model to `path`, keys in the converter's order (the hyperparameters before
    the large tokenizer arrays, which the engine's header scan relies on)."""
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN3])
    writer.add_name("Qwen3 tiny random (modelport tests)")
    writer.add_context_length(CONTEXT_LENGTH)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_key_length(HEAD_DIM)
    writer.add_value_length(HEAD_DIM)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    tokens, types, merges = gguf_vocabulary()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    # As in Qwen3's config: eos <|im_end|>, bos and padding <|endoftext|>, no BOS prepended.
    writer.add_eos_token_id(IM_END)
    writer.add_pad_token_id(ENDOFTEXT)
    writer.add_bos_token_id(ENDOFTEXT)
    writer.add_add_bos_token(False)
    writer.add_chat_template(TEMPLATE_PATH.read_text(encoding="utf-8"))

    for name, array in _weights():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _input_hash() -> str:
    digest = hashlib.sha256()
    digest.update(Path(__file__).read_bytes())
    digest.update(TEMPLATE_PATH.read_bytes())
    digest.update(ranks_path().read_bytes())
    digest.update(importlib.metadata.version("gguf").encode())
    return digest.hexdigest()[:16]


def cached_qwen3_gguf(directory: Path) -> Path:
    """The model file in `directory`, built there unless a build from the same inputs (this
    module, the template, the ranks, the gguf version) is already present."""
    path = directory / f"qwen3-tiny-{_input_hash()}.gguf"
    if path.is_file():
        return path
    for stale in directory.glob("qwen3-tiny-*.gguf"):
        stale.unlink()
    partial = path.with_suffix(f".{os.getpid()}.partial")
    try:
        write_qwen3_gguf(partial)
        os.replace(partial, path)  # whole or absent, should the run be interrupted
    finally:
        partial.unlink(missing_ok=True)
    return path
