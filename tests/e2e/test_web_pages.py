"""The public website as a visitor's browser sees it, from a real `modelport serve`: home,
the catalog with its filters, a page per model with samples for this server, both languages,
ETags, live figures from the usage rows, and hostile addresses."""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.e2e.server import RunningServer

from modelport.core.collect import Completion

PUBLIC = "https://api.example.test"
LOCAL = "local/smollm2-135m-instruct"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data = tmp_path_factory.mktemp("web")
    with RunningServer(data, env={"MODELPORT_PUBLIC_URL": PUBLIC}) as server:
        yield server


def get(server: RunningServer, path: str, **headers: str) -> httpx.Response:
    return httpx.get(server.base_url + path, headers=headers, timeout=30)


def visible_cards(page: str) -> list[str]:
    """The ids of the catalog's cards that are not hidden, in page order."""
    return [
        html.unescape(m.group(1))
        for m in re.finditer(r'<li class="model-card" data-id="([^"]+)"([^>]*)>', page)
        if " hidden" not in m.group(2)
    ]


def test_home_shows_both_base_urls_and_links_to_the_catalog(site: RunningServer) -> None:
    response = get(site, "/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    assert f"{PUBLIC}/api/gpt/v1" in page and f"{PUBLIC}/api/anthropic" in page
    assert 'href="/models"' in page
    assert page.count("<h1>") == 1
    # The security headers every HTML page gets; nothing is loaded from another site.
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_the_language_follows_accept_language_then_the_switch_which_is_remembered(
    site: RunningServer,
) -> None:
    assert '<html lang="en">' in get(site, "/").text
    chinese = get(site, "/", **{"accept-language": "zh-CN,zh;q=0.9,en;q=0.8"})
    assert '<html lang="zh-CN">' in chinese.text
    assert "推荐模型" in chinese.text
    switched = get(site, "/models?lang=zh", **{"accept-language": "en-US"})
    assert '<html lang="zh-CN">' in switched.text
    cookie = switched.headers["set-cookie"]
    assert cookie.startswith("lang=zh;") and "Max-Age=" in cookie and "SameSite=Lax" in cookie
    remembered = get(site, "/models/qwen/qwen3-8b", cookie="lang=zh", **{"accept-language": "en"})
    assert '<html lang="zh-CN">' in remembered.text
    assert "代码示例" in remembered.text
    assert "Vary" in remembered.headers or "vary" in remembered.headers
    assert "Accept-Language" in remembered.headers["vary"]


def test_the_catalog_lists_every_model_and_filters_searches_and_sorts_on_the_server(
    site: RunningServer,
) -> None:
    everything = visible_cards(get(site, "/models").text)
    assert set(everything) == {
        LOCAL,
        "qwen/qwen3-coder",
        "qwen/qwen3-8b",
        "qwen/qwen3-30b-a3b",
        "qwen/qwen3-235b-a22b",
        "qwen/qwen3-235b-a22b-thinking-2507",
    }
    assert visible_cards(get(site, "/models?q=coder").text) == ["qwen/qwen3-coder"]
    thinking = set(visible_cards(get(site, "/models?cap=thinking").text))
    assert thinking == {
        "qwen/qwen3-8b",
        "qwen/qwen3-30b-a3b",
        "qwen/qwen3-235b-a22b",
        "qwen/qwen3-235b-a22b-thinking-2507",
    }
    assert set(visible_cards(get(site, "/models?family=Qwen").text)) == set(everything) - {LOCAL}
    by_context = visible_cards(get(site, "/models?sort=context").text)
    assert by_context[-1] == LOCAL  # 8K, the smallest
    assert by_context[0] in ("qwen/qwen3-coder", "qwen/qwen3-235b-a22b-thinking-2507")
    by_price = visible_cards(get(site, "/models?sort=price").text)
    assert by_price[0] == LOCAL  # free
    none = get(site, "/models?q=no-such-model-anywhere").text
    assert visible_cards(none) == []
    assert '<p id="no-match" class="empty">' in none


def test_a_model_page_has_everything_a_user_needs_for_this_server(site: RunningServer) -> None:
    response = get(site, "/models/qwen/qwen3-8b")
    assert response.status_code == 200
    page = html.unescape(response.text)
    assert '<code id="model-id">qwen/qwen3-8b</code>' in page
    assert f"POST {PUBLIC}/api/gpt/v1/chat/completions" in page
    assert f"{PUBLIC}/api/anthropic" in page and "ANTHROPIC_BASE_URL" in page
    assert 'href="/get-apikey"' in page
    assert page.count(">Copy</button>") >= 20 and "built-in" not in page
    for key in (
        "curl",
        "python-requests",
        "python-openai",
        "node-axios",
        "go",
        "rust",
        "java-okhttp",
        "csharp-httpclient",
        "csharp-restsharp",
        "php-guzzle",
        "php-curl",
        "ruby",
        "swift",
        "dart",
        "c-libcurl",
    ):
        assert f'id="sample-{key}"' in page, key
        assert f'data-sample="{key}"' in page, key
    for key in ("curl-stream", "python-anthropic", "openclaw", "opencode", "claude-code"):
        assert f'id="sample-{key}"' in page, key
    samples = re.findall(r'<code id="sample-[^"]+"[^>]*>(.*?)</code>', page, re.DOTALL)
    assert all("qwen/qwen3-8b" in code for code in samples)
    assert all(PUBLIC in code for code in samples)
    # Prices, context and the parameter table with this model's defaults.
    assert "131,072" in page and "¥0.0005" in page and "¥0.00175" in page
    params = page[page.index('<table id="params">') :]
    assert "<code>temperature</code>" in params and "0.6" in params and "0.7" in params
    assert "<code>top_k</code>" in params


def test_the_example_response_is_what_the_api_encoder_produces(site: RunningServer) -> None:
    page = get(site, "/models/qwen/qwen3-8b").text
    block = re.search(r'<code id="example-response"[^>]*>(.*?)</code>', page, re.DOTALL)
    assert block is not None
    example = json.loads(html.unescape(block.group(1)))
    assert example["object"] == "chat.completion"
    assert example["model"] == "qwen/qwen3-8b"
    message = example["choices"][0]["message"]
    assert message["role"] == "assistant" and message["content"]
    assert message["reasoning"]  # a thinking model shows its reasoning field
    assert {"prompt_tokens", "completion_tokens", "total_tokens"} <= set(example["usage"])
    assert Completion.__struct_fields__  # the page's example is built from a Completion


def test_pages_carry_an_etag_and_a_revalidation_costs_no_body(site: RunningServer) -> None:
    first = get(site, "/models/qwen/qwen3-coder")
    etag = first.headers["etag"]
    again = get(site, "/models/qwen/qwen3-coder", **{"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    assert get(site, "/models/qwen/qwen3-coder", **{"if-none-match": '"other"'}).status_code == 200
    css = get(site, "/static/site.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert (
        get(site, "/static/site.css", **{"if-none-match": css.headers["etag"]}).status_code == 304
    )
    assert get(site, "/static/nothing.js").status_code == 404
    head = httpx.head(site.base_url + "/models", timeout=10)
    assert head.status_code == 200 and head.content == b""


def test_unknown_models_and_hostile_addresses_get_quick_clean_answers(
    site: RunningServer,
) -> None:
    missing = get(site, "/models/qwen/no-such-model")
    assert missing.status_code == 404 and "<h1>" in missing.text
    hostile = get(site, "/models?q=%3Cscript%3Ealert(1)%3C/script%3E&sort=%27%22&cap=bogus")
    assert hostile.status_code == 200
    assert "<script>alert(1)" not in hostile.text
    assert "&lt;script&gt;alert(1)" in hostile.text
    long = get(site, "/models?q=" + "x" * 60_000)
    assert long.status_code in (200, 414, 431)
    assert get(site, "/models/" + "%00%ff" * 10).status_code == 404
    # A page never takes its URL from a hostile Host header when a public URL is set.
    page = get(site, "/models/qwen/qwen3-8b", host="evil.example").text
    assert "evil.example" not in page


def test_live_figures_come_from_the_usage_rows(tmp_path: Path) -> None:
    with RunningServer(tmp_path / "live") as server:
        for _ in range(2):
            answer = httpx.post(
                server.base_url + "/v1/chat/completions",
                headers={"authorization": f"Bearer {server.admin_key}"},
                json={
                    "model": LOCAL,
                    "messages": [{"role": "user", "content": "Say hi"}],
                    "max_tokens": 8,
                },
                timeout=120,
            )
            assert answer.status_code == 200
        time.sleep(0.5)  # the usage rows are written just behind the answers
        # The figures are read at the first view, then at most every 30 s.
        page = get(server, f"/models/{LOCAL}").text
        requests = re.search(r'<dd id="live-requests">([^<]*)</dd>', page)
        assert requests is not None and requests.group(1) == "2"
        assert '<dd id="live-success">100.0%</dd>' in page
        assert re.search(r'<dd id="live-latency">\d+ ms</dd>', page)
        assert 'id="live-none"' in get(server, "/models/qwen/qwen3-8b").text
        # "Most used" (7 days) puts the model that served requests first.
        home = get(server, "/").text
        aside = home[home.index("<aside") :]
        first = re.search(r'<ol><li><a href="/models/([^"]+)"', aside)
        assert first is not None and first.group(1) == LOCAL
