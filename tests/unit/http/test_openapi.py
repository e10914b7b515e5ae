"""The OpenAPI document (`http/openapi.py`): valid OpenAPI 3.1, every route the app serves in it
(the route table, the model pages under every prefix, the account API), and its response and
error schemas true to what the encoders actually write. That the running server serves it, and
answers as it says, is tests/e2e/test_fuzz_api.py's part."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import jsonschema
import msgspec
from openapi_spec_validator import OpenAPIV31SpecValidator

from modelport.core import errors
from modelport.core.collect import Completion
from modelport.core.errors import ContextLengthExceeded, ModelportError
from modelport.core.events import Usage
from modelport.core.types import TokenLogprob, ToolCallPart
from modelport.http import account_routes
from modelport.http.app import _route_table
from modelport.http.openapi import build_document
from modelport.protocols.anthropic import errors as anthropic_errors
from modelport.protocols.anthropic import models as anthropic_models
from modelport.protocols.anthropic.encode import encode_message
from modelport.protocols.openai import errors as openai_errors
from modelport.protocols.openai import models as openai_models
from modelport.protocols.openai.encode import encode_completion
from modelport.services import accounts
from modelport.services.catalog import load_catalog
from modelport.settings import load_settings
from modelport.store.base import (
    AccountRecord,
    ApiKeyRecord,
    KeyGrant,
    KeyLimits,
    LedgerEntry,
    UsageRecord,
    UsageTotal,
)

DOCUMENT = build_document(_route_table())
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def conforms(schema_name: str, body: bytes | Any) -> None:
    """Fails unless `body` (JSON bytes or a value) is valid against the named component."""
    value = msgspec.json.decode(body) if isinstance(body, bytes) else body
    root = {"$ref": "#/components/schemas/" + schema_name, "components": DOCUMENT["components"]}
    jsonschema.Draft202012Validator(root).validate(value)


def documented() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in DOCUMENT["paths"].items()
        for method in operations
    }


# -- the document ------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1")
    OpenAPIV31SpecValidator(DOCUMENT).validate()


def test_every_route_of_the_table_is_described_with_its_methods() -> None:
    table = _route_table()
    for path, methods in table.items():
        for method in methods:
            assert (method, path) in documented(), f"{method} {path} is not in /openapi.json"
        if path.endswith("/models"):  # and the model pages: `…/models/qwen/qwen3-8b`
            assert ("GET", path + "/{model_id}") in documented()
    assert ("GET", "/openapi.json") in documented()


def test_every_account_route_is_described() -> None:
    """The account API has no table: its routes are the ones its module's docstring lists,
    `GET|POST /api/v1/admin/users`, `GET /api/v1/admin/users/NAME`, … (names in capitals
    are path parameters)."""
    listed: set[tuple[str, str]] = set()
    names = {"NAME": "{name}", "ID": "{key_id}"}
    pattern = r"`((?:GET|POST|DELETE)(?:\|(?:GET|POST|DELETE))*) (/api/v1/[^`?\s]+)"
    for methods, path in re.findall(pattern, account_routes.__doc__ or ""):
        path = "/".join(names.get(part, part) for part in path.split("/"))
        listed.update((method, path) for method in methods.split("|"))
    assert len(listed) >= 12
    documented_account = {(m, p) for m, p in documented() if p.startswith(account_routes.PREFIX)}
    assert listed == documented_account


_OPEN_PATHS = ("/health", "/healthz", "/readyz", "/metrics", "/openapi.json")


def test_operations_are_unique_keyed_and_answer_errors_in_their_doors_shape() -> None:
    ids = [op["operationId"] for ops in DOCUMENT["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            website = operation["tags"] == ["Website"]
            public = path in _OPEN_PATHS or "/models" in path or website
            assert (operation["security"] == []) == public, (method, path)
            if website and path != "/static/{name}":
                # Pages answer HTML, a missing model's page too.
                assert "text/html" in operation["responses"]["200"]["content"]
                continue
            anthropic = path.startswith("/api/anthropic/") or "/messages" in path
            shared = not anthropic and "/models" in path  # the header chooses
            shapes = ["OpenAIError", "AnthropicError"] if shared else []
            shape = "AnthropicError" if anthropic else "OpenAIError"
            expected = (
                {"anyOf": [{"$ref": "#/components/schemas/" + name} for name in shapes]}
                if shared
                else {"$ref": "#/components/schemas/" + shape}
            )
            for status, response in operation["responses"].items():
                if path == "/readyz" and status == "503":
                    continue  # not an error: the readiness report, saying what failed
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == expected, (path, status)


def test_request_bodies_are_the_decoders_own_types() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]
    assert chat["required"] == ["model", "messages"]
    assert chat["properties"]["top_logprobs"]["anyOf"][0] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 20,
    }
    assert set(schemas["MessagesRequest"]["required"]) == {"model", "messages", "max_tokens"}
    assert "OpenAIToolDef" in schemas and "AnthropicToolDef" in schemas


# -- responses match what the encoders write ---------------------------------------------------


def _error_classes() -> list[type[ModelportError]]:
    return [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, ModelportError)
    ]


def test_every_error_conforms_in_both_shapes() -> None:
    for cls in _error_classes():
        error = cls("went wrong", param="model")
        conforms("OpenAIError", openai_errors.error_body(error))
        conforms("AnthropicError", anthropic_errors.error_body(error))
        conforms("AnthropicError", anthropic_errors.error_body(error, request_id="req_1"))
    overflow = ContextLengthExceeded("too long", prompt_tokens=9, limit=8)
    conforms("AnthropicError", anthropic_errors.error_body(overflow))


def test_every_error_status_is_documented_on_the_inference_routes() -> None:
    responses = DOCUMENT["paths"]["/v1/chat/completions"]["post"]["responses"]
    statuses = {cls.status for cls in _error_classes()} - {405}
    assert statuses <= {int(status) for status in responses}


def test_model_lists_and_pages_conform() -> None:
    catalog = load_catalog(load_settings({}))
    conforms("OpenAIModelList", openai_models.encode_model_list(catalog))
    cards = [card for card in catalog.models if not card.hidden]
    conforms("AnthropicModelList", anthropic_models.encode_model_list(cards))
    conforms("AnthropicModelList", anthropic_models.encode_model_list([]))
    for card in cards:
        conforms("OpenAIModel", openai_models.encode_model(card))
        conforms("AnthropicModel", anthropic_models.encode_model(card))


def _completion(**changes: Any) -> Completion:
    base = Completion(
        model="qwen/qwen3-8b",
        backend="b",
        text="Hello",
        reasoning="Think",
        tool_calls=(ToolCallPart("call_1", "f", '{"a": 1}'),),
        logprobs=(TokenLogprob("Hel", -0.5, (72,), (("Hel", -0.5, (72,)), ("X", -2.0, None))),),
        usage=Usage(5, 3, reasoning_tokens=1, cached_tokens=2, cost_nano=1234, estimated=True),
        finish_reason="tool_calls",
        native_finish_reason="tool_calls",
    )
    return msgspec.structs.replace(base, **changes)


def test_answers_conform() -> None:
    for completion in (
        _completion(),
        _completion(text=None, reasoning=None, tool_calls=(), logprobs=None, usage=Usage(1, 0)),
    ):
        body = encode_completion(completion, completion_id="chatcmpl-1", created=1)
        conforms("ChatCompletion", body)
        conforms("AnthropicMessage", encode_message(completion, message_id="msg_1"))


def test_account_bodies_conform() -> None:
    account = AccountRecord(id=1, name="ann", role="user", balance_nano=10, created_at=NOW)
    conforms("Account", accounts.account_json(account))
    key = ApiKeyRecord(
        id=2, name="k", prefix="sk-abc", secret_hash="0" * 64, role="user", created_at=NOW
    )
    for limits in (
        KeyLimits(),
        KeyLimits(expires_at=NOW, allowed_models=("m",), spend_limit_nano=5, rpm=1, tpm=2),
    ):
        grant = KeyGrant(key=key, account=account, limits=limits, spent_nano=3)
        conforms("KeyList", {"data": [accounts.grant_json(grant)]})
        conforms("CreatedKey", {**accounts.grant_json(grant), "secret": "sk-x"})
    row = UsageRecord(
        request_id="r", account_id=1, key_id=2, model="m", backend=None, created_at=NOW
    )
    conforms("Generation", {"data": accounts.usage_json(row)})
    total = UsageTotal(
        group="m", requests=1, prompt_tokens=1, completion_tokens=1, reasoning_tokens=0, cost_nano=1
    )
    conforms("UsageTotals", {"by": "model", "data": [accounts.total_json(total)]})
    entry = LedgerEntry(
        id=1,
        account_id=1,
        amount_nano=-5,
        kind="charge",
        request_id="r",
        reason=None,
        created_at=NOW,
    )
    conforms("Ledger", {"data": [account_routes._entry_json(entry)]})
