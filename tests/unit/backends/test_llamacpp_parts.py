"""The llama.cpp engine's pure parts: text assembly, chat templates, sampling, model files.

None of these load a model.
"""

from __future__ import annotations

import itertools
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelport.backends.llamacpp.grammar import grammar_for
from modelport.backends.llamacpp.logprobs import FLOOR, LogprobAligner, score
from modelport.backends.llamacpp.model_file import read_train_context, resolve_model_path
from modelport.backends.llamacpp.sampling import logits_processors, plan_sampling
from modelport.backends.llamacpp.template import ChatTemplate
from modelport.backends.llamacpp.text_stream import TextAssembler
from modelport.core.catalog import ConfigError
from modelport.core.errors import InvalidRequest
from modelport.core.types import (
    ChatRequest,
    Message,
    ReasoningPart,
    ResponseFormat,
    Sampling,
    TextPart,
    TokenLogprob,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)

# ---------------------------------------------------------------------------- text_stream


def assemble(pieces: list[bytes], stop: tuple[str, ...]) -> tuple[str, bool]:
    assembler = TextAssembler(stop)
    out = [assembler.feed(piece) for piece in pieces]
    out.append(assembler.finish())
    return "".join(out), assembler.stopped


def test_stop_string_spanning_pieces_is_cut_and_nothing_after_it_leaks() -> None:
    assembler = TextAssembler(("END",))
    assert assembler.feed(b"Hello E") == "Hello "  # "E" might begin the stop string
    assert assembler.feed(b"N") == ""
    assert assembler.feed(b"D and more") == ""
    assert assembler.stopped
    assert assembler.matched == "END"  # which one, for Anthropic's stop_sequence
    assert assembler.feed(b"later") == "" and assembler.finish() == ""


def test_the_earliest_stop_string_is_the_one_matched() -> None:
    assembler = TextAssembler(("world", "lo"))
    assert assembler.feed(b"Hello world") == "Hel"
    assert assembler.matched == "lo"


def test_held_text_is_released_when_it_turns_out_not_to_be_a_stop() -> None:
    assembler = TextAssembler(("END",))
    assert assembler.feed(b"be") == "be"
    assert assembler.feed(b"EN") == ""
    assert assembler.feed(b"x") == "ENx"
    assert assembler.feed(b"E") == ""
    assert assembler.finish() == "E"
    assert not assembler.stopped


def test_split_utf8_character_waits_for_its_remaining_bytes() -> None:
    data = "你好".encode()
    assembler = TextAssembler()
    assert [assembler.feed(data[i : i + 1]) for i in range(len(data))] == [
        "",
        "",
        "你",
        "",
        "",
        "好",
    ]


@given(
    text=st.text(alphabet="ab你 \n", max_size=30),
    stop=st.text(alphabet="ab你", min_size=1, max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=8),
)
def test_streamed_equals_whole(text: str, stop: str, cuts: list[int]) -> None:
    data = text.encode()
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    whole = text[: text.index(stop)] if stop in text else text
    assert assemble(pieces, (stop,)) == (whole, stop in text)


# ---------------------------------------------------------------------------- template

TOOLS_TEMPLATE = (
    "{% if tools %}TOOLS={{ tools | tojson }}\n{% endif %}"
    "{% for m in messages %}<{{ m.role }}>"
    "{% if m.reasoning_content %}[think:{{ m.reasoning_content }}]{% endif %}"
    "{{ m.content }}"
    "{% for c in m.tool_calls or [] %}[call {{ c.id }} {{ c.function.name }} "
    "{{ c.function.arguments | tojson }}]{% endfor %}"
    # trim_blocks (as in transformers) eats a newline right after a block tag
    "{% if m.tool_call_id %}(for {{ m.tool_call_id }}){% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% if enable_thinking is false %}<nothink>"
    "{% endif %}{% endif %}"
)


def conversation() -> tuple[Message, ...]:
    return (
        Message("system", (TextPart("Be brief."),)),
        Message("user", (TextPart("Weather"), TextPart("in Paris?"))),
        Message(
            "assistant",
            (
                ReasoningPart("need a tool"),
                ToolCallPart(id="c1", name="weather", arguments='{"city": "Paris"}'),
            ),
        ),
        Message("tool", (ToolResultPart(tool_call_id="c1", content="sunny"),)),
    )


def test_render_passes_tools_calls_results_and_reasoning_in_openai_shape() -> None:
    template = ChatTemplate(TOOLS_TEMPLATE, bos_token="<s>", eos_token="</s>")
    tool = Tool(name="weather", description="Get weather", parameters={"type": "object"})
    req = ChatRequest(model="m", messages=conversation(), tools=(tool,))
    tools_json = json.dumps(
        [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "Get weather",
                    "parameters": {"type": "object"},
                },
            }
        ]
    )
    assert template.render(req) == (
        f"TOOLS={tools_json}\n"
        "<system>Be brief.\n"
        "<user>Weather\nin Paris?\n"
        '<assistant>[think:need a tool][call c1 weather {"city": "Paris"}]\n'
        "<tool>sunny(for c1)\n"
        "<assistant>"
    )
    hidden = ChatRequest(
        model="m", messages=conversation(), tools=(tool,), tool_choice=ToolChoice(mode="none")
    )
    assert not template.render(hidden).startswith("TOOLS=")


def test_chat_template_kwargs_reach_the_template_and_override_engine_defaults() -> None:
    template = ChatTemplate(TOOLS_TEMPLATE, bos_token="", eos_token="")
    req = ChatRequest(model="m", messages=(Message("user", (TextPart("hi"),)),))
    assert template.render(req).endswith("<assistant>")
    assert template.render(req, defaults={"enable_thinking": False}).endswith("<nothink>")
    kwargs = ChatRequest(
        model="m", messages=req.messages, chat_template_kwargs={"enable_thinking": True}
    )
    assert template.render(kwargs, defaults={"enable_thinking": False}).endswith("<assistant>")


def test_template_errors_become_invalid_request_or_config_error() -> None:
    strict = ChatTemplate(
        "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}ok",
        bos_token="",
        eos_token="",
    )
    req = ChatRequest(model="m", messages=(Message("assistant", (TextPart("x"),)),))
    with pytest.raises(InvalidRequest, match="user first") as rejected:
        strict.render(req)
    assert rejected.value.param == "messages"
    with pytest.raises(ConfigError, match="does not compile"):
        ChatTemplate("{% for %}", bos_token="", eos_token="")


def test_template_helpers_and_sandbox() -> None:
    template = ChatTemplate(
        "{% generation %}{{ strftime_now('%Y') | length }}{% endgeneration %}"
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}"
        "{% endfor %}{{ bos_token }}",
        bos_token="<s>",
        eos_token="",
    )
    two = (Message("user", (TextPart("a"),)), Message("user", (TextPart("b"),)))
    assert template.render(ChatRequest(model="m", messages=two)) == "4a<s>"
    unsafe = ChatTemplate("{{ messages.__class__.__mro__ }}", bos_token="", eos_token="")
    with pytest.raises(InvalidRequest):
        unsafe.render(ChatRequest(model="m", messages=two))


# ---------------------------------------------------------------------------- sampling


def plan(**sampling: object) -> object:
    req = ChatRequest(model="m", messages=(), sampling=Sampling(**sampling))  # type: ignore[arg-type]
    return plan_sampling(req, n_vocab=100)


def test_unset_sampling_is_neutral_and_gets_a_random_seed() -> None:
    req = ChatRequest(model="m", messages=())
    first, second = plan_sampling(req, n_vocab=100), plan_sampling(req, n_vocab=100)
    assert first.generate_kwargs() == {
        "temp": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "min_p": 0.0,
        "typical_p": 1.0,
        "repeat_penalty": 1.0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
    }
    assert first.seed != second.seed  # 1 in 4 billion to collide
    seeded = ChatRequest(model="m", messages=(), sampling=Sampling(seed=-1))
    assert plan_sampling(seeded, n_vocab=100).seed == 0xFFFFFFFE  # never llama.cpp's "random"


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", -0.1), ("top_p", 1.5), ("top_k", -1), ("top_a", 2.0), ("min_p", -1.0)],
)
def test_out_of_range_sampling_names_the_field(field: str, value: float) -> None:
    with pytest.raises(InvalidRequest) as refused:
        plan(**{field: value})
    assert refused.value.param == field


def test_logit_bias_touches_only_its_ids_and_minus_100_bans() -> None:
    req = ChatRequest(model="m", messages=(), sampling=Sampling(logit_bias={1: -100.0, 3: 2.5}))
    (bias,) = logits_processors(plan_sampling(req, n_vocab=5))
    scores = np.array([0.0, 500.0, 1.0, 1.0, 1.0], dtype=np.float32)
    out = bias(np.array([], dtype=np.intc), scores)
    assert out[1] == -np.inf
    assert out.tolist()[2:] == [1.0, 3.5, 1.0] and out[0] == 0.0


def test_top_a_keeps_tokens_near_the_top() -> None:
    req = ChatRequest(model="m", messages=(), sampling=Sampling(top_a=0.5))
    (top_a,) = logits_processors(plan_sampling(req, n_vocab=4))
    probs = np.array([0.6, 0.25, 0.1, 0.05])
    out = top_a(np.array([], dtype=np.intc), np.log(probs).astype(np.float32))
    # threshold 0.5 * 0.6**2 = 0.18: 0.6 and 0.25 stay
    assert np.isfinite(out).tolist() == [True, True, False, False]


def test_response_formats_map_to_grammars() -> None:
    assert grammar_for(ResponseFormat()) is None
    assert "root" in (grammar_for(ResponseFormat(type="json_object")) or "")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    assert "integer" in (grammar_for(ResponseFormat(type="json_schema", schema=schema)) or "")
    with pytest.raises(InvalidRequest) as refused:
        grammar_for(ResponseFormat(type="json_schema", schema={"type": "no-such-type"}))
    assert refused.value.param == "response_format"


# ---------------------------------------------------------------------------- model_file


def gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def write_gguf(path: Path, context: int) -> None:
    kvs = [
        gguf_string("general.architecture") + struct.pack("<I", 8) + gguf_string("qwen3"),
        # an array of strings before the key we want, as tokenizers sometimes come first
        gguf_string("tokenizer.ggml.tokens")
        + struct.pack("<IIQ", 9, 8, 2)
        + gguf_string("a")
        + gguf_string("bc"),
        gguf_string("general.alignment") + struct.pack("<II", 4, 32),
        gguf_string("qwen3.context_length") + struct.pack("<II", 4, context),
    ]
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))


def test_train_context_is_read_from_the_gguf_header(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    write_gguf(model, 40960)
    assert read_train_context(model) == 40960
    (tmp_path / "not.gguf").write_bytes(b"PK\x03\x04 zip")
    with pytest.raises(ConfigError, match="not a GGUF"):
        read_train_context(tmp_path / "not.gguf")


def test_model_paths_resolve_files_and_installed_packages(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    write_gguf(model, 1024)
    assert resolve_model_path(str(model)) == model
    inside = resolve_model_path("package:hypothesis/__init__.py")
    assert inside.name == "__init__.py" and inside.parent.name == "hypothesis"
    with pytest.raises(ConfigError, match="not installed"):
        resolve_model_path("package:no_such_package_xyz/m.gguf")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model_path("package:hypothesis/absent.gguf")
    with pytest.raises(ConfigError, match="expected"):
        resolve_model_path("package:hypothesis")


def test_score_is_the_log_softmax_of_the_raw_logits() -> None:
    logits = np.array([2.0, 0.5, -np.inf, 2.0, 1.0], dtype=np.float32)
    scored = score(logits, 1, 4)
    finite = np.array([2.0, 0.5, 2.0, 1.0])
    expected = 0.5 - np.log(np.exp(finite).sum())
    assert scored.logprob == pytest.approx(expected)
    # Best first, ties by id; a banned token (-inf) gets OpenAI's finite floor.
    assert [i for i, _ in scored.top] == [0, 3, 4, 1]
    assert score(logits, 2, 0) == type(scored)(FLOOR, ())
    assert json.dumps(score(logits, 2, 5).top)  # no inf/nan reaches JSON


def test_aligner_releases_entries_with_their_text_and_drops_cut_tokens() -> None:
    stream = TextAssembler(stop=("\n\n",))
    aligner = LogprobAligner()
    out: list[str] = []
    for i, piece in enumerate([b"ab", b"\xc3", b"\xa9\n", b"\nz", b"q"]):
        start = stream.decoded
        text = stream.feed(piece)
        aligner.add(TokenLogprob(str(i), -1.0), start, stream.end)
        got = aligner.cut(stream.released) if stream.stopped else aligner.release(stream.released)
        out.append(text + "|" + "".join(e.token for e in got))
        if stream.stopped:
            break
    # The half character and the held "\n" wait; "\nz" starts inside the cut stop string.
    assert out == ["ab|0", "|", "\u00e9|1", "|2"]
