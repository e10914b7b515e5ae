"""The model pages' parameter table agrees with the validator and with what backends do:
one row per optional wire field, ranges that the real decoder enforces at their edges,
per-mode defaults from the card, and "honoured" as the dialect table and the local engine's
sampler decide it."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest

from modelport.core.catalog import (
    DefaultParameters,
    Dialect,
    LlamaCppBackend,
    ModelCard,
    OpenAICompatBackend,
    SamplingDefaults,
)
from modelport.core.errors import InvalidRequest
from modelport.protocols.openai import wire
from modelport.protocols.openai.decode import decode_chat_request
from modelport.protocols.openai.dialects import DIALECTS
from modelport.protocols.openai.upstream_request import build_request_body
from modelport.protocols.validation import INT32_MAX, INT64_MAX
from modelport.services.catalog import load_catalog
from modelport.settings import load_settings
from modelport.web.params import (
    DESCRIPTIONS,
    IGNORED,
    ParamDoc,
    backend_ignores,
    enforces_budget,
    honour,
    parameter_reference,
)

CATALOG = load_catalog(load_settings({}))
CJK = re.compile(r"[\u4e00-\u9fff]")
OPTIONAL = [
    name
    for name in wire.ChatCompletionRequest.__struct_fields__
    if name not in ("model", "messages")
]
EVERY_SUPPORTED = tuple(OPTIONAL)
BASE: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def card_with(
    *backends: Any, supported: tuple[str, ...] = EVERY_SUPPORTED, **fields: Any
) -> ModelCard:
    return ModelCard(
        id="test/model",
        name="Test",
        description="A model for tests.",
        context_length=4096,
        supported_parameters=supported,
        backends=backends,
        **fields,
    )


def upstream(dialect: Dialect, **fields: Any) -> OpenAICompatBackend:
    return OpenAICompatBackend(url="http://upstream.test/v1", dialect=dialect, **fields)


LOCAL = LlamaCppBackend(path="/models/model.gguf")


def rows(card: ModelCard) -> dict[str, ParamDoc]:
    return {row.name: row for row in parameter_reference(card)}


def decodes(**fields: Any) -> bool:
    """Whether the real decoder takes a request with these fields (False: a 400)."""
    try:
        decode_chat_request(msgspec.json.encode({**BASE, **fields}))
    except InvalidRequest as exc:
        status = exc.status
    else:
        return True
    assert status == 400
    return False


# --- one row per wire field ----------------------------------------------------------------


@pytest.mark.parametrize("card", CATALOG.models, ids=lambda card: card.id)
def test_every_optional_wire_field_has_exactly_one_row(card: ModelCard) -> None:
    assert [row.name for row in parameter_reference(card)] == OPTIONAL


def test_descriptions_cover_the_wire_fields_and_nothing_else() -> None:
    assert set(DESCRIPTIONS) == set(OPTIONAL)


@pytest.mark.parametrize("name", OPTIONAL)
def test_every_row_is_described_in_both_languages(name: str) -> None:
    row = rows(CATALOG.models[0])[name]
    assert row.description_en.strip() and row.description_zh.strip()
    assert not CJK.search(row.description_en)
    assert CJK.search(row.description_zh)
    assert row.type
    assert row.default
    if row.note_en or row.note_zh:
        assert row.note_en and CJK.search(row.note_zh)


def test_types_as_users_read_them() -> None:
    table = rows(CATALOG.models[0])
    assert table["temperature"].type == "number"
    assert table["top_k"].type == "integer"
    assert table["stream"].type == "boolean"
    assert table["stop"].type == "string | array"
    assert table["tool_choice"].type == "string | object"
    assert table["response_format"].type == "object"
    assert table["logit_bias"].type == "object"
    assert table["verbosity"].type == "string"


# --- ranges are the validator's -------------------------------------------------------------

NUMERIC = re.compile(r"^(?P<low>-?[\d.]+) – (?P<high>-?[\d.]+)$|^≥ (?P<floor>-?[\d.]+)$")


def _numeric_rows() -> list[ParamDoc]:
    return [row for row in parameter_reference(CATALOG.models[0]) if NUMERIC.match(row.range)]


def _request(row: ParamDoc, value: float) -> dict[str, Any]:
    if row.name == "logit_bias":
        return {"logit_bias": {"50": value}}
    extra: dict[str, Any] = {"logprobs": True} if row.name == "top_logprobs" else {}
    return {row.name: value, **extra}


def test_the_documented_ranges_include_the_ones_users_tune() -> None:
    tested = {row.name for row in _numeric_rows()}
    assert {"temperature", "top_p", "top_k", "frequency_penalty", "top_logprobs"} <= tested
    table = rows(CATALOG.models[0])
    assert table["temperature"].range == "0 – 2"
    assert table["top_p"].range == "0 – 1"
    assert table["top_k"].range == "≥ 0"
    assert table["frequency_penalty"].range == "-2 – 2"
    assert table["top_logprobs"].range == "0 – 20"
    assert table["max_tokens"].range == "≥ 1"


@pytest.mark.parametrize("row", _numeric_rows(), ids=lambda row: row.name)
def test_numeric_range_edges_are_what_the_decoder_enforces(row: ParamDoc) -> None:
    match = NUMERIC.match(row.range)
    assert match is not None
    step = 1 if row.type == "integer" else 0.001
    cast = int if row.type == "integer" else float
    low = cast(match["low"] or match["floor"])
    assert decodes(**_request(row, low))
    assert not decodes(**_request(row, low - step))
    if match["high"] is not None:
        high = cast(match["high"])
        assert decodes(**_request(row, high))
        assert not decodes(**_request(row, high + step))


def test_unshown_bounds_are_only_integer_sizes() -> None:
    # "≥ 0" for top_k and "" for seed leave out only how large an integer engines hold.
    assert decodes(top_k=INT32_MAX) and not decodes(top_k=INT32_MAX + 1)
    assert decodes(seed=INT64_MAX) and not decodes(seed=INT64_MAX + 1)
    assert decodes(seed=-(2**63)) and not decodes(seed=-(2**63) - 1)
    assert rows(CATALOG.models[0])["seed"].range == ""


@pytest.mark.parametrize(
    "row",
    [row for row in parameter_reference(CATALOG.models[0]) if " | " in row.range],
    ids=lambda row: row.name,
)
def test_every_listed_value_is_accepted_and_no_other(row: ParamDoc) -> None:
    # "required" needs a tool to call.
    extra = {"tools": SAMPLES["tools"]} if row.name == "tool_choice" else {}
    for value in row.range.split(" | "):
        assert decodes(**{row.name: value}, **extra)
    assert not decodes(**{row.name: "bogus"}, **extra)


def test_stop_and_n_edges() -> None:
    table = rows(CATALOG.models[0])
    assert table["stop"].range == "≤ 16 items"
    assert decodes(stop=[str(i) for i in range(16)])
    assert not decodes(stop=[str(i) for i in range(17)])
    assert table["n"].range == "1"
    assert decodes(n=1) and not decodes(n=2)


# --- defaults ---------------------------------------------------------------------------------


def test_a_hybrid_models_sampling_defaults_per_mode() -> None:
    table = rows(CATALOG.get("qwen/qwen3-8b"))  # type: ignore[arg-type]
    temperature = table["temperature"].default
    assert "0.6" in temperature and "0.7" in temperature
    assert temperature == "0.6 (thinking) / 0.7 (non-thinking)"
    assert table["top_k"].default == "20"  # the same in both modes: said once
    assert table["frequency_penalty"].default == "0"  # the card leaves it: the engine's


def test_single_mode_models_show_their_one_default() -> None:
    coder = rows(CATALOG.get("qwen/qwen3-coder"))  # type: ignore[arg-type]
    assert coder["temperature"].default == "0.7"
    assert coder["repetition_penalty"].default == "1.05"
    thinker = rows(CATALOG.get("qwen/qwen3-235b-a22b-thinking-2507"))  # type: ignore[arg-type]
    assert thinker["temperature"].default == "0.6"
    local = rows(CATALOG.get("local/smollm2-135m-instruct"))  # type: ignore[arg-type]
    assert local["temperature"].default == "0.2"  # Hugging Face's recommendation for SmolLM2
    assert local["top_p"].default == "0.9"


def test_a_mode_without_its_own_value_falls_back_to_the_engines() -> None:
    card = card_with(
        thinking="hybrid",
        default_parameters=DefaultParameters(thinking=SamplingDefaults(temperature=0.6)),
    )
    assert rows(card)["temperature"].default == "0.6 (thinking) / 1 (non-thinking)"


def test_output_limit_default() -> None:
    assert rows(card_with(max_output_tokens=2048))["max_tokens"].default == "2048"
    assert rows(card_with())["max_completion_tokens"].default == "rest of the context"


# --- honoured ---------------------------------------------------------------------------------


def test_top_a_is_dropped_for_vllm_but_applied_by_the_local_engine() -> None:
    on_vllm = honour(card_with(upstream("vllm")), "top_a")
    assert not on_vllm.honoured
    assert "vLLM" in on_vllm.note_en and "vLLM" in on_vllm.note_zh
    assert honour(card_with(LOCAL), "top_a").honoured
    assert honour(card_with(upstream("vllm")), "top_k").honoured
    # One backend of two ignoring it: honoured, with a caveat.
    mixed = honour(card_with(upstream("vllm"), LOCAL), "top_a")
    assert mixed.honoured and "vLLM" in mixed.note_en


def test_a_card_without_backends_honours_what_it_supports() -> None:
    card = card_with(supported=("temperature", "max_tokens", "reasoning"))
    table = rows(card)
    assert table["temperature"].honoured and table["max_completion_tokens"].honoured
    assert table["reasoning_effort"].honoured
    assert not table["top_k"].honoured
    assert table["top_k"].note_en == "Not supported by this model."
    assert table["stream"].honoured  # the door streams for every model


def test_what_the_decoder_drops_is_never_honoured() -> None:
    for name in IGNORED:
        assert not honour(card_with(), name).honoured
        assert decode_chat_request(
            msgspec.json.encode({**BASE, name: _sample_value(name)})
        ) == decode_chat_request(msgspec.json.encode(BASE))


def test_ollama_drops_the_extra_samplers_and_template_variables() -> None:
    card = card_with(upstream("ollama"))
    for name in ("top_k", "min_p", "top_a", "repetition_penalty", "chat_template_kwargs"):
        assert not honour(card, name).honoured, name
    assert honour(card, "temperature").honoured


def test_reasoning_caveat_where_no_budget_is_enforced() -> None:
    assert not enforces_budget(upstream("ollama"))  # no budget field and no raw prompts
    assert enforces_budget(upstream("vllm"))
    assert enforces_budget(upstream("llama_cpp_python"))  # Qwen's two passes
    assert not enforces_budget(upstream("vllm", thinking_budget="off"))
    assert enforces_budget(LOCAL)
    verdict = honour(card_with(upstream("ollama"), thinking="hybrid"), "reasoning")
    assert verdict.honoured and "Ollama" in verdict.note_en


# What a request sets for each parameter whose passage upstream is checked against the body.
SAMPLES: dict[str, Any] = {
    "temperature": 0.5,
    "top_p": 0.5,
    "top_k": 7,
    "min_p": 0.25,
    "top_a": 0.125,
    "frequency_penalty": 0.5,
    "presence_penalty": 0.5,
    "repetition_penalty": 1.25,
    "seed": 42,
    "max_tokens": 99,
    "max_completion_tokens": 98,
    "logit_bias": {"50": 5.0},
    "logprobs": True,
    "top_logprobs": 3,
    "response_format": {"type": "json_object"},
    "stop": ["END"],
    "tools": [{"type": "function", "function": {"name": "f"}}],
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "verbosity": "low",
    "chat_template_kwargs": {"custom_variable": 1},
}


def _sample_value(name: str) -> Any:
    return SAMPLES.get(name, "x" if name == "user" else True)


@pytest.mark.parametrize("dialect", list(DIALECTS))
@pytest.mark.parametrize("name", list(SAMPLES))
def test_backend_ignores_agrees_with_the_upstream_body(dialect: Dialect, name: str) -> None:
    fields = {name: SAMPLES[name]}
    if name == "top_logprobs":
        fields["logprobs"] = True
    if name in ("tool_choice", "parallel_tool_calls"):  # sent only with tools
        fields["tools"] = SAMPLES["tools"]
    request, _ = decode_chat_request(msgspec.json.encode({**BASE, **fields}))
    rules = DIALECTS[dialect]
    body = build_request_body(request, model="m", rules=rules)
    sent_as = {"max_completion_tokens": "max_tokens", **rules.sampling_names}.get(name, name)
    sent = sent_as in body
    assert sent == (not backend_ignores(upstream(dialect), name)), (dialect, name, body)


def test_the_local_engine_applies_every_sampling_setting() -> None:
    sampling = pytest.importorskip("modelport.backends.llamacpp.sampling")
    fields = {name: SAMPLES[name] for name in ("temperature", "top_p", "top_k", "min_p", "top_a")}
    fields |= {
        name: SAMPLES[name]
        for name in ("frequency_penalty", "presence_penalty", "repetition_penalty", "seed")
    }
    request, _ = decode_chat_request(
        msgspec.json.encode({**BASE, **fields, "logit_bias": {"50": 5.0}, "stop": ["END"]})
    )
    plan = sampling.plan_sampling(request, n_vocab=100)
    assert (plan.temperature, plan.top_p, plan.top_k, plan.min_p, plan.top_a) == (
        0.5,
        0.5,
        7,
        0.25,
        0.125,
    )
    assert (plan.frequency_penalty, plan.presence_penalty, plan.repeat_penalty) == (0.5, 0.5, 1.25)
    assert plan.seed == 42 and plan.logit_bias == {50: 5.0} and plan.stop == ("END",)
    assert len(sampling.logits_processors(plan)) == 2  # logit_bias and top_a
    for name in OPTIONAL:
        assert not backend_ignores(LOCAL, name)
