"""Structured output on the local engine: what the grammar guarantees, and what it refuses.

The promise: whenever a json_object / json_schema answer ends with finish_reason "stop", the
text parses as JSON and validates against the schema (checked with `jsonschema`, an
independent validator), over many schemas, prompts and seeds on the real model. A schema the
grammar cannot enforce is a 400 naming response_format, never a silently unenforced answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from llama_cpp.llama_grammar import LlamaGrammar
from tests.unit.backends.test_llamacpp import MODEL, card, new_ctx, running

from modelport.backends.llamacpp import LlamaCppEngine
from modelport.backends.llamacpp.grammar import grammar_for, prepare_schema
from modelport.core.catalog import LlamaCppBackend
from modelport.core.collect import collect
from modelport.core.errors import InvalidRequest
from modelport.core.types import ChatRequest, Message, ResponseFormat, Sampling, TextPart

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "The full name"},
        "age": {"type": "integer"},
        "email": {"type": ["string", "null"]},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}

# Shapes that real clients send (OpenAI strict schemas, Pydantic output, hand-written ones).
SCHEMAS: dict[str, dict[str, Any]] = {
    "person": PERSON,
    "flat_strict": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "country": {"type": "string"},
            "population": {"type": "number"},
            "capital": {"type": "boolean"},
        },
        "required": ["city", "country", "population", "capital"],
        "additionalProperties": False,
    },
    "enum_and_const": {
        "type": "object",
        "properties": {
            "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
            "version": {"const": 2},
            "level": {"type": ["integer", "null"], "enum": [1, 2, 3, None, "x"]},
        },
        "required": ["sentiment", "version", "level"],
    },
    "bounded_array": {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
            "scores": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2},
        },
        "required": ["tags", "scores"],
    },
    "nested_refs": {
        "$defs": {
            "Step": {
                "type": "object",
                "properties": {"explanation": {"type": "string"}, "output": {"type": "string"}},
                "required": ["explanation", "output"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {
            "steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}, "maxItems": 2},
            "final_answer": {"type": "string", "maxLength": 40},
        },
        "required": ["steps", "final_answer"],
        "additionalProperties": False,
    },
    "union": {
        "type": "object",
        "properties": {
            "result": {
                "anyOf": [
                    {"type": "object", "properties": {"value": {"type": "number"}}},
                    {"type": "string", "minLength": 1, "maxLength": 20},
                ]
            }
        },
        "required": ["result"],
    },
    "pattern_and_formats": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
            "day": {"type": "string", "format": "date"},
            "id": {"type": "string", "format": "uuid"},
        },
        "required": ["code", "day", "id"],
    },
    "pydantic_optional": {
        "title": "Answer",
        "type": "object",
        "properties": {
            "answer": {"title": "Answer", "type": "string"},
            "confidence": {"anyOf": [{"type": "number"}, {"type": "null"}], "default": None},
            "source": {"allOf": [{"$ref": "#/$defs/Source"}], "description": "Where from"},
        },
        "required": ["answer", "source"],
        "$defs": {
            "Source": {
                "title": "Source",
                "type": "object",
                "properties": {"url": {"type": "string"}},
                "required": ["url"],
            }
        },
    },
    "open_object": {
        "type": "object",
        "properties": {"kind": {"type": "string"}, "meta": {"type": "object"}},
        "required": ["kind"],
        "additionalProperties": True,
    },
    "recursive_tree": {
        "$ref": "#/$defs/Node",
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 16},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}, "maxItems": 2},
                },
                "required": ["name"],
            }
        },
    },
    "fixed_tuple": {
        "type": "object",
        "properties": {
            "point": {"type": "array", "prefixItems": [{"type": "number"}, {"type": "number"}]}
        },
        "required": ["point"],
    },
}

PROMPTS = (
    "Describe a famous scientist as JSON.",
    "Reply in JSON about the weather in Paris today.",
    "Summarise this review as JSON: the food was cold but the staff were lovely.",
)


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    config = LlamaCppBackend(path=MODEL, instances=2)
    with running(LlamaCppEngine(config, card(), default_threads=1)) as started:
        yield started


def structured(prompt: str, fmt: ResponseFormat, seed: int) -> ChatRequest:
    return ChatRequest(
        model="test/smollm2",
        messages=(Message("user", (TextPart(prompt),)),),
        sampling=Sampling(temperature=0.9, seed=seed),
        max_output_tokens=96,
        response_format=fmt,
    )


@pytest.mark.engine
@pytest.mark.asyncio
async def test_every_stopped_answer_validates_against_its_schema(engine: LlamaCppEngine) -> None:
    cases = [(name, PROMPTS[seed % len(PROMPTS)], seed) for seed, name in enumerate(SCHEMAS)]

    async def run(name: str, prompt: str, seed: int) -> tuple[str, str, str | None]:
        fmt = ResponseFormat("json_schema", schema=SCHEMAS[name], name=name, strict=True)
        done = await collect(engine.stream(structured(prompt, fmt, seed), new_ctx()))
        return name, done.text or "", done.finish_reason

    results = await asyncio.gather(*(run(*case) for case in cases))
    stopped = 0
    for name, text, finish in results:
        if finish != "stop":
            assert finish == "length"
            continue
        stopped += 1
        jsonschema.validate(json.loads(text), SCHEMAS[name])
    # The grammar bounds every string and array in most schemas; most answers must finish.
    assert stopped >= len(results) * 0.6, results


@pytest.mark.engine
@pytest.mark.asyncio
async def test_json_object_answers_are_objects(engine: LlamaCppEngine) -> None:
    fmt = ResponseFormat("json_object")
    results = await asyncio.gather(
        *(
            collect(engine.stream(structured(prompt, fmt, seed), new_ctx()))
            for seed, prompt in enumerate(PROMPTS)
        )
    )
    finished = [done for done in results if done.finish_reason == "stop"]
    assert finished
    for done in finished:
        assert isinstance(json.loads(done.text or ""), dict)


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "integer", "minimum": 0}, "'minimum'"),
        ({"type": "number", "exclusiveMaximum": 5}, "'exclusiveMaximum'"),
        ({"type": "integer", "multipleOf": 3}, "'multipleOf'"),
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "'uniqueItems'"),
        ({"type": "object", "patternProperties": {"^x": {}}}, "'patternProperties'"),
        ({"type": "object", "minProperties": 1}, "'minProperties'"),
        ({"not": {"type": "string"}}, "'not'"),
        ({"if": {"type": "string"}, "then": {"minLength": 2}}, "'if'"),
        ({"type": "string", "format": "email"}, "'email'"),
        ({"type": "string", "pattern": "[a-z]+"}, "anchored"),
        ({"type": "string", "pattern": '^"$'}, "may not contain"),
        ({"type": "string", "pattern": "^a$", "minLength": 2}, "'minLength'"),
        ({"type": "object", "properties": {"a": {}}, "required": ["b"]}, "'b' is required"),
        ({"type": "object", "required": ["b"]}, "'b' is required"),
        ({"allOf": [{"type": "string"}, {"maxLength": 3}]}, "'allOf'"),
        ({"$ref": "https://example.com/schema.json"}, "local references"),
        ({"$ref": "#/$defs/a", "type": "object"}, "'type'"),
        ({"anyOf": [{"type": "string"}], "oneOf": [{"type": "null"}]}, "'oneOf'"),
        ({"type": "object", "anyOf": [{"required": ["a"]}]}, "'type'"),
        ({"type": "strnig"}, "unknown type"),
        ({"type": ["string", "potato"]}, "known types"),
        ({"type": "string", "enum": [1, 2]}, "no value"),
        ({"enum": []}, "non-empty"),
        ({"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 1}, "below"),
        ({"type": "string", "minLength": 5, "maxLength": 2}, "below"),
        ({"type": "object", "properties": {"a": False}}, "admits no value"),
        ({"type": "array", "prefixItems": [{"type": "string"}], "minItems": 1}, "prefixItems"),
        ({"type": "object", "properties": {"a": {"type": "integer", "maximum": 9}}}, "$.prop"),
    ],
)
def test_what_the_grammar_cannot_enforce_is_a_400(schema: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        grammar_for(ResponseFormat("json_schema", schema=schema))
    assert info.value.param == "response_format"
    assert named in info.value.message


def test_annotations_and_common_shapes_are_rewritten_for_the_converter() -> None:
    prepared = prepare_schema(
        {
            "title": "T",
            "type": "object",
            "properties": {
                "anything": {"description": "no constraint at all"},
                "maybe": {"type": ["string", "null"], "maxLength": 4},
                "level": {"type": "integer", "enum": [1, "two", 3.0, True]},
                "ref": {"allOf": [{"$ref": "#/$defs/R"}], "description": "wrapped"},
            },
            "$defs": {"R": {"type": "object", "properties": {"x": {"type": "null"}}}},
        }
    )
    properties = prepared["properties"]
    assert set(properties["anything"]["anyOf"][0]) == {"type"}  # any value, not "any object"
    assert properties["maybe"] == {"anyOf": [{"type": "string", "maxLength": 4}, {"type": "null"}]}
    assert properties["level"] == {"enum": [1, 3.0]}
    assert properties["ref"] == {"$ref": "#/$defs/R"}
    assert prepared["additionalProperties"] is False
    assert prepared["$defs"]["R"]["properties"]["x"] == {"type": "null"}
    assert "title" not in prepared


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_grammar_compiles_in_llama_cpp(name: str) -> None:
    grammar = grammar_for(ResponseFormat("json_schema", schema=SCHEMAS[name]))
    assert grammar is not None
    assert LlamaGrammar.from_string(grammar, verbose=False) is not None
    # Strings may not contain raw control characters (JSON forbids them).
    assert "\\x00-\\x1F" in grammar or "char" not in grammar
