"""The console's first pages: sign-up, log-in, log-out, the dashboard and the user's API keys
(services/console.py holds the accounts logic; web/templates/console_*.html the pages).

Forms post `application/x-www-form-urlencoded` bodies and work without JavaScript. Every form
carries a CSRF token: the session's for a logged-in user, else a random one that must match the
`mp_csrf` cookie (sign-up and log-in). The session cookie `mp_session` is HttpOnly,
SameSite=Lax and Secure when the public URL is https; the API never reads it (it takes keys).
A page answers a refused form with the form again and the reason, not JSON.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from markupsafe import Markup

from modelport.core.catalog import OpenAICompatBackend
from modelport.core.errors import (
    InvalidRequest,
    ModelportError,
    NotFound,
    PermissionDenied,
    clip,
)
from modelport.http.client_address import ClientAddresses
from modelport.http.exchange import Exchange, collect_whole
from modelport.http.state import AppState
from modelport.protocols.openai.decode import decode_chat_request
from modelport.services import accounts, codes
from modelport.services.console import MAX_PASSWORD, ConsoleAccounts, Session
from modelport.services.keys import revoke_key
from modelport.web import charts, i18n
from modelport.web.site import HTML

PREFIX = "/console"
SESSION_COOKIE = "mp_session"
CSRF_COOKIE = "mp_csrf"
MAX_FORM_BYTES = 16 * 1024
NO_STORE = ("cache-control", "no-store")


def _cookie(state: AppState, name: str, value: str, max_age: int) -> str:
    secure = "; Secure" if (state.settings.public_url or "").startswith("https://") else ""
    return f"{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"


def _lang(exchange: Exchange) -> i18n.Lang:
    cookie = exchange.header("cookie")
    return i18n.choose(None, i18n.cookie_value(cookie), exchange.header("accept-language"))


async def current_session(state: AppState, exchange: Exchange) -> Session | None:
    token = i18n.cookie_value(exchange.header("cookie"), SESSION_COOKIE)
    return await state.console.session(token)


def _query(exchange: Exchange, limit: int = 1024) -> dict[str, str]:
    """The first value of each field of the address's query (at most `limit` characters)."""
    return {name: values[0] for name, values in parse_qs(exchange.query[:limit]).items()}


async def _form(exchange: Exchange) -> dict[str, str]:
    body = await exchange.body(MAX_FORM_BYTES)
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in fields.items()}


async def _page(
    state: AppState,
    exchange: Exchange,
    template: str,
    *,
    status: int = 200,
    headers: tuple[tuple[str, str], ...] = (),
    **values: Any,
) -> None:
    lang = _lang(exchange)
    body = state.site.render(template, lang, **values).encode()
    await exchange.respond(status, body, HTML, (NO_STORE, *headers))


async def _redirect(exchange: Exchange, to: str, *headers: tuple[str, str]) -> None:
    await exchange.respond(303, b"", HTML, (("location", to), NO_STORE, *headers))


def _next(value: str | None) -> str:
    """Where to go after logging in: a path of this site only (no open redirect)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value[:200]
    return PREFIX


async def _checked_form(
    state: AppState, exchange: Exchange, session: Session
) -> dict[str, str] | None:
    """A logged-in form's fields, or None after answering 403 when its CSRF token is not the
    session's."""
    form = await _form(exchange)
    if ConsoleAccounts.csrf_ok(session, form.get("csrf")):
        return form
    await _page(state, exchange, "console_error.html", status=403, reason="csrf")
    return None


# ---------------------------------------------------------------------------- sign-up, log-in


async def signup(state: AppState, exchange: Exchange) -> None:
    await _credentials_form(state, exchange, "signup")


async def login(state: AppState, exchange: Exchange) -> None:
    await _credentials_form(state, exchange, "login")


async def _credentials_form(state: AppState, exchange: Exchange, kind: str) -> None:
    console: ConsoleAccounts = state.console
    query = parse_qs(exchange.query[:1024])
    nexts = query.get("next")
    target = _next(nexts[0] if nexts else None)
    if exchange.method == "GET":
        csrf = secrets.token_urlsafe(24)
        await _page(
            state,
            exchange,
            "console_credentials.html",
            headers=(("set-cookie", _cookie(state, CSRF_COOKIE, csrf, 3600)),),
            kind=kind,
            csrf=csrf,
            error=None,
            username="",
            next=target,
            policy=console.policy,
        )
        return
    form = await _form(exchange)
    target = _next(form.get("next") or target)
    cookie_csrf = i18n.cookie_value(exchange.header("cookie"), CSRF_COOKIE)
    username = form.get("username", "")[:64]
    csrf = cookie_csrf or secrets.token_urlsafe(24)

    async def again(status: int, error: str) -> None:
        await _page(
            state,
            exchange,
            "console_credentials.html",
            status=status,
            headers=(("set-cookie", _cookie(state, CSRF_COOKIE, csrf, 3600)),),
            kind=kind,
            csrf=csrf,
            error=error,
            username=username,
            next=target,
            policy=console.policy,
        )

    if not cookie_csrf or not secrets.compare_digest(cookie_csrf, form.get("csrf", "")):
        await again(403, "csrf")
        return
    address = ClientAddresses(state.settings.trusted_proxies).of(exchange)
    password = form.get("password", "")[: MAX_PASSWORD + 1]
    try:
        if kind == "signup":
            session = await console.signup(
                username, password, address=address, code=form.get("code", "")[:64]
            )
        else:
            old = i18n.cookie_value(exchange.header("cookie"), SESSION_COOKIE)
            session = await console.login(username, password, address=address, replacing=old)
    except ModelportError as error:
        await again(error.status, error.message)
        return
    max_age = int((session.expires_at - datetime.now(session.expires_at.tzinfo)).total_seconds())
    await _redirect(
        exchange,
        target,
        ("set-cookie", _cookie(state, SESSION_COOKIE, session.token, max_age)),
        ("set-cookie", _cookie(state, CSRF_COOKIE, "", 0)),
    )


async def logout(state: AppState, exchange: Exchange) -> None:
    session = await current_session(state, exchange)
    if session is None:
        await _redirect(exchange, PREFIX + "/login")
        return
    if await _checked_form(state, exchange, session) is None:
        return
    token = i18n.cookie_value(exchange.header("cookie"), SESSION_COOKIE) or ""
    await state.console.logout(token)
    await _redirect(exchange, "/", ("set-cookie", _cookie(state, SESSION_COOKIE, "", 0)))


# ---------------------------------------------------------------------------- logged-in pages


async def _required(state: AppState, exchange: Exchange) -> Session | None:
    """The session, or None after redirecting to the log-in page."""
    session = await current_session(state, exchange)
    if session is None:
        await _redirect(exchange, f"{PREFIX}/login?next={quote(exchange.path)}")
    return session


async def dashboard(state: AppState, exchange: Exchange) -> None:
    session = await _required(state, exchange)
    if session is None:
        return
    account = session.account
    now = datetime.now(account.created_at.tzinfo)
    spend: dict[str, tuple[int, int, int]] = {}
    for label, days in (("today", 1), ("week", 7), ("month", 30)):
        since = (
            now - timedelta(days=days)
            if days > 1
            else now.replace(hour=0, minute=0, second=0, microsecond=0)
        )
        totals = await _thread(
            state.store.usage_totals, by="model", account_id=account.id, since=since
        )
        spend[label] = (
            sum(t.cost_nano for t in totals),
            sum(t.requests for t in totals),
            sum(t.prompt_tokens + t.completion_tokens for t in totals),
        )
    await _page(
        state,
        exchange,
        "console_home.html",
        session=session,
        balance=accounts.cny(account.balance_nano),
        spend={label: (accounts.cny(c), r, t) for label, (c, r, t) in spend.items()},
    )


async def keys(state: AppState, exchange: Exchange) -> None:
    session = await _required(state, exchange)
    if session is None:
        return
    account = session.account
    created: tuple[Any, str] | None = None
    error = None
    status = 200
    if exchange.method == "POST":
        form = await _checked_form(state, exchange, session)
        if form is None:
            return
        try:
            expires = form.get("expires_at", "").strip()
            rates: dict[str, int | None] = {}
            for field in ("rpm", "tpm"):
                text = form.get(field, "").strip()
                if text and (not text.isdigit() or len(text) > 12):
                    raise InvalidRequest(f"{field} must be a whole number", param=field)
                rates[field] = int(text) if text else None
            created = await _thread(
                accounts.create_account_key,
                state.store,
                form.get("name", ""),
                user=account.name,
                rpm=rates["rpm"],
                tpm=rates["tpm"],
                limit=form.get("limit", "").strip() or None,
                models=tuple(form.get("models", "").split(",")) if form.get("models") else None,
                expires_at=accounts.parse_time(expires, "expires_at") if expires else None,
                known_models=frozenset(card.id for card in state.catalog.models),
            )
            status = 201
        except ModelportError as refused:
            error, status = refused.message, refused.status
    grants = await _thread(state.store.list_grants, account_id=account.id)
    await _page(
        state,
        exchange,
        "console_keys.html",
        status=status,
        session=session,
        grants=[accounts.grant_json(grant) for grant in reversed(grants)],
        created=created,
        error=error,
        models=[card.id for card in state.site.models],
    )


async def revoke(state: AppState, exchange: Exchange, key_id: str) -> None:
    session = await _required(state, exchange)
    if session is None:
        return
    form = await _checked_form(state, exchange, session)
    if form is None:
        return
    grants = await _thread(state.store.list_grants, account_id=session.account.id)
    mine = {str(grant.key.id): grant for grant in grants}
    if key_id not in mine:  # another user's key, or none: the same answer
        raise NotFound(f"You have no key with id {clip(key_id, 20)}.")
    revoked = await _thread(revoke_key, state.store, key_id)
    state.keys.forget(revoked.secret_hash)
    await state.key_events.publish(revoked.secret_hash)
    await _redirect(exchange, PREFIX + "/keys")


# The playground's sampling inputs: numbers of the OpenAI door's request, shown with the
# ranges and this model's defaults from the parameter reference (web/params.py).
PLAYGROUND_NUMBERS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "max_tokens",
    "seed",
)
EFFORTS = ("", "none", "minimal", "low", "medium", "high")


async def playground(state: AppState, exchange: Exchange) -> None:
    """Try a model: with JavaScript the browser calls the API itself with one of the user's
    keys (kept in the tab's sessionStorage, never sent to the console) and streams the answer,
    reasoning apart; without it the form posts here and the answer comes back whole, billed
    to the same key like any API call."""
    session = await _required(state, exchange)
    if session is None:
        return
    models = state.site.models
    query = _query(exchange, 1024)
    form: dict[str, str] = {}
    answer: dict[str, Any] | None = None
    error = None
    status = 200
    if exchange.method == "POST":
        posted = await _checked_form(state, exchange, session)
        if posted is None:
            return
        form = posted
        try:
            answer = await _play(state, session, form, exchange)
            if answer is None:  # the browser went away: the generation was stopped
                return
        except ModelportError as refused:
            error, status = refused.message, refused.status
    chosen = form.get("model") or query.get("model") or ""
    card = state.catalog.get(chosen) if chosen else None
    if card is None or card.hidden:
        card = next((m for m in models if m.id == "qwen/qwen3-8b"), models[0])
    params = {p.name: p for p in state.site.parameter_reference(card.id)}
    await _page(
        state,
        exchange,
        "console_playground.html",
        status=status,
        session=session,
        models=models,
        card=card,
        numbers=[params[name] for name in PLAYGROUND_NUMBERS if name in params],
        efforts=EFFORTS,
        form=form,
        answer=answer,
        error=error,
    )


async def _play(
    state: AppState, session: Session, form: dict[str, str], exchange: Exchange
) -> dict[str, Any] | None:
    """The no-JavaScript playground: the form's request through the OpenAI door's decoder and
    the metering stage, with the user's own key."""
    principal = await state.keys.authenticate(form.get("key", "").strip())
    if principal.account_id != session.account.id:
        raise PermissionDenied("Use one of your own keys.", param="key")
    messages = []
    if form.get("system", "").strip():
        messages.append({"role": "system", "content": form["system"]})
    messages.append({"role": "user", "content": form.get("message", "")})
    body: dict[str, Any] = {"model": form.get("model", ""), "messages": messages}
    for name in PLAYGROUND_NUMBERS:
        text = form.get(name, "").strip()
        if text:
            try:
                body[name] = int(text) if name in ("top_k", "max_tokens", "seed") else float(text)
            except ValueError:
                raise InvalidRequest(f"{name} must be a number", param=name) from None
    if form.get("reasoning_effort") in EFFORTS[1:]:
        body["reasoning_effort"] = form["reasoning_effort"]
    chat, _ = decode_chat_request(json.dumps(body).encode())
    generation = await state.metering.start(principal, chat, incremental=False)
    completion = await collect_whole(generation.in_batches(), exchange.disconnected)
    if completion is None:
        return None
    usage = completion.usage
    return {
        "text": completion.text or "",
        "reasoning": completion.reasoning or "",
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "cost": accounts.cny(usage.cost_nano or 0),
        "finish_reason": completion.finish_reason,
    }


async def admin_users(state: AppState, exchange: Exchange) -> None:
    """Admins only (anyone else gets the 404 of a page that does not exist): every user with
    their balance, a search, and per user a top-up (amount and reason) and disable/enable. A
    disabled user's keys stop working at once in this process (the key cache is dropped; other
    replicas drop theirs on the key-change event) and their sessions end."""
    session = await _admin(state, exchange)
    if session is None:
        return
    message = error = None
    status = 200
    if exchange.method == "POST":
        form = await _checked_form(state, exchange, session)
        if form is None:
            return
        name, action = form.get("name", ""), form.get("action", "")
        try:
            if action == "topup":
                done = await _thread(
                    accounts.top_up,
                    state.store,
                    name,
                    form.get("amount", "").strip(),
                    reason=form.get("reason", ""),
                )
                message = f"{done.name}: ¥{accounts.cny(done.balance_nano)}"
            elif action in ("disable", "enable"):
                done = await _thread(accounts.set_disabled, state.store, name, action == "disable")
                if done.disabled_at is not None:
                    await _thread(state.store.revoke_sessions, done.id, done.disabled_at)
                state.keys.forget("*")
                await state.key_events.publish("*")
                message = f"{done.name}: {action}d"
            else:
                raise InvalidRequest("action must be topup, disable or enable", param="action")
        except ModelportError as refused:
            error, status = refused.message, refused.status
    query = _query(exchange, 512)
    search = query.get("q", "").strip().lower()[:100]
    users = await _thread(state.store.list_accounts)
    shown = [u for u in users if search in u.name.lower()] if search else users
    await _page(
        state,
        exchange,
        "console_admin_users.html",
        status=status,
        session=session,
        users=shown[:500],
        total=len(users),
        search=search,
        cny=accounts.cny,
        message=message,
        error=error,
    )


async def _admin(state: AppState, exchange: Exchange) -> Session | None:
    """The session of an admin, or None (after redirecting to the log-in page); anyone else
    gets the 404 of a page that does not exist."""
    session = await _required(state, exchange)
    if session is not None and session.account.role != "admin":
        raise NotFound(f"No route for {exchange.method} {exchange.path}.")
    return session


async def admin_models(state: AppState, exchange: Exchange) -> None:
    """Admins: every model with its backends (kind and host, never a key), whether it is
    configured, its requests in flight in this process, and the last hour's requests, errors,
    median latency and time to first token from the usage rows."""
    session = await _admin(state, exchange)
    if session is None:
        return
    since = datetime.now(session.account.created_at.tzinfo) - timedelta(hours=1)
    activity = {a.model: a for a in await _thread(state.store.model_activity, since)}
    rows = []
    for card in state.catalog.models:
        backends = []
        for backend in card.backends:
            if isinstance(backend, OpenAICompatBackend):
                backends.append(f"openai_compat: {urlsplit(backend.url).netloc}")
            else:
                backends.append(f"llamacpp: {backend.path.rsplit('/', 1)[-1]}")
        rows.append(
            {
                "card": card,
                "backends": backends,
                "in_flight": state.metering.in_flight.get(card.id, 0),
                "hour": activity.get(card.id),
            }
        )
    await _page(state, exchange, "console_admin_models.html", session=session, rows=rows)


async def admin_codes(state: AppState, exchange: Exchange) -> None:
    """Admins: make a batch of top-up codes (shown once, here) and list the batches' codes
    by state (never the codes themselves, which are not stored)."""
    session = await _admin(state, exchange)
    if session is None:
        return
    created: list[tuple[Any, str]] = []
    error = None
    status = 200
    if exchange.method == "POST":
        form = await _checked_form(state, exchange, session)
        if form is None:
            return
        try:
            count = form.get("count", "").strip()
            if not count.isdigit() or len(count) > 5:
                raise InvalidRequest("count must be a whole number", param="count")
            expires = form.get("expires_at", "").strip()
            created = await _thread(
                codes.create_codes,
                state.store,
                int(count),
                form.get("amount", "").strip(),
                expires_at=accounts.parse_time(expires, "expires_at") if expires else None,
                batch=form.get("batch") or None,
                created_by=f"console {session.account.name}",
            )
            status = 201
        except ModelportError as refused:
            error, status = refused.message, refused.status
    now = datetime.now(session.account.created_at.tzinfo)
    listed = await _thread(state.store.list_codes)
    await _page(
        state,
        exchange,
        "console_admin_codes.html",
        status=status,
        session=session,
        created=[secret for _, secret in created],
        codes=[codes.code_json(record, now) for record in reversed(listed[-500:])],
        error=error,
    )


async def admin_keys(state: AppState, exchange: Exchange) -> None:
    """Admins: every key of every user, newest first."""
    session = await _admin(state, exchange)
    if session is None:
        return
    grants = await _thread(state.store.list_grants)
    await _page(
        state,
        exchange,
        "console_admin_keys.html",
        session=session,
        grants=[accounts.grant_json(grant) for grant in reversed(grants[-1000:])],
    )


LEDGER_PAGE = 50


async def billing(state: AppState, exchange: Exchange) -> None:
    """The account's ledger (top-ups, charges, adjustments), newest first, a page at a time
    (`?before=ID`), and a form to redeem a top-up code."""
    session = await _required(state, exchange)
    if session is None:
        return
    account = session.account
    message = error = None
    status = 200
    if exchange.method == "POST":
        form = await _checked_form(state, exchange, session)
        if form is None:
            return
        try:
            redemption = await codes.redeem(
                state.billing_store,
                account.id,
                form.get("code", ""),
                throttle=state.code_throttle,
            )
        except ModelportError as refused:
            error, status = refused.message, refused.status
        else:
            account = redemption.account
            message = accounts.cny(redemption.code.amount_nano)
    query = _query(exchange, 256)
    before = query.get("before", "")
    before_id = int(before) if before.isdigit() and len(before) < 19 else None
    entries = await _thread(
        state.store.ledger_page, account.id, limit=LEDGER_PAGE + 1, before_id=before_id
    )
    older = entries[LEDGER_PAGE - 1].id if len(entries) > LEDGER_PAGE else None
    await _page(
        state,
        exchange,
        "console_billing.html",
        status=status,
        session=session,
        balance=accounts.cny(account.balance_nano),
        entries=entries[:LEDGER_PAGE],
        older=older,
        newest=before_id is None,
        cny=accounts.cny,
        redeemed=message,
        error=error,
    )


USAGE_DAYS = (7, 30, 90)


async def usage(state: AppState, exchange: Exchange, *, csv: bool = False) -> None:
    """The account's usage over the last 7, 30 or 90 days, by day (with a chart of the spend),
    by model and by key; one key only with `key=ID`. `/console/usage.csv?by=day|model|key`
    exports the same totals."""
    session = await _required(state, exchange)
    if session is None:
        return
    account = session.account
    query = _query(exchange, 1024)
    days = int(query["days"]) if query.get("days") in {str(d) for d in USAGE_DAYS} else 30
    grants = await _thread(state.store.list_grants, account_id=account.id)
    names = {str(grant.key.id): grant.key.name for grant in grants}
    key = query.get("key") if query.get("key") in names else None
    key_id = int(key) if key is not None else None
    now = datetime.now(account.created_at.tzinfo)
    since = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    totals = {
        by: await _thread(
            state.store.usage_totals,
            by=by,
            account_id=account.id,
            key_id=key_id if by != "key" else None,
            since=since,
        )
        for by in ("day", "model", "key")
    }
    if csv:
        by = query.get("by") or "day"
        by = by if by in totals else "day"
        lines = ["group,requests,prompt_tokens,completion_tokens,reasoning_tokens,cost_cny"]
        for total in totals[by]:
            group = names.get(total.group, total.group) if by == "key" else total.group
            lines.append(
                ",".join(
                    [
                        _csv_field(group),
                        str(total.requests),
                        str(total.prompt_tokens),
                        str(total.completion_tokens),
                        str(total.reasoning_tokens),
                        accounts.cny(total.cost_nano),
                    ]
                )
            )
        filename = f"modelport-usage-{by}-{days}d.csv"
        await exchange.respond(
            200,
            ("\r\n".join(lines) + "\r\n").encode(),
            "text/csv; charset=utf-8",
            (NO_STORE, ("content-disposition", f'attachment; filename="{filename}"')),
        )
        return
    by_day = {total.group: total for total in totals["day"]}
    day_list = [(since + timedelta(days=offset)).date().isoformat() for offset in range(days)]
    lang = _lang(exchange)
    chart = charts.bars(
        [(day[5:], by_day[day].cost_nano / 1e9 if day in by_day else 0.0) for day in day_list],
        title=i18n.TEXT[lang]["usage_chart"],
        value_text=lambda value: f"¥{value:.4g}",
        chart_id="spend-chart",
    )
    tokens_chart = charts.bars(
        [
            (total.group.rsplit("/", 1)[-1], float(total.prompt_tokens + total.completion_tokens))
            for total in totals["model"]
        ],
        title=i18n.TEXT[lang]["tokens_chart"],
        value_text=lambda value: f"{value:,.0f}",
        chart_id="tokens-chart",
    )
    # The rows themselves, newest first, a page at a time; one model and one key if asked.
    models = sorted(card.id for card in state.catalog.models)
    model = query.get("model") if query.get("model") in models else None
    cursor = _cursor(query.get("after", ""))
    # One day of the period, when asked (`day=YYYY-MM-DD`): the requests of that day only.
    day = query.get("day", "")
    day_since, day_until = since, None
    if day in {(since + timedelta(days=offset)).date().isoformat() for offset in range(days)}:
        day_since = datetime.fromisoformat(day).replace(tzinfo=since.tzinfo)
        day_until = day_since + timedelta(days=1)
    else:
        day = ""
    listed = await _thread(
        state.store.usage_page,
        account.id,
        since=day_since,
        until=day_until,
        model=model,
        key_id=key_id,
        limit=USAGE_PAGE + 1,
        before=cursor,
    )
    last = listed[USAGE_PAGE - 1] if len(listed) > USAGE_PAGE else None
    more = None
    if last is not None:
        more = urlencode(
            [
                *((name, value) for name, value in query.items() if name != "after"),
                ("after", f"{last.created_at.isoformat()}~{last.request_id}"),
            ]
        )
    await _page(
        state,
        exchange,
        "console_usage.html",
        session=session,
        days=days,
        day_choices=USAGE_DAYS,
        key=key,
        keys=names,
        model=model,
        models=models,
        day=day,
        day_list=list(reversed(day_list)),
        rows=listed[:USAGE_PAGE],
        more=more,
        first_page=cursor is None,
        tokens_chart=Markup(tokens_chart),
        chart=Markup(chart),
        by_day=[by_day[day] for day in reversed(day_list) if day in by_day],
        by_model=totals["model"],
        by_key=totals["key"],
        cny=accounts.cny,
        lambda_identity=lambda group: group,
        key_name=lambda group: names.get(group, group),
    )


USAGE_PAGE = 50


def _cursor(value: str) -> tuple[datetime, str] | None:
    """`after=ISO~REQUEST_ID` of the usage listing's next page, or None."""
    at, _, request_id = value[:200].partition("~")
    if not request_id:
        return None
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        return None
    return (moment, request_id) if moment.tzinfo is not None else None


def _csv_field(value: str) -> str:
    """A CSV field, quoted when needed, never read as a formula by a spreadsheet."""
    if value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        value = "'" + value
    if any(c in value for c in ',"\r\n'):
        value = '"' + value.replace('"', '""') + '"'
    return value


async def _thread(function: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(function, *args, **kwargs)


async def route(state: AppState, exchange: Exchange) -> bool:
    """Serve a console path; False when it is none of them."""
    path, method = exchange.path, exchange.method
    if path in (PREFIX, PREFIX + "/") and method == "GET":
        await dashboard(state, exchange)
    elif path == PREFIX + "/signup" and method in ("GET", "POST"):
        await signup(state, exchange)
    elif path == PREFIX + "/login" and method in ("GET", "POST"):
        await login(state, exchange)
    elif path == PREFIX + "/logout" and method == "POST":
        await logout(state, exchange)
    elif path == PREFIX + "/usage" and method == "GET":
        await usage(state, exchange)
    elif path == PREFIX + "/usage.csv" and method == "GET":
        await usage(state, exchange, csv=True)
    elif path == PREFIX + "/admin/users" and method in ("GET", "POST"):
        await admin_users(state, exchange)
    elif path == PREFIX + "/admin/models" and method == "GET":
        await admin_models(state, exchange)
    elif path == PREFIX + "/admin/codes" and method in ("GET", "POST"):
        await admin_codes(state, exchange)
    elif path == PREFIX + "/admin/keys" and method == "GET":
        await admin_keys(state, exchange)
    elif path == PREFIX + "/billing" and method in ("GET", "POST"):
        await billing(state, exchange)
    elif path == PREFIX + "/playground" and method in ("GET", "POST"):
        await playground(state, exchange)
    elif path == PREFIX + "/keys" and method in ("GET", "POST"):
        await keys(state, exchange)
    elif path.startswith(PREFIX + "/keys/") and path.endswith("/revoke") and method == "POST":
        await revoke(state, exchange, path[len(PREFIX + "/keys/") : -len("/revoke")])
    else:
        return False
    return True
