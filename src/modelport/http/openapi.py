"""The OpenAPI 3.1 document of the whole HTTP API, served without a key at `GET /openapi.json`.

Generated, never written by hand, so it cannot drift from the code:
- the paths are the app's route table (`handler(routes)` is given it), every alias prefix
  included, plus `…/models/{model_id}` under every prefix that lists models and the account
  API under `/api/v1/`; a route the table gains without a description here fails the build
  (and so the test that builds it);
- request bodies are the msgspec Structs that validate them (`protocols/openai/wire`,
  `protocols/anthropic/wire`) and, for the account API, `openapi_shapes`; responses are
  `openapi_shapes`; all turned into JSON Schema by `msgspec.json.schema_components`;
- the error statuses and their codes come from the error tree (`core.errors`), in each door's
  error shape: OpenAI's on the OpenAI door and the account API, Anthropic's on its door.

Built once, on the first request (a few milliseconds), then served as cached bytes.
Imports nothing that does I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Annotated, Any, Literal

import msgspec

from modelport import __version__
from modelport.core import errors as core_errors
from modelport.core.errors import ModelportError
from modelport.http import openapi_shapes as shapes
from modelport.http.account_routes import PREFIX as ACCOUNT_PREFIX
from modelport.http.exchange import Exchange
from modelport.http.state import AppState
from modelport.protocols.anthropic import wire as anthropic_wire
from modelport.protocols.openai import wire as openai_wire
from modelport.services.codes import MAX_COUNT as MAX_CODES

OPENAPI_VERSION = "3.1.0"
DOCUMENT_PATH = "/openapi.json"
_REF = "#/components/schemas/"

Operation = dict[str, Any]
Handler = Callable[[AppState, Exchange], Awaitable[None]]


# The top-up codes' bodies (`services/codes.py`'s JSON views), beside `openapi_shapes`' others.


class CreateCodes(msgspec.Struct, frozen=True):
    """`POST /api/v1/admin/codes`: `count` codes worth `amount` CNY each."""

    count: Annotated[int, msgspec.Meta(ge=1, le=MAX_CODES)]
    amount: shapes.Amount  # more than zero
    expires_at: str | None = None  # ISO 8601 with a time zone, in the future
    batch: str | None = None  # a label (default: the time of creation)


class TopupCode(msgspec.Struct, frozen=True):
    id: int
    batch: str
    amount: str
    amount_nano: int
    state: Literal["unused", "redeemed", "expired"]
    created_at: str
    created_by: str
    expires_at: str | None
    redeemed_at: str | None
    redeemed_by: str | None  # the user's name


class TopupCodeList(msgspec.Struct, frozen=True):
    data: list[TopupCode]


class CreatedTopupCode(TopupCode, frozen=True):
    code: str  # shown once: only its SHA-256 is stored


class CreatedCodes(msgspec.Struct, frozen=True):
    batch: str
    count: int
    data: list[CreatedTopupCode]


class RedeemCode(msgspec.Struct, frozen=True):
    """`POST /api/v1/codes/redeem`; case, spaces and dashes do not matter."""

    code: str


class RedeemedCode(msgspec.Struct, frozen=True):
    amount: str  # what the code added
    amount_nano: int
    account: shapes.Account  # the account after


# Component names msgspec qualifies because two modules define a type of that name.
_RENAMES = {
    "modelport.protocols.openai.wire.": "OpenAI",
    "modelport.protocols.anthropic.wire.": "Anthropic",
}

_SCHEMA_TYPES: tuple[Any, ...] = (
    openai_wire.ChatCompletionRequest,
    shapes.ChatCompletion,
    shapes.ChatCompletionChunk,
    shapes.OpenAIModelList,
    shapes.OpenAIError,
    anthropic_wire.MessagesRequest,
    anthropic_wire.CountTokensRequest,
    shapes.AnthropicMessage,
    shapes.CountTokensResponse,
    shapes.AnthropicModelList,
    shapes.AnthropicError,
    shapes.Health,
    shapes.CreateUser,
    shapes.TopUp,
    shapes.CreateKey,
    shapes.Account,
    shapes.AccountList,
    shapes.KeyList,
    shapes.CreatedKey,
    shapes.RevokedKey,
    shapes.Ledger,
    shapes.Generation,
    shapes.UsageTotals,
    CreateCodes,
    TopupCodeList,
    CreatedCodes,
    RedeemCode,
    RedeemedCode,
)

# Both ways of sending a key; either one will do.
_KEYED: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
_PUBLIC: list[dict[str, list[str]]] = []

_E = core_errors
# What any request may meet: too many in flight from its address, or an address throttled
# after failed authentications (429), and a failure of the server's own (500).
_ANY: tuple[type[ModelportError], ...] = (_E.RateLimited, _E.InternalError)
_INFERENCE_ERRORS: tuple[type[ModelportError], ...] = (
    *_ANY,
    _E.InvalidRequest,
    _E.AuthenticationFailed,
    _E.InsufficientBalance,
    _E.PermissionDenied,
    _E.NotFound,
    _E.PayloadTooLarge,
    _E.UpstreamError,
    _E.Overloaded,
    _E.UpstreamTimeout,
)
_COUNT_ERRORS = tuple(e for e in _INFERENCE_ERRORS if e is not _E.InsufficientBalance)
_ACCOUNT_ERRORS: tuple[type[ModelportError], ...] = (
    *_ANY,
    _E.InvalidRequest,
    _E.AuthenticationFailed,
    _E.PermissionDenied,
    _E.NotFound,
    _E.PayloadTooLarge,
)
_PUBLIC_ERRORS = _ANY
_MODEL_ERRORS: tuple[type[ModelportError], ...] = (*_ANY, _E.NotFound)


def handler(routes: Mapping[str, Mapping[str, object]]) -> Handler:
    """The route that serves the document of `routes` (path -> method -> handler), built on
    the first request: the table is complete by then, this route included."""
    cached: list[bytes] = []

    async def openapi_json(state: AppState, exchange: Exchange) -> None:
        if not cached:
            cached.append(msgspec.json.encode(build_document(routes)))
        await exchange.respond(200, cached[0])

    return openapi_json


def build_document(routes: Mapping[str, Iterable[str]]) -> dict[str, Any]:
    """The OpenAPI document for a route table (path -> its methods) and the account API.

    Raises LookupError for a route this module cannot describe."""
    paths: dict[str, dict[str, Operation]] = {}
    for path, methods in routes.items():
        for method in methods:
            paths.setdefault(path, {})[method.lower()] = _route_operation(path, method)
        if path in WEB_PAGES:
            continue
        if path.endswith("/models"):
            paths[path + "/{model_id}"] = {"get": _model_operation(path)}
    paths["/models/{model_id}"] = {
        "get": _page_operation("/models/{model_id}"),
        "head": _page_operation("/models/{model_id}"),
    }
    paths["/static/{name}"] = {"get": _static_operation()}
    for prefix in ("/v1", "/api/gpt/v1"):
        if prefix + "/responses" in routes:
            one = prefix + "/responses/{response_id}"
            paths[one] = {
                "get": _stored_response("The stored response."),
                "delete": _stored_response("Delete a stored response."),
            }
            paths[one + "/input_items"] = {"get": _stored_response("Its input items.")}
    for method, tail, operation in _account_operations():
        paths.setdefault(ACCOUNT_PREFIX + tail, {})[method.lower()] = operation
    for path, operations in paths.items():
        for method, operation in operations.items():
            operation["operationId"] = _operation_id(method, path)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "modelport",
            "version": __version__,
            "summary": "A self-hosted LLM API gateway: OpenAI- and Anthropic-compatible doors, "
            "keys, metering and billing.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "OpenAI", "description": "The OpenAI-compatible door (docs/api.md)."},
            {
                "name": "Anthropic",
                "description": "The Anthropic Messages door (docs/anthropic.md).",
            },
            {"name": "Account", "description": "What a key's owner may see (docs/billing.md)."},
            {"name": "Admin", "description": "Users, keys and usage: admin keys only."},
            {"name": "Server", "description": "Health and this document."},
        ],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer sk-…` (OpenAI clients).",
                },
                "apiKeyHeader": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "`x-api-key: sk-…` (Anthropic clients).",
                },
            },
        },
    }


# ------------------------------------------------------------------------------ schemas


def _schemas() -> dict[str, Any]:
    _refs, components = msgspec.json.schema_components(_SCHEMA_TYPES, ref_template=_REF + "{name}")
    renames = {name: _readable(name) for name in components if _readable(name) != name}
    if not renames:
        return dict(sorted(components.items()))
    renamed = _rename_refs(components, {_REF + old: _REF + new for old, new in renames.items()})
    return dict(sorted((renames.get(name, name), schema) for name, schema in renamed.items()))


def _readable(name: str) -> str:
    for module, door in _RENAMES.items():
        if name.startswith(module):
            return door + name[len(module) :]
    return name


def _rename_refs(value: Any, refs: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            key: refs.get(item, item) if key == "$ref" else _rename_refs(item, refs)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_rename_refs(item, refs) for item in value]
    return value


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


# Where both doors share a path (`/v1/models…`), errors take Anthropic's shape for a client that
# sends `anthropic-version`, OpenAI's otherwise.
SHARED_ERROR = "OpenAIError|AnthropicError"


# ------------------------------------------------------------------------------ errors


def _error_classes() -> list[type[ModelportError]]:
    found: list[type[ModelportError]] = []
    pending: list[type[ModelportError]] = [ModelportError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def _errors(classes: Iterable[type[ModelportError]], shape: str) -> dict[str, dict[str, Any]]:
    """The error responses for the errors `classes` and their subclasses, one per status,
    each naming the codes it carries (`code` in OpenAI's shape); `shape` is the error body's
    schema, or SHARED_ERROR."""
    wanted = tuple(classes)
    codes: dict[int, set[str]] = {}
    for cls in _error_classes():
        if issubclass(cls, wanted) and cls.code is not None:
            codes.setdefault(cls.status, set()).add(cls.code)
    schema = {"anyOf": [_ref(name) for name in shape.split("|")]} if "|" in shape else _ref(shape)
    responses: dict[str, dict[str, Any]] = {}
    for status in sorted(codes):
        response = {
            "description": "An error; codes: " + ", ".join(sorted(codes[status])) + ".",
            "content": {"application/json": {"schema": schema}},
        }
        if status in (429, 503):
            response["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before trying again, when known.",
                    "schema": {"type": "integer", "minimum": 1},
                }
            }
        responses[str(status)] = response
    return responses


# ------------------------------------------------------------------------------ the doors


_ANTHROPIC_VERSION = {
    "name": "anthropic-version",
    "in": "header",
    "required": False,
    "description": "Sent by every Anthropic client; accepted, not required. On a path both "
    "doors share (`/v1/models…`) it selects Anthropic's shapes.",
    "schema": {"type": "string"},
}


def _is_anthropic_only(path: str) -> bool:
    return path.startswith("/api/anthropic/")


WEB_PAGES = ("/", "/models", "/get-apikey")
_PAGE_SUMMARIES = {
    "/": "The website's home page.",
    "/models": "The model catalog, with search, filters and sorting.",
    "/models/{model_id}": "A model's page: facts, prices, code samples, parameters, figures.",
    "/get-apikey": "How to get an API key.",
}
_QUERY = {"in": "query", "required": False, "schema": {"type": "string"}}
_PAGE_PARAMETERS: dict[str, list[dict[str, Any]]] = {
    "/models": [
        {"name": "q", "description": "Words that must all appear.", **_QUERY},
        {"name": "family", "description": "A model family, e.g. Qwen.", **_QUERY},
        {
            "name": "cap",
            "in": "query",
            "required": False,
            "description": "Capabilities the model must have (repeatable).",
            "schema": {"type": "array", "items": {"type": "string"}},
            "style": "form",
            "explode": True,
        },
        {"name": "anthropic", "description": "1: served by the Anthropic door.", **_QUERY},
        {"name": "sort", "description": "popular, newest, price or context.", **_QUERY},
    ],
}


def _stored_response(summary: str) -> Operation:
    """`GET|DELETE …/responses/{response_id}` and its input items: the caller's own only."""
    return {
        "tags": ["OpenAI"],
        "summary": summary + " Another account's id, or an expired one, is a 404.",
        "security": _KEYED,
        "parameters": [
            {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": {
                "description": "The response, its input items (a list), or the deletion.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            **_errors((*_ANY, _E.AuthenticationFailed, _E.NotFound), "OpenAIError"),
        },
    }


def _page_operation(path: str) -> Operation:
    """A page of the website (HTML, no key, an ETag for revalidation)."""
    parameters: list[dict[str, Any]] = [
        {"name": "lang", "description": "en or zh; remembered in a cookie.", **_QUERY},
        *_PAGE_PARAMETERS.get(path, []),
    ]
    if "{model_id}" in path:
        parameters.insert(
            0,
            {
                "name": "model_id",
                "in": "path",
                "required": True,
                "description": "A catalog model id (it may contain a slash).",
                "schema": {"type": "string"},
            },
        )
    html = {"text/html": {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {
        "200": {"description": "The page.", "content": html},
        "304": {"description": "Not modified (If-None-Match matched the ETag)."},
    }
    if "{model_id}" in path:
        responses["404"] = {"description": "No such model.", "content": html}
    return {
        "tags": ["Website"],
        "summary": _PAGE_SUMMARIES[path],
        "security": _PUBLIC,
        "parameters": parameters,
        "responses": responses,
    }


def _static_operation() -> Operation:
    return {
        "tags": ["Website"],
        "summary": "The website's stylesheet and script (site.css, site.js).",
        "security": _PUBLIC,
        "parameters": [
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": {"description": "The file.", "content": {"text/css": {}, "text/javascript": {}}},
            "304": {"description": "Not modified."},
            **_errors((*_PUBLIC_ERRORS, _E.NotFound), "OpenAIError"),
        },
    }


def _route_operation(path: str, method: str) -> Operation:
    """The operation for one route of the app's table."""
    if path in WEB_PAGES and method in ("GET", "HEAD"):
        return _page_operation(path)
    if method in ("GET", "HEAD") and path in ("/health", "/healthz"):
        return {
            "tags": ["Server"],
            "summary": "Liveness: 200 while the server answers (nothing else is checked).",
            "security": _PUBLIC,
            "responses": {
                "200": _json("Health", "Alive."),
                **_errors(_PUBLIC_ERRORS, "OpenAIError"),
            },
        }
    if method in ("GET", "HEAD") and path == "/readyz":
        return {
            "tags": ["Server"],
            "summary": "Readiness: the database answers and every configured model has a "
            "backend whose circuit is not open.",
            "security": _PUBLIC,
            "responses": {
                "200": {
                    "description": "Ready for traffic.",
                    "content": {"application/json": {"schema": _READINESS}},
                },
                "503": {
                    "description": "Not ready: what failed.",
                    "content": {"application/json": {"schema": _READINESS}},
                },
                **_errors(_PUBLIC_ERRORS, "OpenAIError"),
            },
        }
    if method == "GET" and path == "/metrics":
        return {
            "tags": ["Server"],
            "summary": "Prometheus metrics (text format): for loopback clients, or with the "
            "metrics token (MODELPORT_METRICS_TOKEN) as a bearer token.",
            "security": _PUBLIC,
            "responses": {
                "200": {
                    "description": "Every metric, all worker processes together.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **_errors((*_PUBLIC_ERRORS, _E.PermissionDenied), "OpenAIError"),
            },
        }
    if method == "GET" and path == DOCUMENT_PATH:
        return {
            "tags": ["Server"],
            "summary": "This document.",
            "security": _PUBLIC,
            "responses": {
                "200": {
                    "description": "The OpenAPI 3.1 document.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **_errors(_PUBLIC_ERRORS, "OpenAIError"),
            },
        }
    if method == "POST" and path.endswith("/chat/completions"):
        return _chat_completions()
    if method == "POST" and path.endswith("/responses"):
        return _responses()
    if method == "POST" and path.endswith("/messages/count_tokens"):
        return _count_tokens()
    if method == "POST" and path.endswith("/messages"):
        return _messages()
    if method == "GET" and path.endswith("/models"):
        return _model_list(anthropic_only=_is_anthropic_only(path))
    raise LookupError(f"openapi: no description for {method} {path}; add one to http/openapi.py")


def _chat_completions() -> Operation:
    return {
        "tags": ["OpenAI"],
        "summary": "A chat completion: one JSON body, or SSE chunks with `stream: true`.",
        "description": "Unknown fields are ignored here and passed on to upstream servers.",
        "security": _KEYED,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("ChatCompletionRequest")}},
        },
        "responses": {
            "200": {
                "description": "The answer: a `chat.completion`, or with `stream: true` a "
                "stream of `data:` lines, each a `ChatCompletionChunk`, ending `data: [DONE]`.",
                "content": {
                    "application/json": {"schema": _ref("ChatCompletion")},
                    "text/event-stream": {"schema": _SSE_EVENT},
                },
            },
            **_errors(_INFERENCE_ERRORS, "OpenAIError"),
        },
    }


def _responses() -> Operation:
    return {
        "tags": ["OpenAI"],
        "summary": "A response (OpenAI's Responses API): one `response` object, or its typed "
        "SSE events with `stream: true`.",
        "description": "`input` is a string or a list of items (messages, function_call, "
        "function_call_output, reasoning); function and namespace tools are offered to the "
        "model, hosted tools (web_search, …) are not. Stateless: previous_response_id is "
        "refused.",
        "security": _KEYED,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["model", "input"],
                        "properties": {
                            "model": {"type": "string", "minLength": 1},
                            "input": {
                                "anyOf": [
                                    {"type": "string"},
                                    {"type": "array", "minItems": 1, "items": {"type": "object"}},
                                ]
                            },
                            "instructions": {"type": "string"},
                            "stream": {"type": "boolean"},
                            "max_output_tokens": {"type": "integer", "minimum": 1},
                        },
                    }
                }
            },
        },
        "responses": {
            "200": {
                "description": "The `response`, or with `stream: true` its typed events "
                "(`event:` and `data:` lines), each with a `sequence_number`.",
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "text/event-stream": {"schema": _SSE_EVENT},
                },
            },
            **_errors(_INFERENCE_ERRORS, "OpenAIError"),
        },
    }


# One server-sent event (before OpenAPI 3.2, a stream's `schema` describes each event): its
# `data:` payload and, on the Anthropic door, its `event:` name.
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
}


def _messages() -> Operation:
    return {
        "tags": ["Anthropic"],
        "summary": "A message: one JSON body, or Anthropic's SSE events with `stream: true`.",
        "description": "Unknown fields are ignored. Claude model ids are served by the model "
        "the operator names in MODELPORT_CLAUDE_MODEL; max_tokens above the model's limit is "
        "clamped to it.",
        "security": _KEYED,
        "parameters": [_ANTHROPIC_VERSION],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("MessagesRequest")}},
        },
        "responses": {
            "200": {
                "description": "The answer: a `message`, or with `stream: true` Anthropic's "
                "`event:`-typed stream (message_start … message_stop).",
                "content": {
                    "application/json": {"schema": _ref("AnthropicMessage")},
                    "text/event-stream": {"schema": _SSE_EVENT},
                },
            },
            **_errors(_INFERENCE_ERRORS, "AnthropicError"),
        },
    }


def _count_tokens() -> Operation:
    return {
        "tags": ["Anthropic"],
        "summary": "The size of a prompt in tokens, as the model would count it.",
        "security": _KEYED,
        "parameters": [_ANTHROPIC_VERSION],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("CountTokensRequest")}},
        },
        "responses": {
            "200": _json("CountTokensResponse", "The count."),
            **_errors(_COUNT_ERRORS, "AnthropicError"),
        },
    }


_READINESS = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"enum": ["ready", "not_ready"]},
        "database": {"type": "string", "description": '"ok", or why it cannot be reached.'},
        "models_unavailable": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Configured models all of whose backends' circuits are open.",
        },
    },
}

_ALL_MODELS = {
    "name": "all",
    "in": "query",
    "required": False,
    "description": "true: the whole catalog; otherwise only the models this server can "
    "answer (those with a configured backend).",
    "schema": {"type": "string", "enum": ["true", "1", "false", "0"]},
}


def _model_list(*, anthropic_only: bool) -> Operation:
    if anthropic_only:
        return {
            "tags": ["Anthropic"],
            "summary": "The served models, in Anthropic's shape.",
            "security": _PUBLIC,
            "parameters": [_ANTHROPIC_VERSION, _ALL_MODELS],
            "responses": {
                "200": _json("AnthropicModelList", "One page holding every model."),
                **_errors(_PUBLIC_ERRORS, "AnthropicError"),
            },
        }
    return {
        "tags": ["OpenAI", "Anthropic"],
        "summary": "The models this server can answer (`?all=true`: the catalog): OpenAI's "
        "shape, or Anthropic's for a client that sends `anthropic-version`.",
        "security": _PUBLIC,
        "parameters": [_ANTHROPIC_VERSION, _ALL_MODELS],
        "responses": {
            "200": {
                "description": "Every model that is not hidden and has a backend (every "
                "model not hidden, with `all=true`).",
                "content": {
                    "application/json": {
                        "schema": {"anyOf": [_ref("OpenAIModelList"), _ref("AnthropicModelList")]}
                    }
                },
            },
            **_errors(_PUBLIC_ERRORS, SHARED_ERROR),
        },
    }


def _model_operation(list_path: str) -> Operation:
    """`GET …/models/{model_id}` beside a model list."""
    anthropic_only = _is_anthropic_only(list_path)
    model_id = {
        "name": "model_id",
        "in": "path",
        "required": True,
        "description": "A catalog id; ids contain a slash (`qwen/qwen3-8b`), written as is.",
        "schema": {"type": "string"},
    }
    if anthropic_only:
        schema: dict[str, Any] = _ref("AnthropicModel")
        error_shape = "AnthropicError"
    else:
        schema = {"anyOf": [_ref("OpenAIModel"), _ref("AnthropicModel")]}
        error_shape = SHARED_ERROR
    return {
        "tags": ["Anthropic"] if anthropic_only else ["OpenAI", "Anthropic"],
        "summary": "One model (Anthropic's shape for a client that sends `anthropic-version`).",
        "security": _PUBLIC,
        "parameters": [model_id, _ANTHROPIC_VERSION],
        "responses": {
            "200": {
                "description": "The model.",
                "content": {"application/json": {"schema": schema}},
            },
            **_errors(_MODEL_ERRORS, error_shape),
        },
    }


# ------------------------------------------------------------------------------ account API


def _query(name: str, description: str, schema: dict[str, Any], *, required: bool = False) -> Any:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


_STRING = {"type": "string"}
_BY = _query(
    "by",
    "How to group the totals (default day).",
    {"type": "string", "enum": ["day", "model", "key"]},
)
_SINCE = _query("since", "ISO 8601 date or time; UTC when it names no zone.", _STRING)
_UNTIL = _query("until", "ISO 8601 date or time; UTC when it names no zone.", _STRING)
_USER_NAME = _path("name", {"type": "string", "minLength": 1})


def _account_op(
    tag: str,
    summary: str,
    ok: tuple[int, str, str],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: str | None = None,
) -> Operation:
    status, schema, description = ok
    operation: Operation = {"tags": [tag], "summary": summary, "security": _KEYED}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    operation["responses"] = {
        str(status): _json(schema, description),
        **_errors(_ACCOUNT_ERRORS, "OpenAIError"),
    }
    return operation


def _account_operations() -> list[tuple[str, str, Operation]]:
    """(method, path under /api/v1/, operation): the routes `account_routes` serves."""
    return [
        (
            "GET",
            "generation",
            _account_op(
                "Account",
                "One request's usage row (OpenRouter's generation stats).",
                (200, "Generation", "The row."),
                parameters=[
                    _query(
                        "id",
                        "The response's id (`chatcmpl-…`, `msg_…`) or the bare request id.",
                        _STRING,
                        required=True,
                    )
                ],
            ),
        ),
        ("GET", "me", _account_op("Account", "The caller's account.", (200, "Account", "It."))),
        (
            "GET",
            "usage",
            _account_op(
                "Account",
                "The caller's account's usage totals.",
                (200, "UsageTotals", "The totals."),
                parameters=[_BY, _SINCE, _UNTIL],
            ),
        ),
        ("GET", "admin/users", _account_op("Admin", "Every user.", (200, "AccountList", "Them."))),
        (
            "POST",
            "admin/users",
            _account_op("Admin", "A new user.", (201, "Account", "Created."), body="CreateUser"),
        ),
        (
            "GET",
            "admin/users/{name}",
            _account_op(
                "Admin", "One user.", (200, "Account", "The user."), parameters=[_USER_NAME]
            ),
        ),
        (
            "POST",
            "admin/users/{name}/topup",
            _account_op(
                "Admin",
                "Add to (or, negative, take from) a user's balance.",
                (200, "Account", "The account after."),
                parameters=[_USER_NAME],
                body="TopUp",
            ),
        ),
        (
            "GET",
            "admin/users/{name}/ledger",
            _account_op(
                "Admin",
                "A user's ledger: top-ups, adjustments, charges.",
                (200, "Ledger", "The entries."),
                parameters=[_USER_NAME],
            ),
        ),
        (
            "GET",
            "admin/keys",
            _account_op(
                "Admin",
                "Every key (of one user, with `user`).",
                (200, "KeyList", "The keys."),
                parameters=[_query("user", "A user's name.", _STRING)],
            ),
        ),
        (
            "POST",
            "admin/keys",
            _account_op(
                "Admin",
                "A new key; its secret is in this answer only.",
                (201, "CreatedKey", "Created."),
                body="CreateKey",
            ),
        ),
        (
            "DELETE",
            "admin/keys/{key_id}",
            _account_op(
                "Admin",
                "Revoke a key.",
                (200, "RevokedKey", "Revoked."),
                parameters=[_path("key_id", {"type": "integer", "minimum": 0})],
            ),
        ),
        (
            "POST",
            "codes/redeem",
            _account_op(
                "Account",
                "Spend a top-up code on the caller's account. A code that does not exist, was "
                "spent or has expired is one 400; repeated failures are refused with 429.",
                (200, "RedeemedCode", "Redeemed: the amount and the account after."),
                body="RedeemCode",
            ),
        ),
        (
            "GET",
            "admin/codes",
            _account_op(
                "Admin",
                "Top-up codes (of one batch, with `batch`) and their state; never the codes.",
                (200, "TopupCodeList", "The codes."),
                parameters=[_query("batch", "A batch's label.", _STRING)],
            ),
        ),
        (
            "POST",
            "admin/codes",
            _account_op(
                "Admin",
                "A batch of top-up codes; the codes are in this answer only.",
                (201, "CreatedCodes", "Created."),
                body="CreateCodes",
            ),
        ),
        (
            "GET",
            "admin/usage",
            _account_op(
                "Admin",
                "Usage totals of every account, one user's, or one key's.",
                (200, "UsageTotals", "The totals."),
                parameters=[
                    _BY,
                    _query("user", "A user's name.", _STRING),
                    _query("key", "A key's id.", {"type": "integer", "minimum": 0}),
                    _SINCE,
                    _UNTIL,
                ],
            ),
        ),
    ]


def _operation_id(method: str, path: str) -> str:
    words = [part.strip("{}") for part in path.replace(".", "_").split("/") if part]
    return "_".join([method, *words])
