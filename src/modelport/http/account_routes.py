"""Accounts, keys and usage over HTTP (JSON): what a key's owner may see, and the admin API.

Owner (any key):
- `GET /api/v1/generation?id=ID`: one request's usage row (OpenRouter's generation stats); the
  id is the response's (`chatcmpl-…`, `msg_…`) or the bare request id. Someone else's
  request is a 404, never a 403 (ids are not confirmed to strangers). Which backend served it
  (`openai_compat:HOST:PORT`) is the deployment's business: `backend` is null unless the
  caller is an admin.
- `GET /api/v1/me`: the caller's account and balance.
- `GET /api/v1/usage?by=day|model|key[&since=ISO][&until=ISO]`: the account's totals.
- `POST /api/v1/codes/redeem` `{"code": "MPC-…"}`: spend a top-up code on the caller's account
  (`services/codes`); a code that does not exist, was spent or expired is one answer, and
  failures are throttled per account (429).

Admin (admin keys only):
- `GET|POST /api/v1/admin/users`, `GET /api/v1/admin/users/NAME`,
  `POST /api/v1/admin/users/NAME/topup` `{"amount": "12.5", "reason": "…"}`,
  `GET /api/v1/admin/users/NAME/ledger`;
- `GET|POST /api/v1/admin/keys` (`{"name", "user", "rpm", "tpm", "limit", "models",
  "expires_at"}`; the secret is in the answer once), `DELETE /api/v1/admin/keys/ID` (revoke);
- `GET /api/v1/admin/usage?by=…[&user=NAME][&key=ID][&since][&until]`;
- `GET|POST /api/v1/admin/codes` (`?batch=NAME` / `{"count", "amount", "expires_at",
  "batch"}`; the codes are in the answer once): top-up codes.

Money is an exact CNY decimal string (`"balance": "12.5"`) beside integer nano-yuan; an
amount sent as a JSON number is read exactly too. What a client sent and an error repeats is
clipped (`core.errors.clip`); numbers are checked against what the store holds (64-bit ids).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, cast
from urllib.parse import parse_qs, unquote

import msgspec

from modelport.core.errors import (
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PermissionDenied,
    clip,
)
from modelport.http.auth import api_key_from
from modelport.http.exchange import Exchange
from modelport.http.state import AppState
from modelport.protocols.validation import INT64_MAX, decode_json
from modelport.services import accounts, codes
from modelport.services.keys import Principal, revoke_key

PREFIX = "/api/v1/"
_GROUPS = ("day", "model", "key")


async def handle(state: AppState, exchange: Exchange) -> None:
    """Route a path under /api/v1/ (NotFound when none matches)."""
    principal = await state.keys.authenticate(api_key_from(exchange))
    # Settlements are written behind the responses: what this caller reads includes every
    # request this process has finished (read-your-writes).
    await state.metering.flush()
    parts = [unquote(part) for part in exchange.path[len(PREFIX) :].split("/") if part]
    method = exchange.method
    if parts == ["generation"]:
        _allow(method, "GET")
        return await _generation(state, exchange, principal)
    if parts == ["me"]:
        _allow(method, "GET")
        account = await _run(state.billing_store.get_account_by_id, principal.account_id)
        if account is None:
            raise NotFound("this key's account no longer exists")
        return await _json(exchange, accounts.account_json(account))
    if parts == ["usage"]:
        _allow(method, "GET")
        return await _usage(state, exchange, account_id=principal.account_id, key_id=None)
    if parts == ["codes", "redeem"]:
        _allow(method, "POST")
        return await _redeem(state, exchange, principal)
    if parts[:1] == ["admin"]:
        if principal.role != "admin":
            raise PermissionDenied("This needs an admin key.")
        return await _admin(state, exchange, parts[1:], principal)
    raise NotFound(f"No route for {method} {clip(exchange.path)}.")


async def _admin(
    state: AppState, exchange: Exchange, parts: list[str], principal: Principal
) -> None:
    method, store = exchange.method, state.billing_store
    if parts == ["users"]:
        _allow(method, "GET", "POST")
        if method == "GET":
            found = await _run(store.list_accounts)
            return await _json(exchange, {"data": [accounts.account_json(a) for a in found]})
        body = await _body(state, exchange)
        account = await _run(
            accounts.create_user,
            store,
            _text(body, "name"),
            balance=_text(body, "balance", "0"),
            admin=_admin_role(body),
        )
        return await _json(exchange, accounts.account_json(account), status=201)
    if len(parts) == 2 and parts[0] == "users":
        _allow(method, "GET")
        account = await _run(accounts.get_user, store, parts[1])
        return await _json(exchange, accounts.account_json(account))
    if len(parts) == 3 and parts[0] == "users" and parts[2] == "topup":
        _allow(method, "POST")
        body = await _body(state, exchange)
        account = await _run(
            accounts.top_up,
            store,
            parts[1],
            _text(body, "amount"),
            reason=_text(body, "reason", ""),
        )
        return await _json(exchange, accounts.account_json(account))
    if len(parts) == 3 and parts[0] == "users" and parts[2] == "ledger":
        _allow(method, "GET")
        account = await _run(accounts.get_user, store, parts[1])
        entries = await _run(store.ledger, account.id)
        return await _json(exchange, {"data": [_entry_json(e) for e in entries]})
    if parts == ["keys"]:
        _allow(method, "GET", "POST")
        if method == "GET":
            user = _query(exchange).get("user")
            account_id = None
            if user is not None:
                account_id = (await _run(accounts.get_user, store, user)).id
            grants = await _run(store.list_grants, account_id=account_id)
            return await _json(exchange, {"data": [accounts.grant_json(g) for g in grants]})
        return await _create_key(state, exchange)
    if len(parts) == 2 and parts[0] == "keys":
        _allow(method, "DELETE")
        if not _whole_number(parts[1], accounts.KEY_ID_MAX):
            raise InvalidRequest(
                f"a key is revoked by its numeric id, from 0 to {accounts.KEY_ID_MAX}", param="id"
            )
        revoked = await _run(revoke_key, state.store, parts[1])
        state.keys.forget(revoked.secret_hash)
        await state.key_events.publish(revoked.secret_hash)
        return await _json(exchange, {"id": revoked.id, "revoked": True})
    if parts == ["usage"]:
        _allow(method, "GET")
        query = _query(exchange)
        account_id = None
        if "user" in query:
            account_id = (await _run(accounts.get_user, store, query["user"])).id
        key_id = _int(query, "key", accounts.KEY_ID_MAX)
        return await _usage(state, exchange, account_id=account_id, key_id=key_id)
    if parts == ["codes"]:
        _allow(method, "GET", "POST")
        if method == "GET":
            found = await _run(store.list_codes, batch=_query(exchange).get("batch"))
            now = datetime.now(UTC)
            return await _json(exchange, {"data": [codes.code_json(c, now) for c in found]})
        return await _create_codes(state, exchange, principal)
    raise NotFound(f"No route for {method} {clip(exchange.path)}.")


async def _create_codes(state: AppState, exchange: Exchange, principal: Principal) -> None:
    body = await _body(state, exchange)
    count = _optional_int(body, "count")
    if count is None:
        raise InvalidRequest("count is required", param="count")
    batch = body.get("batch")
    if batch is not None and not isinstance(batch, str):
        raise InvalidRequest("batch must be a string", param="batch")
    created = await _run(
        codes.create_codes,
        state.billing_store,
        count,
        _text(body, "amount"),
        expires_at=_optional_time(body, "expires_at"),
        batch=batch,
        created_by=f"api key {principal.key_id}",
    )
    await _json(exchange, codes.created_json(created), status=201)


async def _redeem(state: AppState, exchange: Exchange, principal: Principal) -> None:
    body = await _body(state, exchange)
    redemption = await codes.redeem(
        state.billing_store, principal.account_id, _text(body, "code"), throttle=state.code_throttle
    )
    await _json(exchange, codes.redemption_json(redemption))


async def _create_key(state: AppState, exchange: Exchange) -> None:
    body = await _body(state, exchange)
    models = body.get("models")
    if models is not None and not (
        isinstance(models, list) and all(isinstance(m, str) for m in models)
    ):
        raise InvalidRequest("models must be a list of model ids", param="models")
    expires_at = _optional_time(body, "expires_at")
    limit = body.get("limit")
    record, secret = await _run(
        accounts.create_account_key,
        state.billing_store,
        _text(body, "name"),
        user=None if body.get("user") is None else _text(body, "user"),
        admin=_admin_role(body),
        rpm=_optional_int(body, "rpm"),
        tpm=_optional_int(body, "tpm"),
        limit=None if limit is None else str(limit),
        models=None if models is None else tuple(models),
        expires_at=expires_at,
        known_models=frozenset(card.id for card in state.catalog.models),
    )
    grants = await _run(state.billing_store.list_grants)
    grant = next(g for g in grants if g.key.id == record.id)
    await _json(exchange, {**accounts.grant_json(grant), "secret": secret}, status=201)


async def _generation(state: AppState, exchange: Exchange, principal: Principal) -> None:
    """One request's usage: by its response id (`?id=chatcmpl-…`, `msg_…`), or by the HTTP
    request's id (`?request_id=`: its X-Request-Id; the latest when a client reused one)."""
    query = _query(exchange)
    admin = principal.role == "admin"
    wanted = query.get("id", "")
    trace_id = query.get("request_id", "")
    if trace_id and not wanted:
        row = await _run(
            state.billing_store.usage_by_trace,
            trace_id,
            None if admin else principal.account_id,
        )
        if row is None:
            raise NotFound(f"no generation with request id {clip(trace_id)!r} for this account")
    else:
        request_id = wanted.removeprefix("chatcmpl-").removeprefix("msg_")
        if not request_id:
            raise InvalidRequest(
                "id is required: the id of a response (or request_id: its X-Request-Id)",
                param="id",
            )
        row = await _run(state.billing_store.get_usage, request_id)
        if row is None or (not admin and row.account_id != principal.account_id):
            raise NotFound(f"no generation {clip(wanted)!r} for this account")
    data = accounts.usage_json(row)
    if not admin:
        data["backend"] = None  # names an internal host and port
    await _json(exchange, {"data": data})


async def _usage(
    state: AppState, exchange: Exchange, *, account_id: int | None, key_id: int | None
) -> None:
    query = _query(exchange)
    by = query.get("by", "day")
    if by not in _GROUPS:
        raise InvalidRequest(f"by must be one of {', '.join(_GROUPS)}", param="by")
    totals = await _run(
        state.billing_store.usage_totals,
        by=cast(Literal["day", "model", "key"], by),
        account_id=account_id,
        key_id=key_id,
        since=_time(query, "since"),
        until=_time(query, "until"),
    )
    await _json(exchange, {"by": by, "data": [accounts.total_json(t) for t in totals]})


# ---------------------------------------------------------------------------- helpers


async def _run(function: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(function, *args, **kwargs)


async def _json(exchange: Exchange, body: Any, *, status: int = 200) -> None:
    await exchange.respond(status, msgspec.json.encode(body))


async def _body(state: AppState, exchange: Exchange) -> dict[str, Any]:
    body = decode_json(await exchange.body(state.settings.max_request_bytes), exact=True)
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


def _text(body: dict[str, Any], field: str, default: str | None = None) -> str:
    value = body.get(field, default)
    if value is None:
        raise InvalidRequest(f"{field} is required", param=field)
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return str(value)  # an amount given as a JSON number (read exactly)
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a string", param=field)
    return value


def _admin_role(body: dict[str, Any]) -> bool:
    """Whether `role` asks for an admin; absent means a user."""
    role = body.get("role", "user")
    if role not in ("admin", "user"):
        raise InvalidRequest('role must be "admin" or "user"', param="role")
    return bool(role == "admin")


def _optional_int(body: dict[str, Any], field: str) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"{field} must be an integer", param=field)
    if not -INT64_MAX <= value <= INT64_MAX:
        raise InvalidRequest(f"{field} is out of range", param=field)
    return value


def _optional_time(body: dict[str, Any], field: str) -> datetime | None:
    """An optional ISO 8601 time of a body, in UTC (a naive one as it is, for the service to
    judge)."""
    value = body.get(field)
    if value is None:
        return None
    try:
        return _in_utc(datetime.fromisoformat(str(value)), field)
    except ValueError:
        raise InvalidRequest(f"{field} must be an ISO 8601 time", param=field) from None


def _query(exchange: Exchange) -> dict[str, str]:
    return {name: values[-1] for name, values in parse_qs(exchange.query).items()}


def _int(query: dict[str, str], field: str, high: int) -> int | None:
    value = query.get(field)
    if value is None:
        return None
    if not _whole_number(value, high):
        raise InvalidRequest(f"{field} must be a whole number from 0 to {high}", param=field)
    return int(value)


def _whole_number(text: str, high: int) -> bool:
    """Digits only (ASCII: "²" is a digit to `str.isdigit`) and at most `high`; the length is
    checked first, so a 100,000-digit value costs nothing to refuse."""
    digits = len(str(high))
    return text.isascii() and text.isdigit() and len(text) <= digits and int(text) <= high


def _time(query: dict[str, str], field: str) -> datetime | None:
    value = query.get(field)
    return None if value is None else _in_utc(accounts.parse_time(value, field), field)


def _in_utc(moment: datetime, field: str) -> datetime:
    """`moment` in UTC, as the store keeps times (a naive one as it is, for the service to
    judge); a 400 for one that has no UTC time (9999-12-31T23:59-14:00 is past the last)."""
    if moment.tzinfo is None:
        return moment
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest(f"{field} is out of range", param=field) from None


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise MethodNotAllowed(f"{method} is not allowed here; use {', '.join(allowed)}.")


def _entry_json(entry: Any) -> dict[str, Any]:
    return {
        "id": entry.id,
        "amount": accounts.cny(entry.amount_nano),
        "amount_nano": entry.amount_nano,
        "kind": entry.kind,
        "request_id": entry.request_id,
        "reason": entry.reason,
        "created_at": entry.created_at.isoformat(),
    }
