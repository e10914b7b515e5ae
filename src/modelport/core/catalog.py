"""The model catalog as data: model cards, prices and backend configurations.

The shipped catalog and the operator's overrides are plain dicts (parsed from TOML elsewhere);
`build_catalog` merges them by model id and validates the result. Pure: no file access here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

import msgspec

from modelport.core.money import format_cny, nano_per_token
from modelport.core.types import ChatRequest, Reasoning

ThinkingMode = Literal["hybrid", "always", "none"]
ToolFormat = Literal["qwen3_json", "qwen3_coder_xml", "generic", "none"]
Dialect = Literal[
    "generic", "vllm", "sglang", "llamacpp_server", "llama_cpp_python", "ollama", "raw"
]


class ConfigError(Exception):
    """The catalog or settings are invalid; raised at start-up with what to fix."""


class Pricing(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """CNY per 1,000 tokens, as exact decimal strings."""

    input_per_1k: str = "0"
    output_per_1k: str = "0"

    @property
    def input_nano(self) -> int:
        """Nano-yuan per input token."""
        return nano_per_token(self.input_per_1k)

    @property
    def output_nano(self) -> int:
        """Nano-yuan per output token (reasoning included)."""
        return nano_per_token(self.output_per_1k)

    def cost_nano(self, prompt_tokens: int, completion_tokens: int) -> int:
        return prompt_tokens * self.input_nano + completion_tokens * self.output_nano

    def per_token_strings(self) -> tuple[str, str]:
        return format_cny(self.input_nano), format_cny(self.output_nano)


class LlamaCppBackend(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="llamacpp", tag_field="kind"
):
    """The in-process llama.cpp engine on a local GGUF file.

    `path` is a file path, or `package:<python package>/<file>` for a model shipped inside an
    installed package.
    """

    path: str
    n_threads: int | None = None  # None: the server-wide default (MODELPORT_LLAMA_THREADS)
    # Threads that evaluate a prompt (a batch: worth every core); None: the usable CPUs.
    n_threads_batch: int | None = None
    # None: the card's context_length, capped by the model's own unless context_extension
    # stretches the model's positions (RoPE scaling) to reach it.
    n_ctx: int | None = None
    context_extension: Literal["none", "yarn", "linear"] = "none"
    # Engine instances (each with its own threads) serving in parallel; None: sized to the
    # machine (its CPUs over n_threads, within its memory; engine.py).
    instances: int | None = None
    max_queue: int = 64  # requests waiting beyond this get 503 with Retry-After
    preload: bool = False  # load at start-up rather than on first use
    chat_template: str | None = None  # a Jinja template overriding the GGUF's own
    name: str | None = None
    priority: int = 0
    weight: int = 1
    # Circuit breaking (docs/operations.md): this many failures in a row stop requests to
    # the backend for `circuit_cooldown` seconds, then one request probes it (0: never
    # stops); `max_concurrency`: requests it serves at once (None: no cap; beyond it, the
    # next backend, else 503 with Retry-After).
    circuit_failures: Annotated[int, msgspec.Meta(ge=0)] = 5
    circuit_cooldown: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    max_concurrency: Annotated[int, msgspec.Meta(ge=1)] | None = None


class OpenAICompatBackend(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="openai_compat", tag_field="kind"
):
    """Any OpenAI-compatible upstream: vLLM, SGLang, llama.cpp server, Ollama, a provider."""

    url: str  # the base URL, ending in /v1 as such servers document it
    api_key: str | None = None  # a literal, or "env:NAME" to read it from the environment
    dialect: Dialect = "generic"
    upstream_model: str | None = None  # the model name the upstream knows; default: the card id
    timeout: float = 600.0  # seconds for a whole response
    # Seconds without any bytes from the upstream before the response is abandoned;
    # None = the whole-response `timeout`.
    read_timeout: float | None = None
    connect_timeout: float = 10.0
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    # The upstream returns the model's raw text (no reasoning or tool-call parser on its side,
    # e.g. vLLM without --reasoning-parser): modelport parses <think> and tool calls itself.
    parse_output: bool = False
    # How a thinking budget is enforced: "parameter" (the engine's own budget field, where
    # the dialect has one), "two_pass" (Qwen's method: think up to the budget over
    # /chat/completions, then continue after the closed think block over /completions),
    # "off" (not enforced), or "auto": the parameter where the dialect has one, else two passes
    # where the upstream takes raw prompts, else off.
    thinking_budget: Literal["auto", "parameter", "two_pass", "off"] = "auto"
    # Exact token counts when the upstream reports no usage (docs/backends.md, "Token counts"):
    # the model's Hugging Face tokenizer.json (a file path; loaded in-process), and its chat
    # template: a path to a Jinja file, or the template itself (text starting with "{");
    # None: chat_template.jinja or tokenizer_config.json beside the tokenizer.json.
    tokenizer: str | None = None
    chat_template: str | None = None
    name: str | None = None
    priority: int = 0
    weight: int = 1
    # Circuit breaking (docs/operations.md): this many failures in a row stop requests to
    # the backend for `circuit_cooldown` seconds, then one request probes it (0: never
    # stops); `max_concurrency`: requests it serves at once (None: no cap; beyond it, the
    # next backend, else 503 with Retry-After).
    circuit_failures: Annotated[int, msgspec.Meta(ge=0)] = 5
    circuit_cooldown: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    max_concurrency: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # Seconds between active probes (GET {url}/models) that open the circuit of an upstream
    # that stopped answering, and close it once it answers; None: no probes.
    probe_interval: Annotated[float, msgspec.Meta(gt=0)] | None = None


BackendConfig = LlamaCppBackend | OpenAICompatBackend


class SamplingDefaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Sampler values a model runs with when the request does not set them."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None


class DefaultParameters(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Defaults per mode: a hybrid model samples differently when it thinks and when not."""

    thinking: SamplingDefaults | None = None
    non_thinking: SamplingDefaults | None = None


# What a model can do, as the catalog pages tag and filter it.
Capability = Literal["text", "thinking", "code", "tools", "structured_output"]
CAPABILITIES: tuple[Capability, ...] = ("text", "thinking", "code", "tools", "structured_output")


class ModelFacts(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The facts a model page lists (empty: not shown). Parameter counts as written by the
    model's makers ("8.2B"); contexts in tokens."""

    parameters: str = ""
    active_parameters: str = ""  # mixture-of-experts: parameters active per token
    experts: str = ""  # e.g. "128 (8 active)"
    layers: int = 0
    native_context: int = 0
    extended_context: int = 0  # with YaRN or similar
    license: str = ""


class ModelCard(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    name: str
    description: str  # English
    context_length: int
    pricing: Pricing = Pricing()
    thinking: ThinkingMode = "none"
    tool_format: ToolFormat = "none"
    supported_parameters: tuple[str, ...] = ()
    backends: tuple[BackendConfig, ...] = ()
    max_output_tokens: int | None = None
    default_parameters: DefaultParameters = DefaultParameters()
    owned_by: str = "modelport"
    created: int = 0
    hidden: bool = False
    # For the catalog pages: the family ("Qwen"), capability tags, when the model was released
    # and last updated (ISO dates), the description in Chinese, and the facts users look for.
    family: str = ""
    tags: tuple[Capability, ...] = ()
    released: str = ""
    updated: str = ""
    description_zh: str = ""
    facts: ModelFacts = ModelFacts()

    @property
    def configured(self) -> bool:
        return bool(self.backends)

    def thinks(self, reasoning: Reasoning) -> bool:
        """Whether a request with these reasoning settings runs in thinking mode: always for
        "always" models, never for "none", and on hybrid models unless turned off."""
        if self.thinking == "hybrid":
            return reasoning.enabled is not False and reasoning.effort != "none"
        return self.thinking == "always"

    def thinking_turned_off(self, reasoning: Reasoning) -> bool:
        """A hybrid model asked not to think: its template's switch (enable_thinking=False,
        or Qwen's /no_think) must be used."""
        return self.thinking == "hybrid" and not self.thinks(reasoning)

    def thinking_switch(self, reasoning: Reasoning) -> bool | None:
        """The value of a hybrid model's `enable_thinking` switch for these settings: False
        when turned off, True when asked for explicitly, None to leave the template's default
        (thinking) alone, and for models without the switch."""
        if self.thinking != "hybrid":
            return None
        if self.thinking_turned_off(reasoning):
            return False
        return True if reasoning.enabled else None

    def sampling_defaults(self, reasoning: Reasoning) -> SamplingDefaults | None:
        modes = self.default_parameters
        return modes.thinking if self.thinks(reasoning) else modes.non_thinking


class Catalog:
    """The model cards in catalog order, with lookup by id."""

    __slots__ = ("_by_id", "models")

    def __init__(self, models: tuple[ModelCard, ...]) -> None:
        self.models = models
        self._by_id = {card.id: card for card in models}

    def get(self, model_id: str) -> ModelCard | None:
        return self._by_id.get(model_id)


def _convert_card(raw: Mapping[str, Any], source: str) -> ModelCard:
    try:
        card = msgspec.convert(raw, ModelCard)
    except msgspec.ValidationError as exc:
        model = raw.get("id", "?")
        raise ConfigError(f"{source}: model {model!r}: {exc}") from None
    try:
        _ = card.pricing.input_nano, card.pricing.output_nano
    except ValueError as exc:
        raise ConfigError(f"{source}: model {card.id!r}: pricing: {exc}") from None
    if card.context_length < 1:
        raise ConfigError(f"{source}: model {card.id!r}: context_length must be >= 1")
    return card


def build_catalog(
    shipped: Iterable[Mapping[str, Any]], overrides: Iterable[Mapping[str, Any]] = ()
) -> Catalog:
    """Merge the operator's model entries into the shipped ones by id.

    An override replaces the fields it names (tables such as `pricing` are merged key by key;
    `backends` is replaced whole); an id the shipped catalog lacks adds a model.
    """
    merged: dict[str, dict[str, Any]] = {}
    for entry in shipped:
        merged[str(entry.get("id"))] = dict(entry)
    for entry in overrides:
        if "id" not in entry:
            raise ConfigError("config: every [[models]] entry needs an id")
        model_id = str(entry["id"])
        base = merged.get(model_id, {})
        combined = dict(base)
        for key, value in entry.items():
            if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
                combined[key] = {**base[key], **value}
            else:
                combined[key] = value
        merged[model_id] = combined
    cards = tuple(_convert_card(raw, "catalog") for raw in merged.values())
    return Catalog(models=cards)


def with_default_sampling(card: ModelCard, request: ChatRequest) -> ChatRequest:
    """`request` with the card's defaults for its mode filled into the sampler values it left
    unset (None); what the client set is never changed."""
    defaults = card.sampling_defaults(request.reasoning)
    if defaults is None:
        return request
    sampling = request.sampling
    filled = {
        name: value
        for name in defaults.__struct_fields__
        if (value := getattr(defaults, name)) is not None and getattr(sampling, name) is None
    }
    if not filled:
        return request
    return msgspec.structs.replace(request, sampling=msgspec.structs.replace(sampling, **filled))
