"""The website in a real browser, from a real `modelport serve`: a Playwright flow through it in
Debian's Chromium (tests/browser/flow.mjs), axe-core on each page (tests/browser/axe.mjs) and the
Nu HTML Checker (vnu.jar) on each page's HTML; the rendered pages are also scanned for leaked
template output.

Needs Chromium, Node.js, Java and tests/browser/node_modules: `scripts/install-browser-tools.sh`
installs whatever is missing (no browser is downloaded; Playwright drives /usr/bin/chromium).
Screenshots and the tools' JSON reports are kept in tests/browser/artifacts/ (git-ignored; the
folder can be moved with BROWSER_ARTIFACTS=DIR). Each tool runs once per module, and a test per
flow step, per page for axe and per page for the validator says what failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.server import RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
BROWSER = ROOT / "tests" / "browser"
MODULES = BROWSER / "node_modules"
VNU = MODULES / "vnu-jar" / "build" / "dist" / "vnu.jar"
ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS") or BROWSER / "artifacts")
INSTALL = "run scripts/install-browser-tools.sh"

ALL_IDS = [
    "local/smollm2-135m-instruct",
    "qwen/qwen3-coder",
    "qwen/qwen3-8b",
    "qwen/qwen3-30b-a3b",
    "qwen/qwen3-235b-a22b",
    "qwen/qwen3-235b-a22b-thinking-2507",
]
THINKING = [
    "qwen/qwen3-8b",
    "qwen/qwen3-30b-a3b",
    "qwen/qwen3-235b-a22b",
    "qwen/qwen3-235b-a22b-thinking-2507",
]
SAMPLE_KEYS = [
    "curl", "python-requests", "python-openai", "node-axios", "go", "rust", "java-okhttp",
    "csharp-httpclient", "csharp-restsharp", "php-guzzle", "php-curl", "ruby", "swift", "dart",
    "c-libcurl",
]  # fmt: skip
FLOW_CONFIG: dict[str, Any] = {
    "allIds": ALL_IDS,
    "search": {"query": "coder", "visible": ["qwen/qwen3-coder"]},
    "thinking": {"visible": THINKING},
    "model": {"id": "qwen/qwen3-8b", "name": "Qwen3 8B"},
    "sample": "python-openai",
    "sampleKeys": SAMPLE_KEYS,
    "copied": {"en": "Copied", "zh-CN": "已复制"},
}
# The flow's steps, in order (tests/browser/flow.mjs).
FLOW_STEPS = [
    "home",
    "catalog",
    "search",
    "filter-thinking",
    "model-page",
    "language-zh",
    "sample-tabs",
    "copy",
    "language-en",
    "accept-language-zh",
    "no-js-filter",
    "no-js-search",
]
PATHS = [
    "/",
    "/models",
    "/models/qwen/qwen3-8b",
    "/get-apikey",
    "/console/signup",
    "/console/login",
]
PAGES = [(path, lang) for path in PATHS for lang in ("en", "zh")]
PAGE_IDS = [f"{path}:{lang}" for path, lang in PAGES]


def chromium() -> str:
    return os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"


def missing(*, browser: bool = False, java: bool = False) -> list[str]:
    lacking = []
    if browser:
        if shutil.which("node") is None:
            lacking.append("node")
        if not os.access(chromium(), os.X_OK):
            lacking.append(chromium())
        for module in ("playwright-core", "axe-core"):
            if not (MODULES / module / "package.json").is_file():
                lacking.append(f"tests/browser/node_modules/{module}")
    if java:
        if shutil.which("java") is None:
            lacking.append("java")
        if not VNU.is_file():
            lacking.append("tests/browser/node_modules/vnu-jar")
    return lacking


def skip_if_missing(*, browser: bool = False, java: bool = False) -> None:
    lacking = missing(browser=browser, java=java)
    if lacking:
        pytest.skip(f"missing {', '.join(lacking)}: {INSTALL}")


def artifacts(name: str) -> Path:
    folder = ARTIFACTS / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"\n{name}: screenshots and reports in {folder}")
    return folder


def run_node(script: str, *args: str, report: Path) -> dict[str, Any]:
    """Runs one of tests/browser/*.mjs; its last stdout line is its JSON summary (also saved)."""
    started = time.monotonic()
    done = subprocess.run(
        ["node", str(BROWSER / script), *args],
        cwd=BROWSER,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    try:
        summary: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        pytest.fail(
            f"{script} exited {done.returncode} with no JSON summary:\n"
            f"{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-5000:]}"
        )
    summary["wall_s"] = round(time.monotonic() - started, 1)
    report.write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print(done.stderr, end="")
    return summary


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The server as shipped (the default local model, SQLite), its public URL its own."""
    server = RunningServer(tmp_path_factory.mktemp("web-browser"))
    server.env["MODELPORT_PUBLIC_URL"] = server.base_url
    with server:
        yield server


@pytest.fixture(scope="module")
def flow(request: pytest.FixtureRequest) -> dict[str, Any]:
    skip_if_missing(browser=True)
    site: RunningServer = request.getfixturevalue("site")  # started only when needed
    out = artifacts("flow")
    config = out / "config.json"
    config.write_text(json.dumps({**FLOW_CONFIG, "publicUrl": site.base_url}))
    args = ["--base", site.base_url, "--out", str(out), "--config", str(config)]
    return run_node("flow.mjs", *args, report=out / "flow.json")


@pytest.fixture(scope="module")
def axe(request: pytest.FixtureRequest) -> dict[str, Any]:
    skip_if_missing(browser=True)
    site: RunningServer = request.getfixturevalue("site")  # started only when needed
    out = artifacts("axe")
    pages = ",".join(PAGE_IDS)
    args = ["--base", site.base_url, "--out", str(out), "--pages", pages]
    return run_node("axe.mjs", *args, report=out / "axe.json")


def page_file(path: str, lang: str) -> str:
    return (path.strip("/").replace("/", "_") or "home") + f"-{lang}.html"


@pytest.fixture(scope="module")
def vnu(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each page's HTML, fetched as a browser asking for its language would, saved to a file;
    then one run of the Nu HTML Checker over all the files."""
    skip_if_missing(java=True)
    site: RunningServer = request.getfixturevalue("site")  # started only when needed
    out = artifacts("vnu")
    pages: dict[str, dict[str, Any]] = {}
    for path, lang in PAGES:
        url = f"{site.base_url}{path}?{urllib.parse.urlencode({'lang': lang})}"
        get = urllib.request.Request(
            url, headers={"Accept-Language": "zh-CN,zh;q=0.9" if lang == "zh" else "en-US,en"}
        )
        try:
            with urllib.request.urlopen(get, timeout=30) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            with error:
                status, body = error.code, error.read()
        file = out / page_file(path, lang)
        file.write_bytes(body)
        pages[f"{path}:{lang}"] = {"url": url, "status": status, "file": str(file), "messages": []}
    started = time.monotonic()
    done = subprocess.run(
        ["java", "-jar", str(VNU), "--format", "json", "--stdout", "--exit-zero-always"]
        + [page["file"] for page in pages.values()],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"vnu.jar exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr}")
    # vnu names a file "file:/abs/path"; an unknown name goes to every page.
    by_file = {str(Path(page["file"]).resolve()): page for page in pages.values()}
    for message in report["messages"]:
        page = by_file.get(urllib.parse.unquote(urllib.parse.urlsplit(message.get("url", "")).path))
        if page is None:
            for every in pages.values():
                every["messages"].append(message)
        else:
            page["messages"].append(message)
    summary = {"version": report.get("version"), "pages": pages}
    summary["vnu_s"] = round(time.monotonic() - started, 1)
    (out / "vnu.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def describe(step: dict[str, Any]) -> str:
    shot = step.get("screenshot", step.get("screenshot_error", ""))
    return f"{step['name']} at {step.get('url')}: {step.get('error')}\n  screenshot: {shot}"


@pytest.mark.parametrize("name", FLOW_STEPS)
def test_flow_step(flow: dict[str, Any], name: str) -> None:
    """One step of the walk through the site (tests/browser/flow.mjs says what each checks)."""
    steps = {step["name"]: step for step in flow["steps"]}
    assert name in steps, f"the flow never reached {name}: {flow}"
    step = steps[name]
    print(f"{name}: {step['ms']} ms, {step.get('detail')}")
    assert step["ok"], describe(step)


def test_flow_raised_no_script_errors_and_loaded_everything(flow: dict[str, Any]) -> None:
    """No uncaught exception or console error in any page of the flow, and no request of it
    (stylesheets, scripts, pages) answered with an error; a missing /favicon.ico is let pass."""

    def favicon(url: str | None) -> bool:
        return urllib.parse.urlsplit(url or "").path == "/favicon.ico"

    errors = [error for error in flow["page_errors"] if not favicon(error.get("source"))]
    bad = [response for response in flow["bad_responses"] if not favicon(response["url"])]
    assert not errors, json.dumps(errors, indent=1, ensure_ascii=False)
    assert not bad, json.dumps(bad, indent=1)


@pytest.mark.parametrize(("path", "lang"), PAGES, ids=PAGE_IDS)
def test_axe_finds_nothing_serious(axe: dict[str, Any], path: str, lang: str) -> None:
    """axe-core: no violation of impact "serious" or "critical" (the others are printed)."""
    [page] = [p for p in axe["pages"] if p["path"] == path and p["lang"] == lang]
    assert "error" not in page, page["error"]
    assert page["status"] == 200, f"GET {page['url']} answered {page['status']}"
    assert page["htmlLang"] == ("zh-CN" if lang == "zh" else "en")
    for violation in page["violations"]:
        impact, rule, count = violation["impact"], violation["id"], violation["count"]
        print(f"{impact}: {rule} ({count}): {violation['help']}")
    serious = [v for v in page["violations"] if v["impact"] in ("serious", "critical")]
    assert not serious, (
        "\n".join(
            f"{v['impact']} {v['id']}: {v['help']} ({v['count']} nodes)\n"
            + "".join(f"    {node['target']}: {node['html']}\n" for node in v["nodes"])
            for v in serious
        )
        + f"screenshot: {page.get('screenshot')}"
    )


@pytest.mark.parametrize(("path", "lang"), PAGES, ids=PAGE_IDS)
def test_page_shows_no_leaked_template_output(axe: dict[str, Any], path: str, lang: str) -> None:
    """The rendered page (scripts run) shows no Python repr ("<built-in method copy of dict
    object at 0x…>"), no "{{ … }}", "undefined", "None" or "[object Object]" outside code
    samples, and every copy button's data-copy-target names an element."""
    [page] = [p for p in axe["pages"] if p["path"] == path and p["lang"] == lang]
    assert "error" not in page, page["error"]
    assert page["status"] == 200, f"GET {page['url']} answered {page['status']}"
    assert not page["leaks"], "\n".join(
        f"{leak['in']} (×{leak['count']}): {leak['text']}" for leak in page["leaks"]
    )


@pytest.mark.parametrize(("path", "lang"), PAGES, ids=PAGE_IDS)
def test_nu_html_checker_finds_no_error(vnu: dict[str, Any], path: str, lang: str) -> None:
    """The Nu HTML Checker: no error (warnings are printed)."""
    page = vnu["pages"][f"{path}:{lang}"]
    assert page["status"] == 200, f"GET {page['url']} answered {page['status']}"
    errors = []
    for message in page["messages"]:
        where = f"line {message.get('lastLine')}: {message.get('message')}"
        extract = message.get("extract", "").replace("\n", "⏎")
        if message["type"] == "info":
            print(f"{message.get('subType', 'info')}: {where} [{extract}]")
        else:
            errors.append(f"{message['type']}: {where}\n    {extract}")
    assert not errors, f"{page['file']}:\n" + "\n".join(errors)
