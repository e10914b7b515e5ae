"""How each kind of OpenAI-compatible upstream differs from the others: one row per dialect.

The differences between vLLM, SGLang, llama.cpp's server, Ollama and hosted providers are data,
not subclasses: `upstream_request.build_request_body` reads the row for the configured dialect.
Extend a row (or add a column) when an engine grows a quirk. Pure: no I/O. docs/backends.md has
a table of these rows: keep it in step.

Reading the stream does not depend on the dialect: reasoning arrives as `reasoning_content`
(SGLang, llama.cpp, older vLLM) or `reasoning` (vLLM >= 0.11, Ollama) and both are accepted.

The engine's own tokenizer endpoints (`tokenize`, `apply_template`) are where the backend asks
for exact token counts when the upstream reported no usage and no tokenizer runs in-process
(`backends/upstream_tokens.py`); their paths are relative to the server's root, the base URL
without its `/v1`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from modelport.core.catalog import Dialect

# Sampling keys outside the OpenAI API, by their canonical (`core.types.Sampling`) names.
NON_OPENAI_SAMPLING: tuple[str, ...] = ("top_k", "min_p", "top_a", "repetition_penalty")

# How an engine's tokenize endpoint is spoken to:
# - "llamacpp": llama.cpp's server, `{"content": text, "add_special": bool}` -> `{"tokens": [...]}`
#   (special tokens such as BOS added only when asked);
# - "llama_cpp_python": llama-cpp-python's server, `{"input": text}` -> `{"tokens": [...]}`,
#   always with the model's BOS when it has one (counts subtract what "" tokenizes to).
TokenizeWire = Literal["llamacpp", "llama_cpp_python"]


@dataclass(frozen=True, slots=True)
class TokenizeEndpoint:
    """An engine's tokenizer over HTTP: POST {root}{path}, root = the base URL without /v1."""

    path: str
    wire: TokenizeWire


@dataclass(frozen=True, slots=True)
class DialectRules:
    """What one kind of upstream accepts in a chat completions request."""

    # Field on assistant messages that carries earlier reasoning back (Qwen3's chat template
    # reads `reasoning_content`); None drops earlier reasoning from the history.
    reasoning_field: str | None = "reasoning_content"
    # Whether `chat_template_kwargs` reaches the chat template (Ollama ignores it silently).
    chat_template_kwargs: bool = True
    # Whether request.reasoning.enabled becomes `chat_template_kwargs.enable_thinking` (the Qwen3
    # switch) when the client did not set that key itself.
    thinking_switch: bool = True
    # Where the engine reads a per-request thinking budget in tokens (a path of keys in the
    # body), or None when it has none: the budget is then not enforced upstream.
    budget_path: tuple[str, ...] | None = None
    # Whether POST /completions takes the prompt as raw text, which Qwen's two-pass thinking
    # budget needs (Ollama wraps it in the model's template).
    raw_prompts: bool = True
    # Whether thinking is turned off with Qwen's "/no_think" soft switch in the last user
    # message (for engines that drop chat_template_kwargs).
    soft_switch: bool = False
    # `reasoning_effort` values the engine accepts, each mapped to what it is sent as (None:
    # not sent); an effort missing here is sent as it is. vLLM, SGLang, llama.cpp's server and
    # Ollama validate it against low / medium / high (the budget itself goes separately).
    efforts: Mapping[str, str | None] = field(default_factory=lambda: MappingProxyType({}))
    # Non-OpenAI sampling keys the upstream understands, mapped to its own name for them.
    # A key missing here is not sent.
    sampling_names: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({name: name for name in NON_OPENAI_SAMPLING})
    )
    # The engine's tokenize endpoint, for exact counts of text; None: it has none we use.
    tokenize: TokenizeEndpoint | None = None
    # The engine's endpoint that renders a chat request's prompt with the model's template
    # (`{"messages": ...}` -> `{"prompt": "..."}`), a path under the root; None: it has none.
    apply_template: str | None = None


def _names(**renames: str) -> Mapping[str, str]:
    return MappingProxyType(renames)


# Engines that accept only OpenAI's original three efforts.
_THREE_EFFORTS: Mapping[str, str | None] = MappingProxyType(
    {"xhigh": "high", "minimal": "low", "none": None}
)
# Engines without the field: no effort is sent.
_NO_EFFORTS: Mapping[str, str | None] = MappingProxyType(
    dict.fromkeys(("xhigh", "high", "medium", "low", "minimal", "none"))
)


DIALECTS: Mapping[Dialect, DialectRules] = MappingProxyType(
    {
        # Hosted providers: OpenRouter-style services ignore keys they do not know, so pass the
        # client's non-OpenAI settings rather than dropping them silently.
        "generic": DialectRules(),
        # vLLM ignores top_a (it logs the unknown field); leaving it out keeps its logs clean.
        "vllm": DialectRules(
            efforts=_THREE_EFFORTS,
            # vLLM's thinking budget (needs the server's --reasoning-config / reasoning parser).
            budget_path=("thinking_token_budget",),
            sampling_names=_names(
                top_k="top_k", min_p="min_p", repetition_penalty="repetition_penalty"
            ),
        ),
        "sglang": DialectRules(
            efforts=_THREE_EFFORTS,
            # Enforced exactly with the server's --enable-strict-thinking.
            budget_path=("custom_params", "thinking_budget"),
            sampling_names=_names(
                top_k="top_k", min_p="min_p", repetition_penalty="repetition_penalty"
            ),
        ),
        # llama.cpp's server calls the repetition penalty `repeat_penalty`; it tokenizes and
        # renders its template over HTTP (POST /tokenize, POST /apply-template).
        "llamacpp_server": DialectRules(
            efforts=_THREE_EFFORTS,
            budget_path=("thinking_budget_tokens",),
            sampling_names=_names(
                top_k="top_k", min_p="min_p", repetition_penalty="repeat_penalty"
            ),
            tokenize=TokenizeEndpoint("/tokenize", "llamacpp"),
            apply_template="/apply-template",
        ),
        # llama-cpp-python's server (`python -m llama_cpp.server`, 0.3.x): its request model
        # (server/types.py) takes top_k, min_p and repeat_penalty and silently drops every key
        # it does not know: chat_template_kwargs (a load-time setting there), reasoning_effort,
        # a thinking budget, `reasoning_content` on messages, stream_options (so its streams
        # carry no usage). /v1/completions takes a raw prompt. POST /extras/tokenize
        # tokenizes; it has no template endpoint.
        "llama_cpp_python": DialectRules(
            efforts=_NO_EFFORTS,
            reasoning_field=None,
            chat_template_kwargs=False,
            thinking_switch=False,
            soft_switch=True,
            sampling_names=_names(
                top_k="top_k", min_p="min_p", repetition_penalty="repeat_penalty"
            ),
            tokenize=TokenizeEndpoint("/extras/tokenize", "llama_cpp_python"),
        ),
        # Ollama's OpenAI endpoint reads `reasoning` on messages, drops chat_template_kwargs and
        # the extra samplers (ollama/ollama#16240).
        "ollama": DialectRules(
            efforts=_THREE_EFFORTS,
            reasoning_field="reasoning",
            chat_template_kwargs=False,
            thinking_switch=False,
            soft_switch=True,
            raw_prompts=False,
            sampling_names=_names(),
        ),
        # A strict OpenAI-API upstream (OpenAI itself answers 400 to fields it does not know):
        # only OpenAI's own fields, plus whatever extensions the client itself sent.
        "raw": DialectRules(
            reasoning_field=None,
            chat_template_kwargs=False,
            thinking_switch=False,
            sampling_names=_names(),
        ),
    }
)


BudgetMethod = Literal["parameter", "two_pass", "off"]


def budget_method(rules: DialectRules, configured: str, *, dialect: str) -> BudgetMethod:
    """How a thinking budget is enforced on an upstream of this dialect, given the backend's
    `thinking_budget` setting; ValueError when the setting asks for what the dialect lacks."""
    if configured == "auto":
        if rules.budget_path:
            return "parameter"
        return "two_pass" if rules.raw_prompts else "off"
    if configured == "parameter":
        if not rules.budget_path:
            raise ValueError(f"the {dialect} dialect has no thinking budget parameter")
        return "parameter"
    if configured == "two_pass":
        if not rules.raw_prompts:
            raise ValueError(f"{dialect} upstreams do not take raw prompts at /completions")
        return "two_pass"
    return "off"
