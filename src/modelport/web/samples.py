"""The code samples and agent recipes a model page shows: one chat-completion request in each
language (plus streaming and Anthropic Messages variants), and the configuration OpenClaw,
OpenCode and Claude Code need to use the model.

Every sample sends the same request: the page's model id, one short user message, the key as
the literal placeholder `API_KEY` (a reader, or a test, puts a real key in its place). Each
language has one small template function; the model id, URLs and message reach it as string
literals already escaped for that language, so an id with a quote or backslash stays correct.

Pure string building: imports the model card from `core` and nothing that does I/O.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from modelport.core.catalog import ModelCard

API_KEY = "API_KEY"
MESSAGE = "Hello! What can you do?"
ANTHROPIC_VERSION = "2023-06-01"
# The agents' name for this server in their configuration files (provider/model references).
PROVIDER = "modelport"


class Sample(msgspec.Struct, frozen=True):
    key: str  # stable id used in HTML ids and tabs
    label: str  # shown on the tab
    syntax: str  # the highlighter's language name
    code: str


# --- String literals, per language -------------------------------------------------------------

_C_LIKE = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(text: str, table: Mapping[str, str], control: Callable[[int], str]) -> str:
    """`text` with each character in `table` replaced, and other control characters written
    with `control` (given the code point)."""
    out: list[str] = []
    for char in text:
        if char in table:
            out.append(table[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(control(ord(char)))
        else:
            out.append(char)
    return "".join(out)


def _u4(code: int) -> str:
    return f"\\u{code:04x}"


def _u_braced(code: int) -> str:
    return f"\\u{{{code:x}}}"


def _octal(code: int) -> str:
    return f"\\{code:03o}"  # three digits: a following digit cannot extend it, unlike \x


def _raw(code: int) -> str:
    return chr(code)


def json_string(text: str) -> str:
    """A JSON string; also a valid Python and JavaScript string literal."""
    return json.dumps(text, ensure_ascii=False)


def go_string(text: str) -> str:
    return '"' + _escape(text, _C_LIKE, _u4) + '"'


def java_string(text: str) -> str:
    # \u escapes are decoded before Java lexes the source, so control characters are written
    # in octal: "\u000a" would end the line inside the literal.
    return '"' + _escape(text, _C_LIKE, _octal) + '"'


def csharp_string(text: str) -> str:
    return '"' + _escape(text, _C_LIKE, _u4) + '"'


def rust_string(text: str) -> str:
    return '"' + _escape(text, _C_LIKE, _u_braced) + '"'


def swift_string(text: str) -> str:
    return '"' + _escape(text, _C_LIKE, _u_braced) + '"'


def c_string(text: str) -> str:
    return '"' + _escape(text, _C_LIKE, _octal) + '"'


def ruby_string(text: str) -> str:
    # A double-quoted Ruby string interpolates #{...}, #@var and #$var: every # is escaped.
    return '"' + _escape(text, {**_C_LIKE, "#": "\\#"}, _u_braced) + '"'


def php_string(text: str) -> str:
    # Single-quoted: no interpolation; only \ and ' are special, anything else may stand raw.
    return "'" + _escape(text, {"'": "\\'", "\\": "\\\\"}, _raw) + "'"


def dart_string(text: str) -> str:
    # Single-quoted, with $ escaped (interpolation).
    table = {"'": "\\'", "\\": "\\\\", "$": "\\$", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return "'" + _escape(text, table, _u_braced) + "'"


def java_text_block(text: str) -> str:
    """The body of a Java text block (between the two triple quotes): only backslashes need
    escaping in JSON text, which never holds three quotes in a row."""
    return text.replace("\\", "\\\\")


# --- The request every sample sends ------------------------------------------------------------


class _Request(msgspec.Struct, frozen=True):
    base_url: str
    model: str

    @property
    def openai_base(self) -> str:
        return f"{self.base_url}/api/gpt/v1"

    @property
    def chat_url(self) -> str:
        return f"{self.openai_base}/chat/completions"

    @property
    def anthropic_base(self) -> str:
        return f"{self.base_url}/api/anthropic"

    @property
    def messages_url(self) -> str:
        return f"{self.anthropic_base}/v1/messages"

    def body(self, *, stream: bool = False, max_tokens: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        body["messages"] = [{"role": "user", "content": MESSAGE}]
        if stream:
            body["stream"] = True
        return body

    def body_lines(self, *, stream: bool = False, max_tokens: int | None = None) -> list[str]:
        """The body as JSON text, one line per top-level field: `{`, `"model": "…",`, …, `}`."""
        fields = list(self.body(stream=stream, max_tokens=max_tokens).items())
        lines = [
            f"{json_string(key)}: {json.dumps(value, ensure_ascii=False)}"
            + ("," if index < len(fields) - 1 else "")
            for index, (key, value) in enumerate(fields)
        ]
        return ["{", *lines, "}"]

    def body_json(self, *, stream: bool = False, max_tokens: int | None = None) -> str:
        """The body as JSON text the way the samples show it: a field a line, indented by 2."""
        lines = self.body_lines(stream=stream, max_tokens=max_tokens)
        return "\n".join([lines[0], *("  " + line for line in lines[1:-1]), lines[-1]])


def _indent(text: str, prefix: str) -> str:
    """Every line after the first indented by `prefix` (to nest a multi-line value)."""
    return text.replace("\n", "\n" + prefix)


# --- OpenAI-compatible chat completions ---------------------------------------------------------


def _curl(r: _Request) -> str:
    return f"""curl {shlex.quote(r.chat_url)} \\
  -H "Authorization: Bearer {API_KEY}" \\
  -H "Content-Type: application/json" \\
  -d {_indent(shlex.quote(r.body_json()), "  ")}
"""


def _curl_stream(r: _Request) -> str:
    return f"""curl -N {shlex.quote(r.chat_url)} \\
  -H "Authorization: Bearer {API_KEY}" \\
  -H "Content-Type: application/json" \\
  -d {_indent(shlex.quote(r.body_json(stream=True)), "  ")}
"""


def _python_requests(r: _Request) -> str:
    return f"""import requests

response = requests.post(
    {json_string(r.chat_url)},
    headers={{"Authorization": "Bearer {API_KEY}"}},
    json={{
        "model": {json_string(r.model)},
        "messages": [{{"role": "user", "content": {json_string(MESSAGE)}}}],
    }},
    timeout=120,
)
response.raise_for_status()
print(response.json()["choices"][0]["message"]["content"])
"""


def _python_openai(r: _Request) -> str:
    return f"""from openai import OpenAI

client = OpenAI(base_url={json_string(r.openai_base)}, api_key="{API_KEY}")

completion = client.chat.completions.create(
    model={json_string(r.model)},
    messages=[{{"role": "user", "content": {json_string(MESSAGE)}}}],
)
print(completion.choices[0].message.content)
"""


def _python_openai_stream(r: _Request) -> str:
    return f"""from openai import OpenAI

client = OpenAI(base_url={json_string(r.openai_base)}, api_key="{API_KEY}")

stream = client.chat.completions.create(
    model={json_string(r.model)},
    messages=[{{"role": "user", "content": {json_string(MESSAGE)}}}],
    stream=True,
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
"""


def _node_axios(r: _Request) -> str:
    return f"""const axios = require("axios");

async function main() {{
  const response = await axios.post(
    {json_string(r.chat_url)},
    {{
      model: {json_string(r.model)},
      messages: [{{ role: "user", content: {json_string(MESSAGE)} }}],
    }},
    {{
      headers: {{
        Authorization: "Bearer {API_KEY}",
        "Content-Type": "application/json",
      }},
    }},
  );
  console.log(response.data.choices[0].message.content);
}}

main().catch((error) => {{
  console.error(error.response ? error.response.data : error.message);
  process.exit(1);
}});
"""


def _go(r: _Request) -> str:
    return f"""package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
)

const endpoint = {go_string(r.chat_url)}

type message struct {{
	Role    string `json:"role"`
	Content string `json:"content"`
}}

type chatRequest struct {{
	Model    string    `json:"model"`
	Messages []message `json:"messages"`
}}

type chatResponse struct {{
	Choices []struct {{
		Message message `json:"message"`
	}} `json:"choices"`
}}

func main() {{
	body, err := json.Marshal(chatRequest{{
		Model:    {go_string(r.model)},
		Messages: []message{{{{Role: "user", Content: {go_string(MESSAGE)}}}}},
	}})
	if err != nil {{
		log.Fatal(err)
	}}

	req, err := http.NewRequest(http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {{
		log.Fatal(err)
	}}
	req.Header.Set("Authorization", "Bearer {API_KEY}")
	req.Header.Set("Content-Type", "application/json")

	resp, err := http.DefaultClient.Do(req)
	if err != nil {{
		log.Fatal(err)
	}}
	defer resp.Body.Close()

	data, err := io.ReadAll(resp.Body)
	if err != nil {{
		log.Fatal(err)
	}}
	if resp.StatusCode != http.StatusOK {{
		log.Fatalf("HTTP %d: %s", resp.StatusCode, data)
	}}

	var result chatResponse
	if err := json.Unmarshal(data, &result); err != nil {{
		log.Fatal(err)
	}}
	if len(result.Choices) == 0 {{
		log.Fatal("the response has no choices")
	}}
	fmt.Println(result.Choices[0].Message.Content)
}}
"""


def _rust(r: _Request) -> str:
    return f"""// Cargo.toml:
// [dependencies]
// reqwest = {{ version = "0.12", features = ["blocking", "json"] }}
// serde_json = "1"
use std::time::Duration;

use serde_json::{{json, Value}};

fn main() -> Result<(), Box<dyn std::error::Error>> {{
    let body = json!({{
        "model": {rust_string(r.model)},
        "messages": [
            {{"role": "user", "content": {rust_string(MESSAGE)}}}
        ]
    }});

    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let response = client
        .post({rust_string(r.chat_url)})
        .bearer_auth("{API_KEY}")
        .json(&body)
        .send()?
        .error_for_status()?;

    let data: Value = response.json()?;
    let content = data["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    println!("{{content}}");
    Ok(())
}}
"""


def _java_okhttp(r: _Request) -> str:
    block = "            " + _indent(java_text_block(r.body_json()), "            ")
    return f"""// Dependencies: com.squareup.okhttp3:okhttp:4.12.0 and org.json:json:20250517
import java.io.IOException;
import java.time.Duration;

import okhttp3.MediaType;
import okhttp3.OkHttpClient;
import okhttp3.Request;
import okhttp3.RequestBody;
import okhttp3.Response;
import org.json.JSONObject;

public class Main {{
    private static final MediaType JSON = MediaType.get("application/json");

    public static void main(String[] args) throws IOException {{
        String json = \"\"\"
{block}
            \"\"\";

        OkHttpClient client = new OkHttpClient.Builder()
            .readTimeout(Duration.ofSeconds(120))
            .build();
        Request request = new Request.Builder()
            .url({java_string(r.chat_url)})
            .header("Authorization", "Bearer {API_KEY}")
            .post(RequestBody.create(json, JSON))
            .build();

        try (Response response = client.newCall(request).execute()) {{
            String body = response.body().string();
            if (!response.isSuccessful()) {{
                System.err.println("HTTP " + response.code() + ": " + body);
                System.exit(1);
            }}
            String content = new JSONObject(body)
                .getJSONArray("choices")
                .getJSONObject(0)
                .getJSONObject("message")
                .getString("content");
            System.out.println(content);
        }}
    }}
}}
"""


def _csharp_httpclient(r: _Request) -> str:
    return f"""using System;
using System.Net.Http;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;

using var client = new HttpClient();
client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "{API_KEY}");

var response = await client.PostAsJsonAsync(
    {csharp_string(r.chat_url)},
    new
    {{
        model = {csharp_string(r.model)},
        messages = new[] {{ new {{ role = "user", content = {csharp_string(MESSAGE)} }} }},
    }});
var body = await response.Content.ReadAsStringAsync();
if (!response.IsSuccessStatusCode)
{{
    Console.Error.WriteLine($"HTTP {{(int)response.StatusCode}}: {{body}}");
    return 1;
}}

using var json = JsonDocument.Parse(body);
var content = json.RootElement
    .GetProperty("choices")[0]
    .GetProperty("message")
    .GetProperty("content")
    .GetString();
Console.WriteLine(content);
return 0;
"""


def _csharp_restsharp(r: _Request) -> str:
    return f"""using System;
using System.Text.Json;
using RestSharp;

using var client = new RestClient();
var request = new RestRequest({csharp_string(r.chat_url)}, Method.Post);
request.AddHeader("Authorization", "Bearer {API_KEY}");
request.AddJsonBody(new
{{
    model = {csharp_string(r.model)},
    messages = new[] {{ new {{ role = "user", content = {csharp_string(MESSAGE)} }} }},
}});

var response = await client.ExecuteAsync(request);
if (!response.IsSuccessful)
{{
    Console.Error.WriteLine($"HTTP {{(int)response.StatusCode}}: {{response.Content}}");
    return 1;
}}

using var json = JsonDocument.Parse(response.Content!);
var content = json.RootElement
    .GetProperty("choices")[0]
    .GetProperty("message")
    .GetProperty("content")
    .GetString();
Console.WriteLine(content);
return 0;
"""


def _php_guzzle(r: _Request) -> str:
    return f"""<?php
// composer require guzzlehttp/guzzle
require __DIR__ . '/vendor/autoload.php';

use GuzzleHttp\\Client;
use GuzzleHttp\\Exception\\GuzzleException;

$client = new Client(['timeout' => 120]);

try {{
    $response = $client->post({php_string(r.chat_url)}, [
        'headers' => ['Authorization' => 'Bearer {API_KEY}'],
        'json' => [
            'model' => {php_string(r.model)},
            'messages' => [
                ['role' => 'user', 'content' => {php_string(MESSAGE)}],
            ],
        ],
    ]);
}} catch (GuzzleException $e) {{
    fwrite(STDERR, $e->getMessage() . PHP_EOL);
    exit(1);
}}

$data = json_decode((string) $response->getBody(), true);
echo $data['choices'][0]['message']['content'], PHP_EOL;
"""


def _php_curl(r: _Request) -> str:
    return f"""<?php
$payload = [
    'model' => {php_string(r.model)},
    'messages' => [
        ['role' => 'user', 'content' => {php_string(MESSAGE)}],
    ],
];

$ch = curl_init({php_string(r.chat_url)});
curl_setopt_array($ch, [
    CURLOPT_POST => true,
    CURLOPT_RETURNTRANSFER => true,
    CURLOPT_TIMEOUT => 120,
    CURLOPT_HTTPHEADER => [
        'Authorization: Bearer {API_KEY}',
        'Content-Type: application/json',
    ],
    CURLOPT_POSTFIELDS => json_encode($payload),
]);

$body = curl_exec($ch);
if ($body === false) {{
    fwrite(STDERR, 'Request failed: ' . curl_error($ch) . PHP_EOL);
    exit(1);
}}
$status = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
if ($status !== 200) {{
    fwrite(STDERR, "HTTP $status: $body" . PHP_EOL);
    exit(1);
}}

$data = json_decode($body, true);
echo $data['choices'][0]['message']['content'], PHP_EOL;
"""


def _ruby(r: _Request) -> str:
    return f"""require "json"
require "net/http"
require "uri"

uri = URI({ruby_string(r.chat_url)})
request = Net::HTTP::Post.new(uri)
request["Authorization"] = "Bearer {API_KEY}"
request["Content-Type"] = "application/json"
request.body = JSON.generate(
  model: {ruby_string(r.model)},
  messages: [{{ role: "user", content: {ruby_string(MESSAGE)} }}]
)

response = Net::HTTP.start(uri.hostname, uri.port,
                           use_ssl: uri.scheme == "https", read_timeout: 120) do |http|
  http.request(request)
end
abort "HTTP #{{response.code}}: #{{response.body}}" unless response.is_a?(Net::HTTPSuccess)

puts JSON.parse(response.body).dig("choices", 0, "message", "content")
"""


def _swift(r: _Request) -> str:
    return f"""import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

struct Message: Codable {{
    let role: String
    let content: String?
}}

struct ChatRequest: Encodable {{
    let model: String
    let messages: [Message]
}}

struct ChatResponse: Decodable {{
    struct Choice: Decodable {{
        let message: Message
    }}
    let choices: [Choice]
}}

let url = URL(string: {swift_string(r.chat_url)})!
var request = URLRequest(url: url)
request.httpMethod = "POST"
request.timeoutInterval = 120
request.setValue("Bearer {API_KEY}", forHTTPHeaderField: "Authorization")
request.setValue("application/json", forHTTPHeaderField: "Content-Type")
request.httpBody = try JSONEncoder().encode(ChatRequest(
    model: {swift_string(r.model)},
    messages: [Message(role: "user", content: {swift_string(MESSAGE)})]
))

let (data, response) = try await URLSession.shared.data(for: request)
let status = (response as? HTTPURLResponse)?.statusCode ?? 0
guard status == 200 else {{
    let text = String(decoding: data, as: UTF8.self)
    FileHandle.standardError.write(Data("HTTP \\(status): \\(text)\\n".utf8))
    exit(1)
}}

let result = try JSONDecoder().decode(ChatResponse.self, from: data)
print(result.choices.first?.message.content ?? "")
"""


def _dart(r: _Request) -> str:
    return f"""// pubspec.yaml: dependencies: http: ^1.2.0
import 'dart:convert';
import 'dart:io';

import 'package:http/http.dart' as http;

Future<void> main() async {{
  final response = await http.post(
    Uri.parse({dart_string(r.chat_url)}),
    headers: {{
      'Authorization': 'Bearer {API_KEY}',
      'Content-Type': 'application/json',
    }},
    body: jsonEncode({{
      'model': {dart_string(r.model)},
      'messages': [
        {{'role': 'user', 'content': {dart_string(MESSAGE)}}},
      ],
    }}),
  );
  final body = utf8.decode(response.bodyBytes);
  if (response.statusCode != 200) {{
    stderr.writeln('HTTP ${{response.statusCode}}: $body');
    exit(1);
  }}

  final data = jsonDecode(body) as Map<String, dynamic>;
  print(data['choices'][0]['message']['content']);
}}
"""


def _c_libcurl(r: _Request) -> str:
    lines = r.body_lines()
    # One literal a field; C joins adjacent literals. Only the separators' spaces differ.
    literals = [c_string(line + (" " if line.endswith(",") else "")) for line in lines]
    body = "\n        ".join(literals)
    return f"""/* Build: gcc main.c -o main -lcurl */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>

struct buffer {{
    char *data;
    size_t size;
}};

/* Appends each piece of the response body to the buffer. */
static size_t collect(char *chunk, size_t size, size_t count, void *userdata)
{{
    struct buffer *buffer = userdata;
    size_t length = size * count;
    char *grown = realloc(buffer->data, buffer->size + length + 1);
    if (grown == NULL)
        return 0;
    memcpy(grown + buffer->size, chunk, length);
    buffer->data = grown;
    buffer->size += length;
    buffer->data[buffer->size] = '\\0';
    return length;
}}

int main(void)
{{
    const char *body =
        {body};
    struct buffer response = {{NULL, 0}};
    struct curl_slist *headers = NULL;
    long status = 0;
    int rc = 0;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *curl = curl_easy_init();
    if (curl == NULL) {{
        fprintf(stderr, "curl_easy_init failed\\n");
        return 1;
    }}
    headers = curl_slist_append(headers, "Authorization: Bearer {API_KEY}");
    headers = curl_slist_append(headers, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, {c_string(r.chat_url)});
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response);

    CURLcode result = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (result != CURLE_OK) {{
        fprintf(stderr, "request failed: %s\\n", curl_easy_strerror(result));
        rc = 1;
    }} else if (status != 200) {{
        fprintf(stderr, "HTTP %ld: %s\\n", status, response.data ? response.data : "");
        rc = 1;
    }} else {{
        /* The answer is choices[0].message.content; parse it with a JSON library such as cJSON. */
        printf("%s\\n", response.data);
    }}

    free(response.data);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    curl_global_cleanup();
    return rc;
}}
"""


# --- Anthropic Messages -------------------------------------------------------------------------


def _anthropic_max_tokens(card: ModelCard) -> int:
    # A thinking model spends part of the budget on its reasoning before it answers.
    return 4096 if card.thinking != "none" else 1024


def _python_anthropic(r: _Request, max_tokens: int) -> str:
    return f"""import anthropic

client = anthropic.Anthropic(base_url={json_string(r.anthropic_base)}, api_key="{API_KEY}")

message = client.messages.create(
    model={json_string(r.model)},
    max_tokens={max_tokens},
    messages=[{{"role": "user", "content": {json_string(MESSAGE)}}}],
)
print("".join(block.text for block in message.content if block.type == "text"))
"""


def _curl_anthropic(r: _Request, max_tokens: int) -> str:
    return f"""curl {shlex.quote(r.messages_url)} \\
  -H "x-api-key: {API_KEY}" \\
  -H "anthropic-version: {ANTHROPIC_VERSION}" \\
  -H "Content-Type: application/json" \\
  -d {_indent(shlex.quote(r.body_json(max_tokens=max_tokens)), "  ")}
"""


# --- The lists a model page shows ---------------------------------------------------------------

_CHAT: tuple[tuple[str, str, str, Callable[[_Request], str]], ...] = (
    ("curl", "cURL", "bash", _curl),
    ("python-requests", "Python (requests)", "python", _python_requests),
    ("python-openai", "Python (OpenAI SDK)", "python", _python_openai),
    ("node-axios", "Node.js (axios)", "javascript", _node_axios),
    ("go", "Go", "go", _go),
    ("rust", "Rust (reqwest)", "rust", _rust),
    ("java-okhttp", "Java (OkHttp)", "java", _java_okhttp),
    ("csharp-httpclient", "C# (HttpClient)", "csharp", _csharp_httpclient),
    ("csharp-restsharp", "C# (RestSharp)", "csharp", _csharp_restsharp),
    ("php-guzzle", "PHP (Guzzle)", "php", _php_guzzle),
    ("php-curl", "PHP (cURL)", "php", _php_curl),
    ("ruby", "Ruby", "ruby", _ruby),
    ("swift", "Swift", "swift", _swift),
    ("dart", "Dart", "dart", _dart),
    ("c-libcurl", "C (libcurl)", "c", _c_libcurl),
    ("curl-stream", "cURL (streaming)", "bash", _curl_stream),
    ("python-openai-stream", "Python (OpenAI SDK, streaming)", "python", _python_openai_stream),
)


def serves_anthropic(card: ModelCard) -> bool:
    """Whether the Anthropic Messages door serves this model: every catalog model, for now."""
    return True


def code_samples(base_url: str, card: ModelCard) -> list[Sample]:
    """The chat-completion samples in every language, the streaming ones, then the Anthropic
    Messages ones; `base_url` is the server's public URL without a trailing slash."""
    request = _Request(base_url.rstrip("/"), card.id)
    samples = [Sample(key, label, syntax, build(request)) for key, label, syntax, build in _CHAT]
    if serves_anthropic(card):
        max_tokens = _anthropic_max_tokens(card)
        samples += [
            Sample(
                "python-anthropic",
                "Python (Anthropic SDK)",
                "python",
                _python_anthropic(request, max_tokens),
            ),
            Sample(
                "curl-anthropic",
                "cURL (Anthropic Messages)",
                "bash",
                _curl_anthropic(request, max_tokens),
            ),
        ]
    return samples


# --- Agent recipes ------------------------------------------------------------------------------


def output_limit(card: ModelCard) -> int:
    """The output cap the agents are told: the card's, else 8,192 tokens or a quarter of the
    context window, whichever is smaller (an agent that reserves the whole window for its
    answer has no room left for the conversation)."""
    return card.max_output_tokens or min(8192, card.context_length // 4)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def _openclaw(r: _Request, card: ModelCard) -> str:
    model: dict[str, Any] = {
        "id": card.id,
        "name": card.name,
        "reasoning": card.thinking != "none",
        "input": ["text"],
        "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
        "contextWindow": card.context_length,
        "maxTokens": output_limit(card),
    }
    if card.thinking == "hybrid":
        # OpenClaw's --thinking switch reaches a hybrid Qwen3 model as
        # chat_template_kwargs.enable_thinking, which the server honours.
        model["compat"] = {"thinkingFormat": "qwen-chat-template"}
    config = {
        "models": {
            "providers": {
                PROVIDER: {
                    "baseUrl": r.openai_base,
                    "apiKey": API_KEY,
                    "api": "openai-completions",
                    "models": [model],
                }
            }
        },
        "agents": {"defaults": {"model": {"primary": f"{PROVIDER}/{card.id}"}}},
    }
    return _pretty(config)


def _opencode(r: _Request, card: ModelCard) -> str:
    config = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            PROVIDER: {
                "npm": "@ai-sdk/openai-compatible",
                "name": PROVIDER,
                "options": {"baseURL": r.openai_base, "apiKey": API_KEY},
                "models": {
                    card.id: {
                        "name": card.name,
                        "tool_call": "tools" in card.supported_parameters,
                        "reasoning": card.thinking != "none",
                        "limit": {"context": card.context_length, "output": output_limit(card)},
                    }
                },
            }
        },
        "model": f"{PROVIDER}/{card.id}",
        "small_model": f"{PROVIDER}/{card.id}",
    }
    return _pretty(config)


def _claude_code(r: _Request, card: ModelCard) -> str:
    model = shlex.quote(card.id)
    return f"""export ANTHROPIC_BASE_URL={shlex.quote(r.anthropic_base)}
export ANTHROPIC_AUTH_TOKEN={API_KEY}
export ANTHROPIC_MODEL={model}
export ANTHROPIC_SMALL_FAST_MODEL={model}
export ANTHROPIC_DEFAULT_HAIKU_MODEL={model}
# The model's real window and output cap (Claude Code otherwise assumes Claude's).
export CLAUDE_CODE_MAX_CONTEXT_TOKENS={card.context_length}
export CLAUDE_CODE_MAX_OUTPUT_TOKENS={output_limit(card)}
# No telemetry, error reports or update checks: only this server is contacted.
export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1
claude
"""


def agent_recipes(base_url: str, card: ModelCard) -> list[Sample]:
    """How to point OpenClaw, OpenCode and Claude Code at this model, in the shapes each agent
    was seen to read (the team's notes on real clients: notes/real-clients.md)."""
    request = _Request(base_url.rstrip("/"), card.id)
    return [
        Sample("openclaw", "OpenClaw", "json", _openclaw(request, card)),
        Sample("opencode", "OpenCode", "json", _opencode(request, card)),
        Sample("claude-code", "Claude Code", "bash", _claude_code(request, card)),
    ]
