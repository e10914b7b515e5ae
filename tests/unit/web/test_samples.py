"""The model pages' code samples and agent recipes (modelport.web.samples): the documented keys
in order, the same request in every language (URL, model id, `API_KEY`, the message), the JSON
bodies they embed, ids with quotes and backslashes escaped per language, balanced brackets, and,
where the machine has the language's tools, a syntax check (tests/e2e/test_web_samples.py runs
the samples that can run here against a real server)."""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from modelport.core.catalog import ModelCard
from modelport.services.catalog import load_catalog
from modelport.settings import load_settings
from modelport.web.samples import (
    API_KEY,
    MESSAGE,
    Sample,
    agent_recipes,
    code_samples,
    output_limit,
)

BASE = "https://api.example.com"
CHAT_URL = f"{BASE}/api/gpt/v1/chat/completions"
KEYS = [
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
    "curl-stream",
    "python-openai-stream",
    "python-anthropic",
    "curl-anthropic",
]
LABELS = {
    "curl": "cURL",
    "python-requests": "Python (requests)",
    "python-openai": "Python (OpenAI SDK)",
    "node-axios": "Node.js (axios)",
    "go": "Go",
    "rust": "Rust (reqwest)",
    "java-okhttp": "Java (OkHttp)",
    "csharp-httpclient": "C# (HttpClient)",
    "csharp-restsharp": "C# (RestSharp)",
    "php-guzzle": "PHP (Guzzle)",
    "php-curl": "PHP (cURL)",
    "ruby": "Ruby",
    "swift": "Swift",
    "dart": "Dart",
    "c-libcurl": "C (libcurl)",
}
SYNTAXES = {"bash", "python", "javascript", "go", "rust", "java", "csharp", "php", "ruby"}
SYNTAXES |= {"swift", "dart", "c", "json"}
ANTHROPIC_KEYS = {"python-anthropic", "curl-anthropic"}
SDK_KEYS = {"python-openai", "python-openai-stream"}
# Every character a language's string syntax treats specially somewhere: quotes, backslash,
# interpolation ($, #{}), a brace.
NASTY_ID = 'acme/it\'s "quoted" \\back$slash #{x}'


def card(
    model_id: str = "qwen/qwen3-8b",
    *,
    thinking: Any = "hybrid",
    context_length: int = 131072,
    max_output_tokens: int | None = None,
    supported: tuple[str, ...] = ("max_tokens", "tools"),
) -> ModelCard:
    return ModelCard(
        id=model_id,
        name="Qwen3 8B",
        description="A model.",
        context_length=context_length,
        thinking=thinking,
        max_output_tokens=max_output_tokens,
        supported_parameters=supported,
    )


def samples(model_id: str = "qwen/qwen3-8b") -> dict[str, Sample]:
    return {sample.key: sample for sample in code_samples(BASE, card(model_id))}


def recipes(model: ModelCard) -> dict[str, Sample]:
    return {sample.key: sample for sample in agent_recipes(BASE, model)}


# --- The lists ----------------------------------------------------------------------------------


def test_keys_are_unique_and_in_the_documented_order() -> None:
    listed = code_samples(BASE, card())
    assert [sample.key for sample in listed] == KEYS
    assert [sample.key for sample in agent_recipes(BASE, card())] == [
        "openclaw",
        "opencode",
        "claude-code",
    ]
    for sample in [*listed, *agent_recipes(BASE, card())]:
        assert sample.syntax in SYNTAXES, sample.key
        assert sample.label, sample.key
        assert re.fullmatch(r"[a-z0-9-]+", sample.key), sample.key  # usable as an HTML id
    assert {s.key: s.label for s in listed if s.key in LABELS} == LABELS
    assert len({sample.label for sample in listed}) == len(listed)


def test_every_catalog_model_gets_every_sample_and_recipe() -> None:
    for model in load_catalog(load_settings({})).models:
        assert [s.key for s in code_samples(BASE, model)] == KEYS, model.id
        for sample in [*code_samples(BASE, model), *agent_recipes(BASE, model)]:
            assert model.id in sample.code, (model.id, sample.key)


def test_a_trailing_slash_on_the_base_url_is_not_doubled() -> None:
    for sample in code_samples(BASE + "/", card()):
        assert f"{BASE}/api/" in sample.code
        assert f"{BASE}//" not in sample.code, sample.key


# --- The same request in every language ---------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_each_sample_sends_the_model_the_message_and_the_key_to_the_right_url(key: str) -> None:
    sample = samples()[key]
    code = sample.code
    assert "qwen/qwen3-8b" in code
    assert API_KEY in code
    assert MESSAGE in code
    assert code.endswith("\n") and not code.startswith("\n")
    if key in ANTHROPIC_KEYS:
        assert f"{BASE}/api/anthropic" in code
        assert "/api/gpt" not in code
    elif key in SDK_KEYS:
        assert f'base_url="{BASE}/api/gpt/v1"' in code
    else:
        assert CHAT_URL in code
    if key not in {"python-openai", "python-openai-stream", "python-anthropic"}:
        # Written out by hand (SDKs build it from the key): a bearer token, or Anthropic's header.
        if key in ANTHROPIC_KEYS:
            assert "x-api-key: API_KEY" in code
        elif key == "rust":
            assert '.bearer_auth("API_KEY")' in code
        else:
            assert "Bearer" in code
    assert ("stream" in code.lower()) == key.endswith("-stream"), key


@pytest.mark.parametrize("key", KEYS)
def test_brackets_balance_in_every_sample(key: str) -> None:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in samples()[key].code:
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            assert stack and stack.pop() == pairs[char], key
    assert stack == [], key


def test_the_samples_differ_only_in_what_the_card_puts_in_them() -> None:
    a = samples("acme/one")
    b = samples("acme/two")
    for key in KEYS:
        assert a[key].code.replace("acme/one", "acme/two") == b[key].code


# --- Bodies held as JSON text ------------------------------------------------------------------


def curl_arguments(code: str) -> list[str]:
    return shlex.split(code.replace("\\\n", " "))


def curl_body(code: str) -> dict[str, Any]:
    arguments = curl_arguments(code)
    body: dict[str, Any] = json.loads(arguments[arguments.index("-d") + 1])
    return body


def c_body(code: str) -> dict[str, Any]:
    """The C sample's body: the adjacent string literals after `body =`, unescaped."""
    declaration = re.search(r"const char \*body =(.*?);\n", code, re.DOTALL)
    assert declaration
    literals = re.findall(r'"((?:[^"\\]|\\.)*)"', declaration.group(1))
    escapes = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}

    def unescape(match: re.Match[str]) -> str:
        text = match.group(1)
        return chr(int(text, 8)) if text[0] in "01234567" else escapes[text]

    text = "".join(re.sub(r"\\([0-7]{3}|.)", unescape, literal) for literal in literals)
    body: dict[str, Any] = json.loads(text)
    return body


def java_body(code: str) -> dict[str, Any]:
    """The Java sample's text block, its indentation stripped and its escapes undone."""
    block = re.search(r'"""\n(.*?\n)( *)""";', code, re.DOTALL)
    assert block
    text = textwrap.dedent(block.group(1) + block.group(2))
    escapes = {'"': '"', "\\": "\\"}
    body: dict[str, Any] = json.loads(re.sub(r"\\(.)", lambda m: escapes[m.group(1)], text))
    return body


def rust_body(code: str) -> dict[str, Any]:
    """The text of the Rust sample's `json!` macro: for ids without control characters, Rust's
    string escapes are JSON's."""
    start = code.index("json!(") + len("json!(")
    depth = 0
    for end in range(start, len(code)):
        depth += {"(": 1, ")": -1}.get(code[end], 0)
        if depth < 0:
            break
    body: dict[str, Any] = json.loads(code[start:end])
    return body


BODY_READERS = {
    "curl": curl_body,
    "curl-stream": curl_body,
    "curl-anthropic": curl_body,
    "c-libcurl": c_body,
    "java-okhttp": java_body,
    "rust": rust_body,
}


@pytest.mark.parametrize("model_id", ["qwen/qwen3-8b", NASTY_ID])
@pytest.mark.parametrize("key", sorted(BODY_READERS))
def test_json_bodies_parse_with_messages_an_array(key: str, model_id: str) -> None:
    body = BODY_READERS[key](samples(model_id)[key].code)
    assert body["model"] == model_id
    assert body["messages"] == [{"role": "user", "content": MESSAGE}]
    assert body.get("stream") is (True if key == "curl-stream" else None)
    if key == "curl-anthropic":
        assert body["max_tokens"] == 4096  # a thinking card: room for its reasoning
    else:
        assert "max_tokens" not in body


def test_the_anthropic_budget_is_smaller_for_a_model_that_does_not_think() -> None:
    plain = code_samples(BASE, card(thinking="none"))
    assert curl_body(plain[-1].code)["max_tokens"] == 1024
    assert "max_tokens=1024," in plain[-2].code


def test_curl_sends_the_headers() -> None:
    arguments = curl_arguments(samples()["curl"].code)
    headers = [arguments[i + 1] for i, arg in enumerate(arguments) if arg == "-H"]
    assert headers == ["Authorization: Bearer API_KEY", "Content-Type: application/json"]
    assert arguments[:2] == ["curl", CHAT_URL]
    anthropic = curl_arguments(samples()["curl-anthropic"].code)
    headers = [anthropic[i + 1] for i, arg in enumerate(anthropic) if arg == "-H"]
    assert headers == [
        "x-api-key: API_KEY",
        "anthropic-version: 2023-06-01",
        "Content-Type: application/json",
    ]
    assert anthropic[1] == f"{BASE}/api/anthropic/v1/messages"
    assert curl_arguments(samples()["curl-stream"].code)[:2] == ["curl", "-N"]


# --- Python: parsed, and the values read back ---------------------------------------------------


def python_keywords(code: str) -> dict[str, Any]:
    """The keyword arguments of every call in a Python sample, evaluated where literal."""
    found: dict[str, Any] = {}
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg is not None:
                    try:
                        found[keyword.arg] = ast.literal_eval(keyword.value)
                    except ValueError:
                        found[keyword.arg] = None
    return found


@pytest.mark.parametrize("model_id", ["qwen/qwen3-8b", NASTY_ID, "acme/tab\there\x01"])
def test_python_samples_carry_the_exact_values(model_id: str) -> None:
    by_key = samples(model_id)
    messages = [{"role": "user", "content": MESSAGE}]
    requests_call = python_keywords(by_key["python-requests"].code)
    assert requests_call["json"] == {"model": model_id, "messages": messages}
    assert requests_call["headers"] == {"Authorization": "Bearer API_KEY"}
    for key in ("python-openai", "python-openai-stream", "python-anthropic"):
        call = python_keywords(by_key[key].code)
        assert call["model"] == model_id
        assert call["messages"] == messages
        assert call["api_key"] == API_KEY
        assert call.get("stream") is (True if key.endswith("-stream") else None)
    assert python_keywords(by_key["python-openai"].code)["base_url"] == f"{BASE}/api/gpt/v1"
    assert python_keywords(by_key["python-anthropic"].code)["base_url"] == f"{BASE}/api/anthropic"


def test_python_requests_reads_the_answer_and_fails_on_an_error_status() -> None:
    code = samples()["python-requests"].code
    assert "response.raise_for_status()" in code
    assert '["choices"][0]["message"]["content"]' in code


# --- Recipes -------------------------------------------------------------------------------------


def test_openclaw_config_names_the_model_with_its_limits() -> None:
    config = json.loads(
        recipes(card(context_length=40960, max_output_tokens=8192))["openclaw"].code
    )
    provider = config["models"]["providers"]["modelport"]
    assert provider["baseUrl"] == f"{BASE}/api/gpt/v1"
    assert provider["apiKey"] == API_KEY
    assert provider["api"] == "openai-completions"
    [model] = provider["models"]
    assert model["id"] == "qwen/qwen3-8b"
    assert model["name"] == "Qwen3 8B"
    assert model["contextWindow"] == 40960
    assert model["maxTokens"] == 8192
    assert model["reasoning"] is True
    assert model["input"] == ["text"]
    # A hybrid model's thinking switch reaches it as chat_template_kwargs.enable_thinking.
    assert model["compat"] == {"thinkingFormat": "qwen-chat-template"}
    assert config["agents"]["defaults"]["model"]["primary"] == "modelport/qwen/qwen3-8b"


def test_openclaw_for_a_model_that_does_not_think() -> None:
    config = json.loads(recipes(card(thinking="none", context_length=8192))["openclaw"].code)
    [model] = config["models"]["providers"]["modelport"]["models"]
    assert model["reasoning"] is False
    assert "compat" not in model
    assert model["maxTokens"] == 2048  # a quarter of the window when the card sets no limit


def test_opencode_config_names_the_model_with_its_limits() -> None:
    model_card = card(context_length=262144, thinking="none", max_output_tokens=65536)
    config = json.loads(recipes(model_card)["opencode"].code)
    assert config["$schema"] == "https://opencode.ai/config.json"
    provider = config["provider"]["modelport"]
    assert provider["npm"] == "@ai-sdk/openai-compatible"
    assert provider["options"] == {"baseURL": f"{BASE}/api/gpt/v1", "apiKey": API_KEY}
    model = provider["models"]["qwen/qwen3-8b"]
    assert model["limit"] == {"context": 262144, "output": 65536}
    assert model["tool_call"] is True
    assert model["reasoning"] is False
    assert config["model"] == config["small_model"] == "modelport/qwen/qwen3-8b"
    without_tools = json.loads(recipes(card(supported=("max_tokens",)))["opencode"].code)
    assert without_tools["provider"]["modelport"]["models"]["qwen/qwen3-8b"]["tool_call"] is False


def claude_code_environment(code: str) -> tuple[dict[str, str], list[str]]:
    environment: dict[str, str] = {}
    commands: list[str] = []
    for line in code.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            name, _, value = words[1].partition("=")
            environment[name] = value
        elif words:
            commands.append(line)
    return environment, commands


def test_claude_code_environment_points_at_the_anthropic_door() -> None:
    environment, commands = claude_code_environment(
        recipes(card(context_length=40960, max_output_tokens=8192))["claude-code"].code
    )
    assert environment["ANTHROPIC_BASE_URL"] == f"{BASE}/api/anthropic"  # no /v1
    assert environment["ANTHROPIC_AUTH_TOKEN"] == API_KEY
    assert environment["ANTHROPIC_MODEL"] == "qwen/qwen3-8b"
    assert environment["ANTHROPIC_SMALL_FAST_MODEL"] == "qwen/qwen3-8b"
    assert environment["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "40960"
    assert environment["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "8192"
    assert commands == ["claude"]


def test_recipes_escape_the_model_id() -> None:
    by_key = recipes(card(NASTY_ID))
    openclaw = json.loads(by_key["openclaw"].code)
    assert openclaw["models"]["providers"]["modelport"]["models"][0]["id"] == NASTY_ID
    opencode = json.loads(by_key["opencode"].code)
    assert list(opencode["provider"]["modelport"]["models"]) == [NASTY_ID]
    environment, _ = claude_code_environment(by_key["claude-code"].code)
    assert environment["ANTHROPIC_MODEL"] == NASTY_ID


def test_output_limit() -> None:
    assert output_limit(card(max_output_tokens=32768)) == 32768
    assert output_limit(card(context_length=131072)) == 8192
    assert output_limit(card(context_length=8192)) == 2048


# --- Syntax checks with the languages' own tools, where present ---------------------------------

JAVA_STUBS = {
    "okhttp3/MediaType.java": "public final class MediaType {"
    " public static MediaType get(String type) { return null; } }",
    "okhttp3/RequestBody.java": "public abstract class RequestBody {"
    " public static RequestBody create(String content, MediaType type) { return null; } }",
    "okhttp3/Call.java": "public interface Call { Response execute() throws java.io.IOException; }",
    "okhttp3/OkHttpClient.java": "public class OkHttpClient {"
    " public Call newCall(Request request) { return null; }"
    " public static final class Builder {"
    " public Builder readTimeout(java.time.Duration timeout) { return this; }"
    " public OkHttpClient build() { return null; } } }",
    "okhttp3/Request.java": "public final class Request { public static class Builder {"
    " public Builder url(String url) { return this; }"
    " public Builder header(String name, String value) { return this; }"
    " public Builder post(RequestBody body) { return this; }"
    " public Request build() { return null; } } }",
    "okhttp3/Response.java": "public final class Response implements java.io.Closeable {"
    " public ResponseBody body() { return null; } public boolean isSuccessful() { return true; }"
    " public int code() { return 200; } public void close() {} }",
    "okhttp3/ResponseBody.java": "public abstract class ResponseBody {"
    " public String string() throws java.io.IOException { return null; } }",
    "org/json/JSONObject.java": "public class JSONObject { public JSONObject(String text) {}"
    " public JSONArray getJSONArray(String key) { return null; }"
    " public JSONObject getJSONObject(String key) { return null; }"
    " public String getString(String key) { return null; } }",
    "org/json/JSONArray.java": "public class JSONArray {"
    " public JSONObject getJSONObject(int index) { return null; } }",
}


def check(command: list[str], cwd: Path) -> str:
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed (scripts/install-sample-tools.sh)")
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


SYNTAX_CHECKS: dict[str, tuple[str, list[str]]] = {
    "curl": ("sample.sh", ["bash", "-n", "sample.sh"]),
    "curl-stream": ("sample.sh", ["bash", "-n", "sample.sh"]),
    "curl-anthropic": ("sample.sh", ["bash", "-n", "sample.sh"]),
    "node-axios": ("sample.js", ["node", "--check", "sample.js"]),
    "php-guzzle": ("sample.php", ["php", "-l", "sample.php"]),
    "php-curl": ("sample.php", ["php", "-l", "sample.php"]),
    "ruby": ("sample.rb", ["ruby", "-wc", "sample.rb"]),
    "c-libcurl": ("main.c", ["gcc", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "main.c"]),
}


@pytest.mark.parametrize("model_id", ["qwen/qwen3-8b", NASTY_ID])
@pytest.mark.parametrize("key", sorted(SYNTAX_CHECKS))
def test_syntax(key: str, model_id: str, tmp_path: Path) -> None:
    filename, command = SYNTAX_CHECKS[key]
    (tmp_path / filename).write_text(samples(model_id)[key].code)
    check(command, tmp_path)


@pytest.mark.parametrize("model_id", ["qwen/qwen3-8b", NASTY_ID])
def test_python_samples_compile(model_id: str) -> None:
    for sample in samples(model_id).values():
        if sample.syntax == "python":
            compile(sample.code, sample.key, "exec")


@pytest.mark.parametrize("model_id", ["qwen/qwen3-8b", NASTY_ID])
def test_go_sample_is_gofmt_clean(model_id: str, tmp_path: Path) -> None:
    (tmp_path / "main.go").write_text(samples(model_id)["go"].code)
    assert check(["gofmt", "-l", "main.go"], tmp_path) == ""  # a syntax error fails, too


@pytest.mark.parametrize("model_id", ["qwen/qwen3-8b", NASTY_ID])
def test_rust_sample_is_rustfmt_clean(model_id: str, tmp_path: Path) -> None:
    """A syntax check without the crates: rustfmt parses the file and fails on an error."""
    (tmp_path / "main.rs").write_text(samples(model_id)["rust"].code)
    check(["rustfmt", "--check", "--edition", "2021", "main.rs"], tmp_path)


@pytest.mark.parametrize("model_id", ["qwen/qwen3-8b", NASTY_ID])
def test_java_sample_compiles_against_okhttp_shaped_stubs(model_id: str, tmp_path: Path) -> None:
    """OkHttp and org.json are not here: stubs with their real signatures stand in, so javac
    checks the syntax, the text block and every call the sample makes."""
    sources = []
    for path, body in JAVA_STUBS.items():
        package = path.rsplit("/", 1)[0].replace("/", ".")
        source = tmp_path / "src" / path
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(f"package {package};\n{body}\n")
        sources.append(str(source))
    (tmp_path / "Main.java").write_text(samples(model_id)["java-okhttp"].code)
    check(["javac", "-d", str(tmp_path / "out"), *sources, "Main.java"], tmp_path)
