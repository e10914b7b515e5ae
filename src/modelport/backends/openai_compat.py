"""The backend for every OpenAI-compatible upstream: vLLM, SGLang, llama.cpp's server, Ollama,
hosted providers. Only the HTTP lives here (over `http1/`, a lean HTTP/1.1 client); building
the body, parsing the stream and mapping errors is pure code in `protocols/openai/`
(`upstream_request.py`, `sse.py`, `upstream_stream.py`, `upstream_errors.py`), and the
differences between upstreams are rows in `protocols/openai/dialects.py`.

A streaming client's request goes upstream as a stream with a usage chunk; a client that reads
only the whole answer gets it from one upstream JSON body. Both are translated into the same
canonical events, and a non-streaming client answer is `collect()` over them. Usage leaves
only as `Usage` events; when an upstream reports none, the metering stage asks this backend to
count (`count_tokens`, `count_text`: `upstream_tokens.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec

from modelport.backends import http1
from modelport.backends.base import CallContext
from modelport.backends.engine_tokenize import TOKENIZE_SECONDS, EngineTokenizer
from modelport.backends.upstream_tokens import UpstreamTokens, count_off_loop, qwen3_prompt
from modelport.core.batches import batched, flat
from modelport.core.catalog import ConfigError, ModelCard, OpenAICompatBackend
from modelport.core.errors import (
    ModelportError,
    UpstreamError,
    UpstreamTimeout,
    reveals_internals,
)
from modelport.core.events import (
    Event,
    Logprobs,
    ReasoningDelta,
    Start,
    Stop,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from modelport.core.reasoning import thinking_budget
from modelport.core.tokens import estimate_tokens
from modelport.core.types import ChatRequest, ResponseFormat, ToolChoice
from modelport.parsers.base import Reasoning
from modelport.parsers.relay import (
    ParsedRelay,
    ReasoningCounter,
    answer_parser_for,
    call_checker_for,
    output_parser_for,
)
from modelport.parsers.think import CLOSE_TAG, ThinkParser
from modelport.protocols.openai.dialects import DIALECTS, budget_method
from modelport.protocols.openai.sse import SSEParser
from modelport.protocols.openai.upstream_errors import SERVER, error_for_status
from modelport.protocols.openai.upstream_request import (
    build_completion_body,
    build_request_body,
    encode_request_body,
)
from modelport.protocols.openai.upstream_stream import StreamTranslator

log = logging.getLogger("modelport.backends.openai_compat")
T = TypeVar("T")

MAX_ERROR_BODY = 64 * 1024
# A whole (non-streamed) answer is held in memory to be parsed: a body larger than this is a
# broken upstream (a stream's events are bounded by `sse.MAX_SSE_LINE` the same way).
MAX_JSON_BODY = 64 * 1024 * 1024
# uvicorn (vLLM, SGLang) closes idle connections after 5 s; dropping ours sooner avoids
# sending a request down a connection the upstream is closing.
KEEPALIVE_SECONDS = 4.0
# After `[DONE]`, how long to wait for the end of the HTTP body so the connection can be reused.
DRAIN_SECONDS = 1.0
PROBE_SECONDS = 5.0  # an active probe's answer may take this long after connecting


def _display_url(url: str) -> str:
    """The URL without credentials or query string, for messages and names."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


class OpenAICompatEngine:
    """One upstream serving one model card, over one pool of keep-alive connections."""

    def __init__(
        self, config: OpenAICompatBackend, card: ModelCard, *, api_key: str | None
    ) -> None:
        self.config = config
        self.card = card
        self.name = config.name or f"openai_compat:{_host_port(config.url)}"
        self._rules = DIALECTS[config.dialect]
        self._model = config.upstream_model or card.id
        base = config.url.rstrip("/")
        self._endpoints = {"chat": base + "/chat/completions", "text": base + "/completions"}
        self._where = _display_url(base)
        root = base.removesuffix("/v1")  # where engines serve their non-OpenAI endpoints
        try:
            self._budget = budget_method(
                self._rules, config.thinking_budget, dialect=config.dialect
            )
        except ValueError as exc:
            raise ConfigError(f"backend {self.name} of {card.id}: thinking_budget: {exc}") from None
        self._secret = api_key or None
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        headers.update(config.headers)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._headers = headers
        self._read_timeout = config.timeout if config.read_timeout is None else config.read_timeout
        self._client: http1.Client | None = None
        self._prepared: dict[str, http1.Request] = {}
        engine = None
        if self._rules.tokenize is not None:
            engine = EngineTokenizer(
                self._rules,
                root=root,
                headers=self._headers,
                client=self._http,
                where=_display_url(root),
                timeout=min(TOKENIZE_SECONDS, config.timeout),
            )
        self._tokens = UpstreamTokens(
            config, card, self._rules, engine=engine, model=self._model, name=self.name
        )

    async def start(self) -> None:
        """Loads the model's tokenizers (ConfigError for a configured tokenizer or chat
        template that cannot be read) and opens the connection pool."""
        await self._tokens.load()
        await self._http()

    async def _http(self) -> http1.Client:
        if self._client is None:
            # No connection limit: every stream holds a connection; admission limits concurrency.
            self._client = http1.Client(
                connect_timeout=self.config.connect_timeout,
                read_timeout=self._read_timeout,
                total_timeout=self.config.timeout,
                keepalive=KEEPALIVE_SECONDS,
                headers={"User-Agent": "modelport"},
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def stream(self, request: ChatRequest, ctx: CallContext) -> AsyncGenerator[Event, None]:
        """Events for one completion; raises `core.errors` types (before or after `Start`).

        Closing the generator early closes the upstream response, so the upstream sees the
        disconnect and stops generating. With `parse_output`, the upstream's text is the
        model's raw output and goes through modelport's Qwen3 parsers. A thinking budget on an
        upstream without a budget parameter takes Qwen's two passes (`_two_pass`).
        """
        if self._fits_later(request):
            return self._fitted(request, ctx, self._dispatch)
        return self._dispatch(request, ctx)

    def stream_batches(
        self, request: ChatRequest, ctx: CallContext
    ) -> AsyncGenerator[list[Event], None]:
        """`stream`'s events, a batch per read of the upstream's body (`BatchingBackend`).
        Answers that go through a parser or a second pass come one event per batch."""
        if self._fits_later(request):
            return self._fitted(request, ctx, self._dispatch_batches)
        return self._dispatch_batches(request, ctx)

    def _fits_later(self, request: ChatRequest) -> bool:
        limit = request.max_output_tokens
        return limit is not None and limit > self.card.context_length // 2

    async def _fitted(
        self,
        request: ChatRequest,
        ctx: CallContext,
        dispatch: Callable[[ChatRequest, CallContext], AsyncGenerator[T, None]],
    ) -> AsyncGenerator[T, None]:
        """A large max_tokens (Claude Code asks for 128000) lowered to what the context leaves
        after the prompt: engines refuse prompt + max_tokens beyond their context. The prompt's
        size is the metering stage's count from admission when it made one, else counted here
        in-process (no network round trip before the request goes out), else estimated; a
        prompt that alone fills the context is left for the upstream to refuse."""
        prompt = ctx.prompt_tokens
        if prompt is None:
            prompt = await self.count_tokens(request, local_only=True)
        if prompt is None:
            prompt = estimate_tokens(request)
        room = self.card.context_length - prompt
        limit = request.max_output_tokens
        if limit is not None and 0 < room < limit:
            request = msgspec.structs.replace(request, max_output_tokens=room)
        async with aclosing(dispatch(request, ctx)) as events:
            async for event in events:
                yield event

    def _dispatch(self, request: ChatRequest, ctx: CallContext) -> AsyncGenerator[Event, None]:
        wrapped = self._wrapped(request, ctx)
        return self._stream(request, ctx) if wrapped is None else wrapped

    def _dispatch_batches(
        self, request: ChatRequest, ctx: CallContext
    ) -> AsyncGenerator[list[Event], None]:
        wrapped = self._wrapped(request, ctx)
        if wrapped is None:
            return self._exchange_batches("chat", self._chat_body(request, ctx), ctx)
        return batched(wrapped)

    def _wrapped(
        self, request: ChatRequest, ctx: CallContext
    ) -> AsyncGenerator[Event, None] | None:
        """The stream when the upstream's output goes through modelport's parsers, a
        reasoning counter or Qwen's two passes; None when it is relayed as it comes."""
        if self._budget == "two_pass":
            budget = thinking_budget(self.card, request)
            if budget is not None:
                relay = ParsedRelay(answer_parser_for(self.card, request), request)
                return _parsed(self._two_pass(request, ctx, budget), relay)
        if self.config.parse_output:
            parser = output_parser_for(self.card, request, preopened=self.card.thinking == "always")
        else:
            parser = call_checker_for(request)
        counter = self._reasoning_counter(request)
        if parser is None:
            if counter is not None:
                return _counted(self._stream(request, ctx), counter)
            return None  # no extra generator hop on the hot path
        return _parsed(self._stream(request, ctx), ParsedRelay(parser, request, counter=counter))

    async def count_tokens(self, request: ChatRequest, *, local_only: bool = False) -> int | None:
        """The prompt tokens of `request` as the upstream will count them, or None where that
        cannot be known exactly (`upstream_tokens.py` lists the sources). Qwen3-Coder's
        template lays out tools differently from Qwen3's, so with tools its count is close
        rather than exact. `local_only`: no network round trip (the engine's own endpoints
        are not asked). Never raises."""
        return await self._tokens.count_tokens(request, local_only=local_only)

    async def count_text(self, text: str, *, local_only: bool = False) -> int | None:
        """Tokens in generated `text` as the upstream's tokenizer counts it, or None."""
        return await self._tokens.count_text(text, local_only=local_only)

    def _reasoning_counter(self, request: ChatRequest) -> ReasoningCounter | None:
        """For a thinking request: counts reasoning tokens when the upstream reports none
        (Qwen3's tokenizer, loaded at start-up for Qwen3 models)."""
        qwen3 = self._tokens.qwen3
        if not self.card.thinks(request.reasoning) or qwen3 is None:
            return None
        return ReasoningCounter(qwen3.count, preopened=self.card.thinking == "always")

    def _stream(self, request: ChatRequest, ctx: CallContext) -> AsyncGenerator[Event, None]:
        return self._exchange("chat", self._chat_body(request, ctx), ctx)

    def _chat_body(self, request: ChatRequest, ctx: CallContext) -> dict[str, Any]:
        # A client that reads only the whole answer gets it from one upstream JSON body: fewer
        # packets and less parsing than a stream, and the same events come out.
        return build_request_body(
            request,
            model=self._model,
            rules=self._rules,
            context_length=self.card.context_length,
            stream=ctx.incremental,
            thinking_budget=(
                thinking_budget(self.card, request) if self._budget == "parameter" else None
            ),
            enable_thinking=self.card.thinking_switch(request.reasoning),
        )

    def _exchange(
        self,
        endpoint: str,
        body: dict[str, Any],
        ctx: CallContext,
        *,
        start: bool = True,
    ) -> AsyncGenerator[Event, None]:
        """`_exchange_batches`' events one at a time."""
        return flat(self._exchange_batches(endpoint, body, ctx, start=start))

    async def _exchange_batches(
        self,
        endpoint: str,
        body: dict[str, Any],
        ctx: CallContext,
        *,
        start: bool = True,
    ) -> AsyncGenerator[list[Event], None]:
        """One upstream call: POST `body` to `endpoint` ("chat" or "text") and translate the
        answer into events, a batch per read of its body, `Start` first (alone, so that the
        client's response begins at once) unless `start` is False. The upstream's usage comes
        out as one `Usage` event before `Stop`, when it sent any."""
        try:
            response = await self._post(encode_request_body(body), endpoint, ctx.trace_id)
            complete = False
            try:
                if response.status >= 300:
                    raise error_for_status(
                        response.status,
                        await self._read_error_body(response),
                        upstream=self._where,
                        model=self._model,
                        retry_after=response.headers.get("retry-after"),
                        now=time.time(),
                    )
                translator = StreamTranslator(upstream=self._where, model=self._model)
                if response.content_type == "application/json":
                    # A whole answer: asked for, or from an upstream that ignores `stream`.
                    events = translator.feed(None, await self._read(response))
                    events += translator.finish()
                    if start:
                        events.insert(0, Start(model=self.card.id, backend=self.name))
                    yield events
                else:
                    # The upstream accepted the request: start now, so the client's response
                    # headers go out while the first token is still being generated.
                    if start:
                        yield [Start(model=self.card.id, backend=self.name)]
                    async with aclosing(self._events(response, translator)) as batches:
                        async for batch in batches:
                            yield batch
                complete = True
                if translator.done and not response.complete:
                    await self._drain(response)
            finally:
                if complete and response.complete:
                    response.release()  # back to the pool for the next request
                else:
                    response.close()  # drop the connection: the upstream sees the disconnect
        except ModelportError as exc:
            raise self._scrub(exc, ctx) from None

    async def _two_pass(
        self, request: ChatRequest, ctx: CallContext, budget: int
    ) -> AsyncGenerator[Event, None]:
        """Qwen's two-pass thinking budget, for upstreams without a budget parameter.

        Pass 1 is the chat request with max_tokens = the budget and `</think>` as its stop
        string: the model thinks until it closes the block or the budget runs out, and its
        reasoning streams to the client as it comes. Pass 2 renders the conversation with
        Qwen3's template (`protocols/qwen3/prompt.py`), appends the reasoning in a closed think
        block (after a line telling the model to answer now, when the budget cut it off), and
        continues over /completions with max_tokens = what is left of the output limit. Its
        raw text is the answer, parsed for tool calls in the card's format. Usage is one
        answer's: pass 1's prompt, both passes' generated tokens, pass 1's as reasoning.
        An upstream that answers within pass 1 (it ignored the stop string) is relayed as is.
        """
        card, rules = self.card, self._rules
        preopened = card.thinking == "always"
        first: Usage | None = None
        finish: Stop | None = None
        reasoning: list[str] = []
        answered = False
        if budget > 0:
            thinking = msgspec.structs.replace(
                request,
                max_output_tokens=budget,
                sampling=msgspec.structs.replace(request.sampling, stop=(CLOSE_TAG,)),
                # The answer's constraints wait for pass 2: they would stop the thinking.
                response_format=ResponseFormat(),
                tool_choice=(
                    ToolChoice("auto")
                    if request.tool_choice.mode in ("required", "named")
                    else request.tool_choice
                ),
                logprobs=False,
                top_logprobs=None,
            )
            body = build_request_body(
                thinking,
                model=self._model,
                rules=rules,
                context_length=card.context_length,
                stream=ctx.incremental,
                enable_thinking=card.thinking_switch(request.reasoning),
            )
            # Raw text opens with the tag on hybrid models; an upstream's reasoning parser
            # took the tags away, so text it did not label reasoning is reasoning still (the
            # stop string ended the output before the block closed).
            splitter = ThinkParser(
                "open" if self.config.parse_output and not preopened else "preopened"
            )
            labelled = False
            async with aclosing(self._exchange("chat", body, ctx)) as events:
                async for event in events:
                    if isinstance(event, ReasoningDelta):
                        labelled = True
                        reasoning.append(event.text)
                        yield event
                    elif isinstance(event, TextDelta):
                        if labelled and not self.config.parse_output:
                            answered = True
                            yield event
                            continue
                        for piece in splitter.feed(event.text):
                            if isinstance(piece, Reasoning):
                                reasoning.append(piece.text)
                                yield ReasoningDelta(0, piece.text)
                            else:
                                answered = True
                                yield TextDelta(0, piece.text)
                    elif isinstance(event, ToolCallStart | ToolCallDelta):
                        answered = True
                        yield event
                    elif isinstance(event, Usage):
                        first = event
                    elif isinstance(event, Stop):
                        finish = event
                    elif not isinstance(event, Logprobs):
                        yield event  # Start
            for piece in splitter.finish():
                if isinstance(piece, Reasoning):
                    reasoning.append(piece.text)
                    yield ReasoningDelta(0, piece.text)
                else:
                    answered = True
                    yield TextDelta(0, piece.text)
            if answered or finish is None:
                for held in (first, finish):
                    if held is not None:
                        yield held
                return
        thought = "".join(reasoning).strip("\n")
        if finish is not None and finish.finish_reason == "length":
            thought += TIME_IS_UP
        prompt = qwen3_prompt(request, enable_thinking=None, preopened=preopened)
        prompt += ("" if preopened else OPEN_THINK) + thought + "\n</think>\n\n"
        if first is not None:
            used = first.completion_tokens
        else:  # an upstream that sent no usage for pass 1
            qwen3 = self._tokens.qwen3
            used = await count_off_loop(qwen3.count, thought) if qwen3 is not None else 0
        limit = request.max_output_tokens or card.max_output_tokens
        left = None if limit is None else limit - used
        if left is not None and left < 1:
            # The budget took the whole output limit: the thinking is the answer, cut off.
            if budget == 0:
                yield Start(model=card.id, backend=self.name)
            yield _one_answer(first, None, used)
            yield Stop("length", "length")
            return
        body = build_completion_body(
            request,
            model=self._model,
            rules=rules,
            prompt=prompt,
            max_tokens=left,
            stream=ctx.incremental,
        )
        async with aclosing(self._exchange("text", body, ctx, start=budget == 0)) as events:
            async for event in events:
                yield _one_answer(first, event, used) if isinstance(event, Usage) else event

    async def _post(
        self, body: bytes, endpoint: str = "chat", request_id: str | None = None
    ) -> http1.Response:
        client = self._client
        if client is None:  # used without start(): load the tokenizers too, as start would
            await self._tokens.ready()
            client = await self._http()
        prepared = self._prepared.get(endpoint)
        if prepared is None:
            try:
                prepared = client.prepare("POST", self._endpoints[endpoint], self._headers)
                self._prepared[endpoint] = prepared
            except ValueError as exc:
                raise UpstreamError(
                    f"the request to {SERVER} failed",
                    detail=f"request to upstream {self._where} failed: {exc}",
                ) from None
        # The client's request id goes upstream too (core/trace.py admits only safe ids).
        extra = b"X-Request-Id: %s\r\n" % request_id.encode() if request_id else b""
        try:
            return await client.send(prepared, body, extra)
        except http1.ConnectionClosed:
            # A fresh connection closed before any answer (a pooled one is retried by http1).
            raise UpstreamError(
                f"{SERVER} closed the connection before answering",
                detail=f"upstream {self._where} closed the connection before answering",
            ) from None
        except http1.HTTPClientError as exc:
            raise self._transport_error(exc, answered=False) from None

    async def _events(
        self, response: http1.Response, translator: StreamTranslator
    ) -> AsyncGenerator[list[Event], None]:
        """Batches of events as SSE data arrives, one per read of the body (a busy upstream's
        read holds many events) and never empty, the last one ending with the usage and the
        `Stop` (`translator.finish()`); stops at `[DONE]` or the end of the body. Events
        before an error (one the upstream sent in the stream, or a stream cut short) still go
        out, then the error is raised."""
        parser = SSEParser()
        feed = translator.feed
        events: list[Event] = []
        try:
            try:
                async for chunk in response:
                    for name, data in parser.feed(chunk):
                        events += feed(name, data)
                        if translator.done:
                            break
                    if translator.done:
                        break
                    if events:
                        yield events
                        events = []
                else:
                    for name, data in parser.close():
                        events += feed(name, data)
            except http1.HTTPClientError as exc:
                if not translator.finished or not isinstance(
                    exc,
                    http1.ConnectionClosed
                    | http1.ProtocolError
                    | http1.ReadTimeout
                    | http1.TotalTimeout,
                ):
                    raise self._transport_error(exc, answered=True) from None
                # Cut, or stalled, after the answer was complete: only [DONE] and usage were
                # lost (the metering stage counts what the usage would have said).
            events += translator.finish()
            yield events
        except ModelportError:
            if events:
                yield events
            raise

    async def probe(self) -> None:
        """An active probe (`Probeable`): GET {url}/models. Any answer below 500 means the
        server is up (some engines serve no model list, or want a key it has not got); a
        5xx, a timeout or no connection raise."""
        client = await self._http()
        url = self._endpoints["chat"].removesuffix("/chat/completions") + "/models"
        try:
            async with asyncio.timeout(self.config.connect_timeout + PROBE_SECONDS):
                response = await client.request("GET", url, headers=self._headers)
                try:
                    await self._read_error_body(response)
                finally:
                    response.close()
        except TimeoutError:
            raise UpstreamTimeout(
                f"{SERVER} did not answer a probe in time",
                detail=f"probe GET {_display_url(url)}: no answer within "
                f"{self.config.connect_timeout + PROBE_SECONDS:g} s",
            ) from None
        except http1.HTTPClientError as exc:
            raise self._transport_error(exc, answered=False) from None
        if response.status >= 500:
            raise UpstreamError(
                f"{SERVER} failed a probe (HTTP {response.status})",
                detail=f"probe GET {_display_url(url)}: HTTP {response.status}",
            )

    async def _read(self, response: http1.Response) -> bytes:
        """The whole body, at most MAX_JSON_BODY bytes: an upstream that declares or sends
        more (a body that never ends) is abandoned as soon as that is known."""
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_JSON_BODY:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        try:
            while chunk := await response.next_chunk():
                size += len(chunk)
                if size > MAX_JSON_BODY:
                    raise self._too_large()
                chunks.append(chunk)
        except http1.HTTPClientError as exc:
            raise self._transport_error(exc, answered=True) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _too_large(self) -> UpstreamError:
        return UpstreamError(
            f"{SERVER} sent an answer larger than {MAX_JSON_BODY >> 20} MiB",
            detail=f"upstream {self._where} sent an answer larger than {MAX_JSON_BODY} bytes",
        )

    async def _read_error_body(self, response: http1.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            while size < MAX_ERROR_BODY:
                chunk = await response.next_chunk()
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except http1.HTTPClientError:
            pass  # the status alone still says what went wrong
        return b"".join(chunks)[:MAX_ERROR_BODY]

    async def _drain(self, response: http1.Response) -> None:
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                while await response.next_chunk():
                    pass
        except (http1.HTTPClientError, TimeoutError):
            pass

    def _transport_error(self, exc: http1.HTTPClientError, *, answered: bool) -> ModelportError:
        """A transport failure as a client may see it (what happened, with the timeout that
        ran out), the upstream's address and the low-level reason in the `detail`."""
        where = self._where
        if isinstance(exc, http1.ConnectTimeout):
            seconds = self.config.connect_timeout
            return UpstreamTimeout(
                f"{SERVER} did not accept a connection within {seconds:g}s",
                detail=f"upstream {where} did not accept a connection within {seconds:g}s",
            )
        if isinstance(exc, http1.ReadTimeout):
            return UpstreamTimeout(
                f"{SERVER} timed out: it sent nothing for {self._read_timeout:g}s",
                detail=f"upstream {where} sent nothing for {self._read_timeout:g}s",
            )
        if isinstance(exc, http1.TotalTimeout):
            return UpstreamTimeout(
                f"{SERVER} timed out: it did not finish within {self.config.timeout:g}s",
                detail=f"upstream {where} did not finish within {self.config.timeout:g}s",
            )
        if isinstance(exc, http1.ConnectError):
            return UpstreamError(
                f"cannot reach {SERVER}", detail=f"cannot reach upstream {where}: {exc.reason}"
            )
        if isinstance(exc, http1.ConnectionClosed):
            when = "mid-response" if answered else "before answering"
            return UpstreamError(
                f"{SERVER} closed the connection {when}",
                detail=f"upstream {where} closed the connection {when}",
            )
        if isinstance(exc, http1.ProtocolError):
            return UpstreamError(
                f"{SERVER} sent a malformed HTTP response",
                detail=f"upstream {where} sent a malformed HTTP response: {exc}",
            )
        return UpstreamError(
            f"the request to {SERVER} failed",
            detail=f"request to upstream {where} failed: {type(exc).__name__}: {exc}",
        )

    def _scrub(self, exc: ModelportError, ctx: CallContext) -> ModelportError:
        """An error on its way out of this backend, made fit for a client
        (`upstream_errors`' rule): the request id attached, a message that still reveals
        internals (one this module did not word, such as a stream chunk it could not read)
        replaced by a generic one, the upstream key removed even if an upstream echoes it, and
        the whole story (address, status, raw text) written to the log in one line with the
        request id. Once per error."""
        if exc.request_id is not None:
            return exc
        if self._secret:
            exc.message = exc.message.replace(self._secret, "***")
            if exc.detail is not None:
                exc.detail = exc.detail.replace(self._secret, "***")
        if exc.detail is None:
            exc.detail = f"upstream {self._where}: {exc.message}"
            if reveals_internals(exc.message):
                exc.message = f"{SERVER} failed"
        exc.args = (exc.message,)
        # The id the client can quote: its X-Request-Id (the routing stage logs the failure
        # once, with the detail, under the same id).
        exc.request_id = ctx.trace_id or ctx.request_id
        return exc


async def _parsed(
    events: AsyncGenerator[Event, None], relay: ParsedRelay
) -> AsyncGenerator[Event, None]:
    async with aclosing(events):
        async for event in events:
            for parsed in relay.feed(event):
                yield parsed


# Appended to reasoning the budget cut off, so that pass 2 answers rather than thinking on.
TIME_IS_UP = "\n\nI have run out of time to think, so I will answer now with what I have."
OPEN_THINK = "<think>\n"


def _one_answer(first: Usage | None, second: Usage | None, thought_tokens: int) -> Usage:
    """The usage of a two-pass answer as the client sees one answer: pass 1's prompt (pass 2's
    prompt repeats it with the reasoning), every token generated, pass 1's as reasoning."""
    generated = second.completion_tokens if second is not None else 0
    if first is None:
        prompt = second.prompt_tokens if second is not None else 0
        cached = second.cached_tokens if second is not None else 0
    else:
        prompt, cached = first.prompt_tokens, first.cached_tokens
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=thought_tokens + generated,
        reasoning_tokens=thought_tokens,
        cached_tokens=cached,
    )


async def _counted(
    events: AsyncGenerator[Event, None], counter: ReasoningCounter
) -> AsyncGenerator[Event, None]:
    """Events as they are, with reasoning_tokens counted when the upstream reported none."""
    async with aclosing(events):
        async for event in events:
            if isinstance(event, ReasoningDelta):
                counter.labelled(event.text)
            elif isinstance(event, TextDelta):
                counter.raw(event.text)
            elif isinstance(event, Usage):
                event = counter.usage(event)
            yield event
