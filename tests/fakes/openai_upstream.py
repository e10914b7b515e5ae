"""A scripted OpenAI-compatible upstream: a real aiohttp server on 127.0.0.1, for tests.

It speaks the wire protocol (`POST /v1/chat/completions` and `POST /v1/completions`, each as
SSE or one JSON body, `GET /v1/models`), answers what a test scripted, and records every
request it received and whether the client went away mid-stream.

    async with FakeOpenAIUpstream() as fake:           # or: fake.start_in_thread() -> base URL
        fake.enqueue(Script(text=["Hel", "lo"], usage=(5, 2)))   # FIFO
        fake.on("MARKER", Script(status=429, headers={"Retry-After": "3"}))  # by prompt text
        ... call fake.base_url ...
        fake.requests[0].body["stream"]

With nothing scripted it echoes the last user message, with consistent usage.

It also serves the engines' own tokenizer endpoints at its root, tokenizing with a real
tokenizer (Qwen3's, by default) and rendering with a real Jinja chat template:

- llama.cpp's server: `POST /tokenize` `{"content", "add_special"}` -> `{"tokens"}` (BOS,
  when the fake has one, only with add_special) and `POST /apply-template` `{"messages", …}`
  -> `{"prompt"}` (a leading BOS text removed, as llama.cpp does when it adds BOS itself);
- llama-cpp-python's server: `POST /extras/tokenize` `{"input"}` -> `{"tokens"}`, BOS always.

    fake = FakeOpenAIUpstream(bos_id=151643)   # a model that adds BOS
    fake.tokenize_status = 500                 # every tokenizer endpoint fails so
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from jinja2.sandbox import ImmutableSandboxedEnvironment

# The chat template /apply-template renders with by default: ChatML, as SmolLM2's and Qwen's.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class ToolCallScript:
    name: str
    arguments: Sequence[str] = ("{}",)  # JSON text, in the fragments it is sent in
    id: str | None = None  # None: the fake sends no id (the client must make one)
    index: int | None = None  # None: its position among the tool calls


@dataclass(frozen=True)
class Script:
    """One scripted answer. Everything has a working default."""

    text: Sequence[str] = ()
    reasoning: Sequence[str] = ()
    tool_calls: Sequence[ToolCallScript] = ()
    finish_reason: str | None = None  # None: "tool_calls" if tool_calls else "stop"
    omit_finish_reason: bool = False
    stop_reason: int | str | None = None  # vLLM's extra field on the finish (chunk or choice)
    # (prompt, completion) or (prompt, completion, reasoning, cached); None: counted pieces.
    usage: tuple[int, ...] | None = None
    send_usage: bool = True  # when the client asked for it with stream_options
    reasoning_field: str = "reasoning_content"
    logprobs: bool = False  # one logprob entry per text piece
    delay: float = 0.0  # seconds before each chunk
    first_byte_delay: float = 0.0  # seconds before the response starts
    status: int = 200
    error_body: Any = None  # the body of a non-200 answer (JSON-able, or str)
    headers: Mapping[str, str] = field(default_factory=dict)
    error_after: int | None = None  # send `stream_error` after this many chunks
    stream_error: Any = field(
        default_factory=lambda: {
            "error": {"message": "the engine crashed", "type": "server_error", "code": 500}
        }
    )
    drop_after: int | None = None  # cut the connection after this many chunks
    send_done: bool = True
    linger_after_done: float = 0.0  # seconds between `[DONE]` and the end of the body
    crlf: bool = False  # \r\n line endings
    keepalives: bool = False  # an SSE comment before every chunk
    json_body: bool = False  # answer one JSON completion even when a stream was asked for


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    peer: tuple[str, int] | None = None  # the client's address: equal peers = a reused connection
    disconnected: bool = False  # the client went away before the answer was complete
    completed: bool = False  # the whole answer was written


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _last_user_text(body: Any) -> str:
    prompt = body.get("prompt") if isinstance(body, dict) else None
    if isinstance(prompt, str):
        return prompt  # a text completion: its whole prompt
    messages = body.get("messages") if isinstance(body, dict) else None
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _message_text(message)
    return ""


def echo_script(body: Any) -> Script:
    """The default answer: "Echo: <last user text>", one word per piece, usage counted in words."""
    words = _last_user_text(body).split()
    pieces = ["Echo:"] + [" " + word for word in words]
    messages = body.get("messages") if isinstance(body, dict) else None
    prompt = sum(len(_message_text(m).split()) for m in messages or [] if isinstance(m, dict))
    return Script(text=pieces, usage=(prompt, len(pieces)))


def qwen3_tokens(text: str) -> list[int]:
    """Qwen3's tokenizer (tiktoken over Qwen's ranks): the fake's default."""
    from modelport.tokenizers.qwen3 import qwen3_tokenizer

    tokenizer = qwen3_tokenizer()
    if tokenizer is None:
        raise RuntimeError("Qwen3's tokenizer is missing: run `make install`")
    return tokenizer.encode(text)


class FakeOpenAIUpstream:
    def __init__(
        self,
        *,
        models: Sequence[str] = ("fake-model",),
        tokenize: Callable[[str], list[int]] = qwen3_tokens,
        bos_id: int | None = None,
        bos_text: str = "<|endoftext|>",
        chat_template: str = CHATML_TEMPLATE,
    ) -> None:
        self.models = tuple(models)
        # The tokenizer endpoints: the tokenizer, the BOS the model adds (None: none) and its
        # text, and the template /apply-template renders.
        self.tokenize = tokenize
        self.bos_id = bos_id
        self.bos_text = bos_text
        self.chat_template = chat_template
        self.tokenize_status = 200  # another status: every tokenizer endpoint answers it
        self.tokenize_delay = 0.0  # seconds before a tokenizer endpoint answers
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()  # tests may script from another thread than the server's
        self._queue: deque[Script] = deque()
        self._marked: dict[str, Script] = {}
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = 0

    # ------------------------------------------------------------------ scripting

    def enqueue(self, *scripts: Script) -> None:
        """Answers for the next requests, in order (after marker matches)."""
        with self._lock:
            self._queue.extend(scripts)

    def on(self, marker: str, script: Script) -> None:
        """Answer `script` to every request whose last user message contains `marker`."""
        with self._lock:
            self._marked[marker] = script

    def off(self, marker: str) -> None:
        """Stop answering `marker`'s script (`on("", …)` scripts every request)."""
        with self._lock:
            self._marked.pop(marker, None)

    def chat_requests(self) -> int:
        """How many chat completion requests arrived."""
        with self._lock:
            return sum(1 for r in self.requests if r.path.endswith("/chat/completions"))

    def _script_for(self, body: Any) -> Script:
        text = _last_user_text(body)
        with self._lock:
            for marker, script in self._marked.items():
                if marker in text:
                    return script
            if self._queue:
                return self._queue.popleft()
        return echo_script(body)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def wait_disconnected(self, index: int = -1, within: float = 1.0) -> bool:
        """Whether request `index` saw the client go away, waiting up to `within` seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with self._lock:
                if self.requests and self.requests[index].disconnected:
                    return True
            await asyncio.sleep(0.01)
        return False

    # ------------------------------------------------------------------ running

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/apply-template", self._apply_template)
        app.router.add_post("/extras/tokenize", self._extras_tokenize)
        # handler_cancellation: a client that goes away cancels the handler, which records it.
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.1, access_log=None
        )
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeOpenAIUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start_in_thread(self) -> str:
        """Serve from a background thread with its own loop (for servers in a subprocess)."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="fake-openai-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake upstream did not start")
        return self.base_url

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    # ------------------------------------------------------------------ tokenizer endpoints

    async def _tokenizer_request(self, request: web.Request) -> tuple[Any, web.Response | None]:
        """The request's JSON body, recorded, and the scripted failure answer if any."""
        body: Any = json.loads(await request.read() or b"null")
        record = RecordedRequest(request.method, request.path, dict(request.headers), body)
        with self._lock:
            self.requests.append(record)
        if self.tokenize_delay:
            await asyncio.sleep(self.tokenize_delay)
        record.completed = True
        if self.tokenize_status != 200:
            failure = {"error": {"code": self.tokenize_status, "message": "scripted failure"}}
            return body, web.json_response(failure, status=self.tokenize_status)
        return body, None

    async def _tokenize(self, request: web.Request) -> web.Response:
        body, failure = await self._tokenizer_request(request)
        if failure is not None:
            return failure
        tokens = self.tokenize(body["content"])
        if body.get("add_special") and self.bos_id is not None:
            tokens = [self.bos_id, *tokens]
        return web.json_response({"tokens": tokens})

    async def _extras_tokenize(self, request: web.Request) -> web.Response:
        body, failure = await self._tokenizer_request(request)
        if failure is not None:
            return failure
        bos = [] if self.bos_id is None else [self.bos_id]
        return web.json_response({"tokens": bos + self.tokenize(body["input"])})

    async def _apply_template(self, request: web.Request) -> web.Response:
        body, failure = await self._tokenizer_request(request)
        if failure is not None:
            return failure
        template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        variables = dict(body.get("chat_template_kwargs") or {})
        # llama.cpp hands its template "" for null content (an assistant turn of tool calls).
        messages = [{**m, "content": m.get("content") or ""} for m in body["messages"]]
        variables.update(
            messages=messages,
            tools=body.get("tools"),
            add_generation_prompt=True,
            bos_token=self.bos_text,
        )
        prompt = template.from_string(self.chat_template).render(**variables)
        if self.bos_id is not None:
            prompt = prompt.removeprefix(self.bos_text)  # the tokenizer adds it
        return web.json_response({"prompt": prompt})

    # ------------------------------------------------------------------ handlers

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        record = RecordedRequest(
            request.method, request.path, dict(request.headers), body, tuple(peer) if peer else None
        )
        with self._lock:
            self.requests.append(record)
        script = self._script_for(body)
        try:
            if script.first_byte_delay:
                await asyncio.sleep(script.first_byte_delay)
            if script.status != 200:
                record.completed = True
                return self._error_response(script)
            stream = isinstance(body, dict) and bool(body.get("stream"))
            if not stream or script.json_body:
                record.completed = True
                return web.json_response(self._completion(script, body), headers=script.headers)
            return await self._stream(request, script, body, record)
        except (asyncio.CancelledError, ConnectionResetError):
            record.disconnected = True
            raise

    def _error_response(self, script: Script) -> web.Response:
        if isinstance(script.error_body, str):
            return web.Response(
                status=script.status, text=script.error_body, headers=script.headers
            )
        error_body = script.error_body
        if error_body is None:
            error_body = {"error": {"message": f"scripted {script.status}", "type": "error"}}
        return web.json_response(error_body, status=script.status, headers=script.headers)

    async def _stream(
        self, request: web.Request, script: Script, body: dict[str, Any], record: RecordedRequest
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **script.headers,
            }
        )
        await response.prepare(request)
        end = "\r\n" if script.crlf else "\n"
        options = body.get("stream_options") or {}
        chunks = self._chunks(
            script, bool(options.get("include_usage")), text_completion="prompt" in body
        )
        for sent, chunk in enumerate(chunks):
            if script.delay:
                await asyncio.sleep(script.delay)
            if script.error_after is not None and sent == script.error_after:
                await response.write(f"data: {json.dumps(script.stream_error)}{end}{end}".encode())
                record.completed = True
                return response
            if script.drop_after is not None and sent == script.drop_after:
                assert request.transport is not None
                request.transport.close()
                record.completed = True
                return response
            if script.keepalives:
                await response.write(f": keepalive{end}{end}".encode())
            await response.write(f"data: {json.dumps(chunk)}{end}{end}".encode())
        if script.send_done:
            await response.write(f"data: [DONE]{end}{end}".encode())
        if script.linger_after_done:
            await asyncio.sleep(script.linger_after_done)
        await response.write_eof()
        record.completed = True
        return response

    # ------------------------------------------------------------------ answers

    @staticmethod
    def _usage(script: Script) -> dict[str, Any]:
        if script.usage is not None:
            prompt, completion, *rest = script.usage
            reasoning = rest[0] if rest else 0
            cached = rest[1] if len(rest) > 1 else 0
        else:
            prompt = 1
            fragments = sum(len(call.arguments) for call in script.tool_calls)
            completion = len(script.text) + len(script.reasoning) + fragments
            reasoning, cached = len(script.reasoning), 0
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    @staticmethod
    def _finish(script: Script) -> str:
        if script.finish_reason is not None:
            return script.finish_reason
        return "tool_calls" if script.tool_calls else "stop"

    def _chunks(
        self, script: Script, include_usage: bool, *, text_completion: bool = False
    ) -> list[dict[str, Any]]:
        if text_completion:
            return self._text_chunks(script, include_usage)

        def chunk(delta: dict[str, Any], **extra: Any) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": None, **extra}
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "fake",
                "choices": [choice],
            }

        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({script.reasoning_field: piece}) for piece in script.reasoning]
        for position, piece in enumerate(script.text):
            extra: dict[str, Any] = {}
            if script.logprobs:
                alternatives = [{"token": piece, "logprob": -0.5, "bytes": list(piece.encode())}]
                extra["logprobs"] = {
                    "content": [
                        {
                            "token": piece,
                            "logprob": -0.5 - position,
                            "bytes": list(piece.encode()),
                            "top_logprobs": alternatives,
                        }
                    ]
                }
            chunks.append(chunk({"content": piece}, **extra))
        for position, call in enumerate(script.tool_calls):
            index = position if call.index is None else call.index
            for number, fragment in enumerate(call.arguments):
                entry: dict[str, Any] = {"index": index, "function": {"arguments": fragment}}
                if number == 0:
                    entry["type"] = "function"
                    entry["function"]["name"] = call.name
                    if call.id is not None:
                        entry["id"] = call.id
                chunks.append(chunk({"tool_calls": [entry]}))
        if not script.omit_finish_reason:
            extra = {"finish_reason": self._finish(script)}
            if script.stop_reason is not None:
                extra["stop_reason"] = script.stop_reason
            chunks.append(chunk({}, **extra))
        if include_usage and script.send_usage:
            usage_chunk = chunk({})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = self._usage(script)
            chunks.append(usage_chunk)
        return chunks

    def _text_chunks(self, script: Script, include_usage: bool) -> list[dict[str, Any]]:
        """`/v1/completions` chunks: the raw text in `choices[0].text` (reasoning and tool
        calls do not exist there: a script for it has only text)."""

        def chunk(text: str, finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
            return {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": 0,
                "model": "fake",
                "choices": [choice],
            }

        chunks = [chunk(piece) for piece in script.text]
        if not script.omit_finish_reason:
            chunks.append(chunk("", self._finish(script)))
        if include_usage and script.send_usage:
            usage_chunk = chunk("")
            usage_chunk["choices"] = []
            usage_chunk["usage"] = self._usage(script)
            chunks.append(usage_chunk)
        return chunks

    def _completion(self, script: Script, body: Any) -> dict[str, Any]:
        if isinstance(body, dict) and "prompt" in body:
            finish = None if script.omit_finish_reason else self._finish(script)
            text_choice = {"index": 0, "text": "".join(script.text), "finish_reason": finish}
            if script.stop_reason is not None:
                text_choice["stop_reason"] = script.stop_reason
            return {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": 0,
                "model": body.get("model", "fake"),
                "choices": [text_choice],
                "usage": self._usage(script),
            }
        message: dict[str, Any] = {"role": "assistant", "content": "".join(script.text) or None}
        if script.reasoning:
            message[script.reasoning_field] = "".join(script.reasoning)
        if script.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id or f"call_fake_{position}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": "".join(call.arguments)},
                }
                for position, call in enumerate(script.tool_calls)
            ]
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": None}
        if not script.omit_finish_reason:
            choice["finish_reason"] = self._finish(script)
            if script.stop_reason is not None:
                choice["stop_reason"] = script.stop_reason
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "fake") if isinstance(body, dict) else "fake",
            "choices": [choice],
            "usage": self._usage(script),
        }


def main() -> None:
    """`python -m tests.fakes.openai_upstream`: serve the echo upstream until interrupted."""
    fake = FakeOpenAIUpstream()
    print(fake.start_in_thread(), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop_thread()


if __name__ == "__main__":
    main()
