"""The console's first pages over HTTP, as a browser drives them: sign up, get a key, call the
API with it (OpenAI SDK), revoke it; CSRF on every form; log-in refused and throttled; one
user never sees or touches another's keys; the sign-up policy and the starting credit."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest
from tests.e2e.server import RunningServer

LOCAL = "local/smollm2-135m-instruct"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data = tmp_path_factory.mktemp("console")
    with RunningServer(data, env={"MODELPORT_SIGNUP_CREDIT": "3"}) as running:
        yield running


_OPENED: list[openai.OpenAI] = []


def api_for(server: RunningServer, secret: str) -> openai.OpenAI:
    """An OpenAI SDK client with `secret`, closed after the test."""
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=secret, max_retries=0)
    _OPENED.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPENED:
        _OPENED.pop().close()


def browser(server: RunningServer) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=60, follow_redirects=False)


def form_csrf(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match is not None, page[:500]
    return match.group(1)


def sign_up(client: httpx.Client, username: str, password: str = PASSWORD) -> httpx.Response:
    page = client.get("/console/signup")
    assert page.status_code == 200
    return client.post(
        "/console/signup",
        data={"username": username, "password": password, "csrf": form_csrf(page.text)},
    )


def create_key(client: httpx.Client, name: str) -> str:
    page = client.get("/console/keys")
    created = client.post("/console/keys", data={"name": name, "csrf": form_csrf(page.text)})
    assert created.status_code == 201, created.text[:500]
    secret = re.search(r'<code id="new-key-secret">([^<]+)</code>', created.text)
    assert secret is not None
    return secret.group(1)


def test_sign_up_get_a_key_and_call_the_api_with_it(server: RunningServer) -> None:
    with browser(server) as client:
        signed = sign_up(client, "alice")
        assert signed.status_code == 303 and signed.headers["location"] == "/console"
        cookie = next(
            c for c in signed.headers.get_list("set-cookie") if c.startswith("mp_session=")
        )
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
        home = client.get("/console")
        assert home.status_code == 200 and "alice" in home.text
        assert '<dd id="balance">¥3</dd>' in home.text  # the starting credit
        assert home.headers["cache-control"] == "no-store"
        # /get-apikey leads a logged-in user to the keys page.
        assert client.get("/get-apikey").headers["location"] == "/console/keys"
        secret = create_key(client, "laptop")
        assert secret.startswith("sk-mp-")
        listed = client.get("/console/keys").text
        assert "laptop" in listed and secret not in listed  # the secret is shown once
        limited = client.post(
            "/console/keys",
            data={"name": "slow", "rpm": "2", "limit": "0.5", "csrf": form_csrf(listed)},
        )
        assert limited.status_code == 201
        bad = client.post(
            "/console/keys", data={"name": "bad", "rpm": "many", "csrf": form_csrf(listed)}
        )
        assert bad.status_code == 400 and "rpm" in bad.text
    api = api_for(server, secret)
    answer = api.chat.completions.create(
        model=LOCAL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=8
    )
    assert answer.choices[0].message.content is not None
    # The session cookie is not an API credential.
    with browser(server) as client:
        sign_up(client, "alice2")
        refused = client.post(
            "/v1/chat/completions",
            json={"model": LOCAL, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert refused.status_code == 401


def test_a_revoked_key_stops_working_and_only_its_owner_can_revoke_it(
    server: RunningServer,
) -> None:
    with browser(server) as bob, browser(server) as mallory:
        sign_up(bob, "bob")
        secret = create_key(bob, "ci")
        key_id = re.search(r'<tr data-key-id="(\d+)">', bob.get("/console/keys").text)
        assert key_id is not None
        sign_up(mallory, "mallory")
        page = mallory.get("/console/keys")
        assert "ci" not in re.findall(r'<th scope="row">([^<]+)</th>', page.text)
        stolen = mallory.post(
            f"/console/keys/{key_id.group(1)}/revoke", data={"csrf": form_csrf(page.text)}
        )
        assert stolen.status_code == 404
        api = api_for(server, secret)
        ask = {"model": LOCAL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        api.chat.completions.create(**ask)  # type: ignore[call-overload]  # still works
        page = bob.get("/console/keys")
        revoked = bob.post(
            f"/console/keys/{key_id.group(1)}/revoke", data={"csrf": form_csrf(page.text)}
        )
        assert revoked.status_code == 303
        with pytest.raises(openai.AuthenticationError):
            api.chat.completions.create(**ask)  # type: ignore[call-overload]


def test_every_form_refuses_a_post_without_its_csrf_token(server: RunningServer) -> None:
    with browser(server) as client:
        client.get("/console/signup")
        missing = client.post("/console/signup", data={"username": "eve", "password": PASSWORD})
        assert missing.status_code == 403 and "mp_session" not in str(missing.headers)
        sign_up(client, "carol")
        for path, data in (
            ("/console/keys", {"name": "x"}),
            ("/console/logout", {}),
            ("/console/keys/1/revoke", {}),
            ("/console/billing", {"code": "MPC-AAAA-AAAA-AAAA-AAAA"}),
            ("/console/playground", {"key": "sk-mp-x", "model": LOCAL, "message": "hi"}),
        ):
            for csrf in (None, "forged"):
                body = dict(data, **({"csrf": csrf} if csrf else {}))
                assert client.post(path, data=body).status_code == 403, (path, csrf)
        assert client.get("/console").status_code == 200  # still logged in
    # The admin's forms too.
    admin = admin_browser(server)
    with contextlib.closing(admin):
        for path, data in (
            ("/console/admin/users", {"name": "carol", "action": "disable"}),
            ("/console/admin/codes", {"count": "1", "amount": "1"}),
        ):
            for csrf in (None, "forged"):
                body = dict(data, **({"csrf": csrf} if csrf else {}))
                assert admin.post(path, data=body).status_code == 403, (path, csrf)
        users = admin.get("/console/admin/users").text
        carol = users[users.index('<tr data-user="carol">') :]
        assert carol[: carol.index("</tr>")].count(">Active<") == 1  # not disabled
    # A cross-site form has no mp_csrf cookie to match.
    with browser(server) as other:
        page = other.get("/console/login")
        token = form_csrf(page.text)
        other.cookies.clear()
        assert (
            other.post(
                "/console/login", data={"username": "carol", "password": PASSWORD, "csrf": token}
            ).status_code
            == 403
        )


def test_wrong_passwords_are_refused_then_throttled_and_log_out_ends_the_session(
    server: RunningServer,
) -> None:
    with browser(server) as client:
        sign_up(client, "dave")
        logout_page = client.get("/console")
        out = client.post("/console/logout", data={"csrf": form_csrf(logout_page.text)})
        assert out.status_code == 303
        assert client.get("/console").headers["location"].startswith("/console/login")
        statuses = []
        for _ in range(6):
            page = client.get("/console/login")
            wrong = client.post(
                "/console/login",
                data={
                    "username": "dave",
                    "password": "not it at all",
                    "csrf": form_csrf(page.text),
                },
            )
            statuses.append(wrong.status_code)
            assert "Wrong username or password." in wrong.text or wrong.status_code == 429
        assert statuses[:5] == [401] * 5 and statuses[5] == 429
        page = client.get("/console/login")
        still = client.post(
            "/console/login",
            data={"username": "dave", "password": PASSWORD, "csrf": form_csrf(page.text)},
        )
        assert still.status_code == 429  # throttled even with the right password


def test_log_in_returns_to_where_it_was_asked_from_and_never_off_site(
    server: RunningServer,
) -> None:
    with browser(server) as client:
        sign_up(client, "erin")
        client.cookies.clear()
        assert (
            client.get("/console/keys").headers["location"] == "/console/login?next=/console/keys"
        )
        for asked, expected in (
            ("/console/keys", "/console/keys"),
            ("//evil.example/", "/console"),
            ("https://evil.example/", "/console"),
        ):
            page = client.get("/console/login", params={"next": asked})
            done = client.post(
                "/console/login",
                data={
                    "username": "erin",
                    "password": PASSWORD,
                    "csrf": form_csrf(page.text),
                    "next": asked,
                },
            )
            assert done.status_code == 303 and done.headers["location"] == expected


def test_a_closed_sign_up_refuses_new_accounts(tmp_path: Path) -> None:
    closed = RunningServer(tmp_path / "closed", env={"MODELPORT_SIGNUP": "closed"})
    with closed, browser(closed) as client:
        page = client.get("/console/signup")
        assert 'id="signup-closed"' in page.text
        client.cookies.set("mp_csrf", "x")
        refused = client.post(
            "/console/signup", data={"username": "zed", "password": PASSWORD, "csrf": "x"}
        )
        assert refused.status_code == 403
        assert "mp_session" not in str(refused.headers)


def test_the_usage_page_shows_the_calls_by_day_model_and_key_with_a_chart_and_csv(
    server: RunningServer,
) -> None:
    with browser(server) as client:
        sign_up(client, "frank")
        empty = client.get("/console/usage")
        assert empty.status_code == 200 and 'id="spend-chart"' in empty.text
        secret = create_key(client, "notebook")
        api = api_for(server, secret)
        for _ in range(2):
            api.chat.completions.create(
                model=LOCAL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=8
            )
        time.sleep(0.5)  # the usage rows are written just behind the answers
        page = client.get("/console/usage", params={"days": "7"})
        assert page.status_code == 200
        by_model = page.text[page.text.index('id="usage-by-model"') :]
        row = re.search(rf"<th scope=\"row\">{re.escape(LOCAL)}</th><td>(\d+)</td>", by_model)
        assert row is not None and row.group(1) == "2"
        by_key = page.text[page.text.index('id="usage-by-key"') :]
        assert '<th scope="row">notebook</th><td>2</td>' in by_key
        spend_chart = page.text[page.text.index('id="spend-chart"') :]
        spend_chart = spend_chart[: spend_chart.index("</svg>")]
        assert spend_chart.count("<rect ") == 7  # one bar a day
        assert 'id="tokens-chart"' in page.text
        rows = page.text[page.text.index('id="usage-rows"') :]
        assert rows.count(f"<td>{LOCAL}</td><td>notebook</td>") == 2
        other_model = client.get("/console/usage", params={"model": "qwen/qwen3-8b"})
        assert 'id="usage-rows"' not in other_model.text
        today = datetime.now(UTC).date()
        on_the_day = client.get("/console/usage", params={"days": "7", "day": today.isoformat()})
        assert on_the_day.text.count(f"<td>{LOCAL}</td><td>notebook</td>") == 2
        yesterday = (today - timedelta(days=1)).isoformat()
        assert (
            'id="usage-rows"'
            not in client.get("/console/usage", params={"days": "7", "day": yesterday}).text
        )
        csv = client.get("/console/usage.csv", params={"by": "model", "days": "7"})
        assert csv.headers["content-type"].startswith("text/csv")
        assert "attachment" in csv.headers["content-disposition"]
        lines = csv.text.strip().split("\r\n")
        assert lines[0].startswith("group,requests")
        assert lines[1].startswith(f"{LOCAL},2,")
    # Another user sees none of it: not the usage, not the ledger.
    with browser(server) as other:
        sign_up(other, "grace")
        assert "notebook" not in other.get("/console/usage").text
        assert LOCAL not in other.get("/console/usage.csv?by=model").text
        ledger = other.get("/console/billing").text
        assert ledger.count("<tr data-entry-id=") == 1  # her own sign-up credit only


VNU = (
    Path(__file__).parents[1]
    / "browser"
    / "node_modules"
    / "vnu-jar"
    / "build"
    / "dist"
    / "vnu.jar"
)


def test_the_logged_in_pages_are_valid_html(server: RunningServer, tmp_path: Path) -> None:
    """The Nu HTML Checker on the pages only a logged-in user sees (tests/e2e/test_web_browser.py
    checks the public ones, with axe too)."""
    if not VNU.is_file() or shutil.which("java") is None:
        pytest.skip("missing vnu.jar or java: run scripts/install-browser-tools.sh")
    files = []
    with browser(server) as client:
        sign_up(client, "heidi")
        create_key(client, "first")
        for path in (
            "/console",
            "/console/keys",
            "/console/usage",
            "/console/playground",
            "/console/billing",
        ):
            for lang in ("en", "zh"):
                client.cookies.set("lang", lang)
                page = client.get(path)
                assert page.status_code == 200, path
                file = tmp_path / f"{path.strip('/').replace('/', '_')}-{lang}.html"
                file.write_bytes(page.content)
                files.append(str(file))
    admin = admin_browser(server)
    with contextlib.closing(admin):
        for path in ("users", "models", "keys", "codes"):
            for lang in ("en", "zh"):
                admin.cookies.set("lang", lang)
                page = admin.get(f"/console/admin/{path}")
                assert page.status_code == 200, path
                file = tmp_path / f"admin_{path}-{lang}.html"
                file.write_bytes(page.content)
                files.append(str(file))
    done = subprocess.run(
        ["java", "-jar", str(VNU), "--format", "json", "--stdout", "--exit-zero-always", *files],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    errors = [m for m in json.loads(done.stdout)["messages"] if m.get("type") == "error"]
    assert errors == [], errors


def test_the_playground_answers_without_javascript_with_the_users_own_key(
    server: RunningServer,
) -> None:
    with browser(server) as client, browser(server) as other:
        sign_up(client, "ivan")
        secret = create_key(client, "play")
        page = client.get("/console/playground")
        assert page.status_code == 200
        assert 'id="pg-temperature"' in page.text and "0 – 2" in page.text
        form = {
            "csrf": form_csrf(page.text),
            "key": secret,
            "model": LOCAL,
            "message": "Say hi",
            "max_tokens": "8",
        }
        answered = client.post("/console/playground", data=form)
        assert answered.status_code == 200, answered.text[-500:]
        text = re.search(r'<pre id="pg-answer" class="answer">([^<]*)</pre>', answered.text)
        assert text is not None and text.group(1).strip()
        assert re.search(r'<p id="pg-usage">.*¥', answered.text)
        # A bad parameter is a clear refusal naming it; someone else's key is refused.
        bad = client.post("/console/playground", data={**form, "temperature": "9"})
        assert bad.status_code == 400 and "temperature" in bad.text
        sign_up(other, "judy")
        page = other.get("/console/playground")
        stolen = other.post("/console/playground", data={**form, "csrf": form_csrf(page.text)})
        assert stolen.status_code == 403 and "own keys" in stolen.text


def test_billing_shows_the_ledger_and_redeems_a_top_up_code_once(server: RunningServer) -> None:
    made = server.cli("codes", "create", "--count", "1", "--amount", "7.5", "--batch", "web")
    assert made.returncode == 0, made.stderr
    code = re.search(r"MPC(-[A-Z0-9]{4}){4}", made.stdout)
    assert code is not None
    with browser(server) as client:
        sign_up(client, "kim")
        page = client.get("/console/billing")
        assert page.status_code == 200 and "sign-up credit" in page.text
        typed = code.group(0).lower().replace("-", " ")  # as someone might type it
        redeemed = client.post(
            "/console/billing", data={"code": typed, "csrf": form_csrf(page.text)}
        )
        assert redeemed.status_code == 200 and 'id="redeemed"' in redeemed.text
        assert '<dd id="balance">¥10.5</dd>' in redeemed.text  # 3 at sign-up + 7.5
        ledger = redeemed.text[redeemed.text.index('id="ledger"') :]
        assert ledger.index("7.5") < ledger.index("sign-up credit")  # newest first
        again = client.post(
            "/console/billing", data={"code": code.group(0), "csrf": form_csrf(page.text)}
        )
        assert again.status_code == 400 and "not valid" in again.text
        assert client.post("/console/billing", data={"code": code.group(0)}).status_code == 403


def admin_browser(server: RunningServer) -> httpx.Client:
    """A browser logged in as the admin account, whose console password the CLI set."""
    done = subprocess.run(
        [sys.executable, "-m", "modelport", "users", "password", "admin"],
        input="an admin pass phrase\n",
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    client = browser(server)
    page = client.get("/console/login")
    logged = client.post(
        "/console/login",
        data={
            "username": "admin",
            "password": "an admin pass phrase",
            "csrf": form_csrf(page.text),
        },
    )
    assert logged.status_code == 303, logged.text[:300]
    return client


def test_an_admin_tops_up_and_disables_a_user_whose_keys_and_sessions_stop_working(
    server: RunningServer,
) -> None:
    admin = admin_browser(server)
    with browser(server) as lena, contextlib.closing(admin):
        sign_up(lena, "lena")
        secret = create_key(lena, "work")
        ask = {"model": LOCAL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        api = api_for(server, secret)
        api.chat.completions.create(**ask)  # type: ignore[call-overload]
        assert lena.get("/console/admin/users").status_code == 404  # not for users
        page = admin.get("/console/admin/users", params={"q": "len"})
        assert '<tr data-user="lena">' in page.text and '<tr data-user="kim">' not in page.text
        csrf = form_csrf(page.text)
        topped = admin.post(
            "/console/admin/users",
            data={"csrf": csrf, "name": "lena", "action": "topup", "amount": "4", "reason": "gift"},
        )
        assert topped.status_code == 200 and 'id="admin-message"' in topped.text
        assert '<dd id="balance">¥7' in lena.get("/console/billing").text  # 3 + 4, less a charge
        off = admin.post(
            "/console/admin/users", data={"csrf": csrf, "name": "lena", "action": "disable"}
        )
        assert off.status_code == 200
        with pytest.raises(openai.AuthenticationError, match="disabled"):
            api.chat.completions.create(**ask)  # type: ignore[call-overload]
        assert lena.get("/console").headers["location"].startswith("/console/login")
        admin.post("/console/admin/users", data={"csrf": csrf, "name": "lena", "action": "enable"})
        api.chat.completions.create(**ask)  # type: ignore[call-overload]
        last = admin.post(
            "/console/admin/users", data={"csrf": csrf, "name": "admin", "action": "disable"}
        )
        assert last.status_code == 400 and "last admin" in last.text


def test_the_admin_pages_list_models_keys_and_codes_and_make_codes(server: RunningServer) -> None:
    admin = admin_browser(server)
    with browser(server) as user, contextlib.closing(admin):
        sign_up(user, "mona")
        create_key(user, "mona-key")
        for path in ("/console/admin/models", "/console/admin/keys", "/console/admin/codes"):
            assert user.get(path).status_code == 404, path  # not for users
        models = admin.get("/console/admin/models")
        assert models.status_code == 200
        local = re.search(rf'<tr data-model="{re.escape(LOCAL)}">(.*?)</tr>', models.text, re.S)
        assert local is not None and "llamacpp: SmolLM2-135M-Instruct.Q4_1.gguf" in local.group(1)
        assert 'class="hour-requests">' in local.group(1)
        coder = re.search(r'<tr data-model="qwen/qwen3-coder">(.*?)</tr>', models.text, re.S)
        assert coder is not None and "Not configured" in coder.group(1)
        keys = admin.get("/console/admin/keys").text
        assert "mona-key" in keys and "<td>mona</td>" in keys
        page = admin.get("/console/admin/codes")
        made = admin.post(
            "/console/admin/codes",
            data={"csrf": form_csrf(page.text), "count": "3", "amount": "2", "batch": "fair"},
        )
        assert made.status_code == 201
        shown = re.search(r'<code id="new-codes">([^<]+)</code>', made.text)
        assert shown is not None
        new_codes = shown.group(1).split("\n")
        assert len(new_codes) == 3 and all(c.startswith("MPC-") for c in new_codes)
        listed = admin.get("/console/admin/codes").text
        assert listed.count('<th scope="row">fair</th>') == 3
        assert not any(c in listed for c in new_codes)  # shown once, never stored
        bad = admin.post(
            "/console/admin/codes", data={"csrf": form_csrf(page.text), "count": "x", "amount": "2"}
        )
        assert bad.status_code == 400 and "count" in bad.text


def test_an_invite_only_sign_up_asks_for_a_code(tmp_path: Path) -> None:
    invite = RunningServer(tmp_path / "invite", env={"MODELPORT_SIGNUP": "invite"})
    with invite, browser(invite) as client:
        made = invite.cli("codes", "create", "--count", "1", "--amount", "1")
        code = re.search(r"MPC(-[A-Z0-9]{4}){4}", made.stdout)
        assert code is not None
        page = client.get("/console/signup")
        assert 'id="invite-code"' in page.text
        data = {"username": "pat", "password": PASSWORD, "csrf": form_csrf(page.text)}
        assert client.post("/console/signup", data=data).status_code == 400
        page = client.get("/console/signup")
        data["csrf"] = form_csrf(page.text)
        joined = client.post("/console/signup", data={**data, "code": code.group(0)})
        assert joined.status_code == 303
        assert '<dd id="balance">¥1</dd>' in client.get("/console").text
