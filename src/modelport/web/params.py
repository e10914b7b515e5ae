"""The request-parameter table of a model page, built from the validator's own definitions.

Every optional field of the OpenAI door's request struct (`protocols/openai/wire.py`) gets a
row: its JSON type and range are read from the struct's msgspec constraints, so the page and
the 400s can never disagree; the default comes from the card's per-mode sampling defaults,
else the engine's well-known neutral value; whether the model honours it is worked out from
the card's `supported_parameters` and what each configured backend does with the field
(the dialect table in `protocols/openai/dialects.py`; the local engine applies every sampling
setting itself, `backends/llamacpp/sampling.py`). Descriptions are written here, in English
and Chinese, one entry per wire name: a new wire field without them fails the tests.

Imports core and protocols only (never backends, http or a template engine).
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any, Literal, get_args, get_origin

import msgspec
from msgspec import inspect

from modelport.core.catalog import (
    BackendConfig,
    Dialect,
    LlamaCppBackend,
    ModelCard,
    SamplingDefaults,
)
from modelport.protocols.openai import wire
from modelport.protocols.openai.dialects import DIALECTS, NON_OPENAI_SAMPLING, budget_method
from modelport.protocols.validation import INT32_MAX, INT64_MAX

REQUEST = wire.ChatCompletionRequest
# Required fields every request has; the table documents the optional ones.
NOT_DOCUMENTED = frozenset({"model", "messages"})
NO_DEFAULT = "—"


class ParamDoc(msgspec.Struct, frozen=True):
    """One row of a model page's parameter table."""

    name: str  # the wire name, e.g. "top_p"
    type: str  # JSON type as users read it: "number", "string | array", ...
    range: str  # from the validator's constraints; "" when unconstrained
    default: str  # this model's default, else the engine's, else "—"
    description_en: str
    description_zh: str
    honoured: bool  # False when this model's configured backends ignore the parameter
    note_en: str = ""  # why not honoured, or a caveat
    note_zh: str = ""


# What each parameter does, by wire name: (English, Chinese).
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "stream": (
        "Send the answer as server-sent events (chat.completion.chunk) while it is generated, "
        "instead of one JSON body at the end.",
        "以服务器推送事件（SSE，chat.completion.chunk）边生成边返回结果，而不是在结束时一次性返回"
        "整个 JSON。",
    ),
    "stream_options": (
        "Options for a streamed answer: include_usage adds a last chunk with empty choices "
        "and the request's token usage.",
        "流式输出的选项：include_usage 为 true 时，最后会多发一个 choices 为空、带有本次 token "
        "用量的数据块。",
    ),
    "temperature": (
        "Sampling temperature: lower values make the output more focused and repeatable, "
        "higher values more varied. 0 always picks the most likely token.",
        "采样温度：值越低，输出越集中、越稳定；值越高，输出越多样。"
        "设为 0 时总是选择概率最高的 token。",
    ),
    "top_p": (
        "Nucleus sampling: sample only from the most likely tokens whose probabilities add up "
        "to top_p.",
        "核采样：只从累计概率达到 top_p 的那部分最可能的 token 中采样。",
    ),
    "top_k": (
        "Sample only from the k most likely tokens; 0 turns the limit off.",
        "只从概率最高的 k 个 token 中采样；设为 0 表示不限制。",
    ),
    "min_p": (
        "Drop tokens whose probability is below min_p times that of the most likely token.",
        "舍弃概率低于“最可能 token 的概率 × min_p”的 token。",
    ),
    "top_a": (
        "Drop tokens whose probability is below top_a times the square of the highest "
        "probability: a cut that adapts to how confident the model is.",
        "舍弃概率低于“最高概率的平方 × top_a”的 token，截断力度随模型的确定程度自动调整。",
    ),
    "frequency_penalty": (
        "Penalise tokens in proportion to how often they already appear in the output; "
        "positive values reduce verbatim repetition.",
        "按 token 在已生成内容中出现的次数施加惩罚；正值可减少逐字重复。",
    ),
    "presence_penalty": (
        "Penalise every token that already appears in the output, however often; positive "
        "values push the model towards new topics.",
        "只要 token 已在输出中出现过就施加同等惩罚；正值会促使模型谈论新的内容。",
    ),
    "repetition_penalty": (
        "Multiplicative penalty on tokens already in the prompt or output; 1 is off, values "
        "above 1 discourage repetition.",
        "对提示词或输出中已出现的 token 按倍数施加惩罚；1 表示不惩罚，大于 1 可抑制重复。",
    ),
    "seed": (
        "Seed for sampling: the same seed, prompt and parameters give the same output on the "
        "same backend.",
        "采样随机种子：在同一后端上，相同的种子、提示词和参数会得到相同的输出。",
    ),
    "max_tokens": (
        "The most tokens the answer may have, thinking included; it is also capped by the "
        "context left after the prompt.",
        "回答最多可生成的 token 数（包括思考内容），同时不会超过提示词之后剩余的上下文长度。",
    ),
    "max_completion_tokens": (
        "The newer name for max_tokens; it wins when both are given.",
        "max_tokens 的新名称；两者同时给出时以此为准。",
    ),
    "logit_bias": (
        "An object mapping token ids (as strings) to a bias added to their logits; -100 bans "
        "a token, 100 all but forces it.",
        "将 token ID（字符串形式）映射到加在其 logit 上的偏置值的对象；-100 会禁止该 token，100 "
        "则几乎强制选中它。",
    ),
    "logprobs": (
        "Return the log probability of each output token.",
        "返回每个输出 token 的对数概率。",
    ),
    "top_logprobs": (
        "How many of the most likely alternatives to list at each position, with their log "
        "probabilities; needs logprobs set to true.",
        "在每个位置额外列出多少个最可能的候选 token 及其对数概率；需要同时将 logprobs 设为 true。",
    ),
    "response_format": (
        'The shape of the answer: {"type": "json_object"} for any JSON object, or '
        '{"type": "json_schema", "json_schema": {...}} for JSON that follows a schema.',
        '回答的格式：{"type": "json_object"} 要求输出任意 JSON 对象；{"type": "json_schema", '
        '"json_schema": {...}} 要求输出符合指定 JSON Schema 的 JSON。',
    ),
    "structured_outputs": (
        "Accepted for compatibility with clients that send it; structured output itself is "
        "asked for with response_format.",
        "为兼容会发送此字段的客户端而接受；结构化输出本身需通过 response_format 请求。",
    ),
    "stop": (
        "Up to 16 strings at which generation stops; the matched string is not part of the answer.",
        "最多 16 个停止字符串，生成内容遇到其中之一即停止；匹配到的字符串不会出现在回答中。",
    ),
    "tools": (
        "Functions the model may call, each with a name, a description and a JSON Schema for "
        "its arguments.",
        "模型可以调用的函数列表，每个函数包含名称、说明以及描述参数的 JSON Schema。",
    ),
    "tool_choice": (
        'Whether the model must call a tool: "auto" lets it decide, "none" forbids calls, '
        '"required" demands one, and {"type": "function", "function": {"name": ...}} names it.',
        '是否必须调用工具："auto" 由模型决定，"none" 禁止调用，"required" 要求至少调用一个，'
        '{"type": "function", "function": {"name": ...}} 则指定要调用的函数。',
    ),
    "parallel_tool_calls": (
        "Whether the model may call several tools in one answer; false allows at most one.",
        "是否允许模型在一次回答中调用多个工具；设为 false 时最多调用一个。",
    ),
    "verbosity": (
        "How long the answer should be: low asks for brevity, high for a thorough answer; "
        "given to the model as an instruction, max_tokens is the hard limit.",
        "回答的详略程度：low 要求简洁，high 要求详尽；以指令形式传给模型，硬性上限仍由 "
        "max_tokens 决定。",
    ),
    "reasoning": (
        "Thinking settings: effort or max_tokens set a thinking budget, enabled turns thinking "
        "on or off (hybrid models), exclude leaves the reasoning out of the answer.",
        "思考设置：effort 或 max_tokens 设定思考预算，enabled 开启或关闭思考"
        "（适用于混合思考模型），exclude 让回答中不返回思考内容。",
    ),
    "reasoning_effort": (
        "The same as reasoning.effort: a thinking budget as a share of the output limit; "
        '"none" turns thinking off on hybrid models.',
        '等同于 reasoning.effort：按输出上限的一定比例设定思考预算；在混合思考模型上，"none" '
        "表示关闭思考。",
    ),
    "include_reasoning": (
        "Whether the reasoning is returned with the answer; false is the same as "
        "reasoning.exclude (the thinking tokens are still generated and billed).",
        "是否在回答中返回思考内容；设为 false 等同于 reasoning.exclude"
        "（思考 token 仍会生成并计费）。",
    ),
    "chat_template_kwargs": (
        'Variables passed to the model\'s chat template, such as {"enable_thinking": false} '
        "on Qwen3's hybrid models.",
        '传给模型对话模板的变量，例如 Qwen3 混合思考模型的 {"enable_thinking": false}。',
    ),
    "n": (
        "How many answers to generate; only 1 is supported.",
        "要生成的回答数量；仅支持 1。",
    ),
    "user": (
        "An identifier for your end user; accepted for compatibility and not used.",
        "终端用户的标识；为兼容而接受，但不会被使用。",
    ),
}

# Checks the decoder makes after the wire types, which the struct's constraints cannot say.
DECODER_RANGES: dict[str, str] = {"n": "1"}

# Fields the decoder reads and then drops: no model or backend ever sees them.
IGNORED: dict[str, tuple[str, str]] = {
    "structured_outputs": (
        "Accepted and ignored: use response_format to ask for structured output.",
        "接受但会被忽略：请使用 response_format 请求结构化输出。",
    ),
    "user": ("Accepted and ignored.", "接受但会被忽略。"),
}

# The `supported_parameters` entry that decides whether a model takes a field; None: every
# model does (the door carries it out, or it is for the backend alone). A field missing here
# is decided by its own name.
GATES: dict[str, str | None] = {
    "max_completion_tokens": "max_tokens",
    "reasoning_effort": "reasoning",
    "stream": None,
    "stream_options": None,
    "n": None,
    "chat_template_kwargs": None,
    "structured_outputs": None,
    "user": None,
}

# The fields the local llama.cpp engine does not apply. It applies every sampling setting
# (top_a and logit_bias as logits processors), stop strings, logprobs, grammars for
# response_format and tool calls, the thinking budget and the chat template's variables.
LLAMACPP_IGNORES: frozenset[str] = frozenset()

ENGINE_NAMES: dict[Dialect, str] = {
    "generic": "OpenAI-compatible",
    "vllm": "vLLM",
    "sglang": "SGLang",
    "llamacpp_server": "llama.cpp server",
    "llama_cpp_python": "llama-cpp-python",
    "ollama": "Ollama",
    "raw": "strict OpenAI API",
}

# Neutral values engines use when neither the request nor the card sets a sampler.
ENGINE_DEFAULTS: dict[str, str] = {
    "temperature": "1",
    "top_p": "1",
    "top_k": "0 (off)",
    "min_p": "0",
    "frequency_penalty": "0",
    "presence_penalty": "0",
    "repetition_penalty": "1 (off)",
}

FIXED_DEFAULTS: dict[str, str] = {
    "stream": "false",
    "top_a": "0 (off)",
    "seed": "random",
    "logprobs": "false",
    "top_logprobs": "0",
    "response_format": "text",
    "tool_choice": "auto",
    "parallel_tool_calls": "true",
    "verbosity": "medium",
    "include_reasoning": "true",
    "n": "1",
}


class Honour(msgspec.Struct, frozen=True):
    """Whether a model honours a parameter, and why not (or a caveat)."""

    honoured: bool
    note_en: str = ""
    note_zh: str = ""


def optional_fields() -> list[inspect.Field]:
    """The request struct's optional fields, in the struct's order."""
    info = inspect.type_info(REQUEST)
    assert isinstance(info, inspect.StructType)
    return [field for field in info.fields if field.name not in NOT_DOCUMENTED]


def parameter_reference(card: ModelCard) -> list[ParamDoc]:
    """The rows of `card`'s parameter table, in the request struct's order."""
    hints = typing.get_type_hints(REQUEST, include_extras=True)
    rows = []
    for field in optional_fields():
        name = field.encode_name
        english, chinese = DESCRIPTIONS[name]
        verdict = honour(card, name)
        rows.append(
            ParamDoc(
                name=name,
                type=json_type(field.type),
                range=DECODER_RANGES.get(name) or value_range(field.type, hints[field.name]),
                default=default_for(card, name),
                description_en=english,
                description_zh=chinese,
                honoured=verdict.honoured,
                note_en=verdict.note_en,
                note_zh=verdict.note_zh,
            )
        )
    return rows


# --- whether a parameter is honoured -------------------------------------------------------


def honour(card: ModelCard, name: str) -> Honour:
    """Whether `card` honours the wire parameter `name`: the card must support it, and at
    least one configured backend must pass it on or apply it (a card without backends:
    what it supports). Some backends ignoring it is a caveat, all of them a no."""
    if name in IGNORED:
        return Honour(False, *IGNORED[name])
    gate = GATES.get(name, name)
    if gate is not None and gate not in card.supported_parameters:
        return Honour(False, "Not supported by this model.", "此模型不支持该参数。")
    if not card.backends:
        return Honour(True)
    ignoring = [backend for backend in card.backends if backend_ignores(backend, name)]
    if ignoring:
        engines = _engines(ignoring)
        if len(ignoring) == len(card.backends):
            return Honour(
                False, f"Ignored by the {engines} backend.", f"{engines} 后端会忽略该参数。"
            )
        return Honour(
            True,
            f"Ignored when the {engines} backend serves the request.",
            f"请求由 {engines} 后端处理时，该参数会被忽略。",
        )
    if name in ("reasoning", "reasoning_effort") and card.thinking != "none":
        unbudgeted = [backend for backend in card.backends if not enforces_budget(backend)]
        if unbudgeted:
            engines = _engines(unbudgeted)
            return Honour(
                True,
                f"The thinking budget is not enforced on the {engines} backend.",
                f"{engines} 后端不执行思考预算限制。",
            )
    return Honour(True)


def backend_ignores(backend: BackendConfig, name: str) -> bool:
    """Whether `backend` drops the wire parameter `name` before the model sees it."""
    if isinstance(backend, LlamaCppBackend):
        return name in LLAMACPP_IGNORES
    rules = DIALECTS[backend.dialect]
    if name in NON_OPENAI_SAMPLING:  # sent only under the dialect's own name for it
        return name not in rules.sampling_names
    if name == "chat_template_kwargs":
        return not rules.chat_template_kwargs
    return False


def enforces_budget(backend: BackendConfig) -> bool:
    """Whether a thinking budget (reasoning.max_tokens or an effort) is enforced."""
    if isinstance(backend, LlamaCppBackend):
        return True
    rules = DIALECTS[backend.dialect]
    try:
        method = budget_method(rules, backend.thinking_budget, dialect=backend.dialect)
    except ValueError:  # a setting the dialect cannot do: the backend refuses to start
        return False
    return method != "off"


def _engines(backends: list[BackendConfig]) -> str:
    names: list[str] = []
    for backend in backends:
        label = (
            "local llama.cpp"
            if isinstance(backend, LlamaCppBackend)
            else ENGINE_NAMES[backend.dialect]
        )
        if label not in names:
            names.append(label)
    return ", ".join(names)


# --- defaults ------------------------------------------------------------------------------


def default_for(card: ModelCard, name: str) -> str:
    """The value `card` runs with when a request leaves `name` unset."""
    if name in SamplingDefaults.__struct_fields__:
        return _sampling_default(card, name)
    if name in ("max_tokens", "max_completion_tokens"):
        if card.max_output_tokens is not None:
            return f"{card.max_output_tokens}"
        return "rest of the context"
    return FIXED_DEFAULTS.get(name, NO_DEFAULT)


def _sampling_default(card: ModelCard, name: str) -> str:
    modes = card.default_parameters
    per_mode: list[tuple[str, SamplingDefaults | None]]
    if card.thinking == "hybrid":
        per_mode = [("thinking", modes.thinking), ("non-thinking", modes.non_thinking)]
    elif card.thinking == "always":
        per_mode = [("thinking", modes.thinking)]
    else:
        per_mode = [("non-thinking", modes.non_thinking)]
    values = [(label, None if d is None else getattr(d, name)) for label, d in per_mode]
    neutral = ENGINE_DEFAULTS.get(name, NO_DEFAULT)
    shown = [(label, neutral if v is None else _number(v)) for label, v in values]
    if len({text for _, text in shown}) == 1:
        return shown[0][1]
    return " / ".join(f"{text} ({label})" for label, text in shown)


def _number(value: float) -> str:
    return f"{value:g}"


# --- types and ranges, from the validator's own definitions --------------------------------

_JSON_TYPES: dict[type[inspect.Type], str] = {
    inspect.BoolType: "boolean",
    inspect.IntType: "integer",
    inspect.FloatType: "number",
    inspect.StrType: "string",
    inspect.LiteralType: "string",
    inspect.DictType: "object",
    inspect.StructType: "object",
    inspect.ListType: "array",
    inspect.AnyType: "any",
}


def _members(kind: inspect.Type) -> Iterator[inspect.Type]:
    members = kind.types if isinstance(kind, inspect.UnionType) else (kind,)
    return (member for member in members if not isinstance(member, inspect.NoneType))


def json_type(kind: inspect.Type) -> str:
    """The field's JSON type(s) as users read them: "number", "string | array"."""
    names: list[str] = []
    for member in _members(kind):
        name = _JSON_TYPES.get(type(member), "any")
        if name not in names:
            names.append(name)
    return " | ".join(names)


def value_range(kind: inspect.Type, annotation: Any) -> str:
    """The accepted values as the validator's constraints state them: a numeric range,
    a list of allowed strings (in the order the wire type lists them), or an array's size."""
    parts: list[str] = []
    for member in _members(kind):
        text = ""
        if isinstance(member, inspect.IntType | inspect.FloatType):
            text = _bounds(member)
        elif isinstance(member, inspect.DictType) and isinstance(
            member.value_type, inspect.IntType | inspect.FloatType
        ):
            text = _bounds(member.value_type)
        elif isinstance(member, inspect.LiteralType):
            text = " | ".join(str(value) for value in _literal_values(annotation))
        elif isinstance(member, inspect.ListType) and member.max_length is not None:
            text = f"≤ {member.max_length} items"
        if text and text not in parts:
            parts.append(text)
    return "; ".join(parts)


# Bounds that only say how large an integer the engines and the database hold.
_STORAGE_LIMITS = frozenset({INT64_MAX, INT32_MAX, -(2**63)})


def _bounds(kind: inspect.IntType | inspect.FloatType) -> str:
    ge, gt, le, lt = (_shown(value) for value in (kind.ge, kind.gt, kind.le, kind.lt))
    if ge and le:
        return f"{ge} – {le}"
    signs = (("≥", ge), (">", gt), ("≤", le), ("<", lt))
    return ", ".join(f"{sign} {text}" for sign, text in signs if text)


def _shown(value: float | None) -> str:
    if value is None or (isinstance(value, int) and value in _STORAGE_LIMITS):
        return ""
    return _number(value)


def _literal_values(annotation: Any) -> list[Any]:
    """The values of every Literal inside a type annotation, in source order."""
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    values: list[Any] = []
    for arg in get_args(annotation):
        for value in _literal_values(arg):
            if value not in values:
                values.append(value)
    return values
