"""The backend for every OpenAI-compatible upstream: vLLM, SGLang, llama.cpp's server, Ollama,
hosted providers. Only the HTTP lives here (over `http1/`, a lean HTTP/1.1 client); building
the body, parsing the stream and mapping errors is pure code in `protocols/openai/`
(`upstream_request.py`, `sse.py`, `upstream_stream.py`, `upstream_errors.py`), and the
differences between upstreams are rows in `protocols/openai/dialects.py`.

A streaming client's request goes upstream as a stream with a usage chunk; a client that reads
only the whole answer gets it from one upstream JSON body. Both are translated into the same
canonical events, and a non-streaming client answer is `collect()` over them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from urllib.parse import urlsplit

from modelport.backends import http1
from modelport.backends.base import CallContext
from modelport.core.catalog import ModelCard, OpenAICompatBackend
from modelport.core.errors import ModelportError, UpstreamError, UpstreamTimeout
from modelport.core.events import Event, Start
from modelport.core.reasoning import thinking_budget
from modelport.core.types import ChatRequest
from modelport.parsers.relay import ParsedRelay, call_checker_for, output_parser_for
from modelport.protocols.openai.dialects import DIALECTS
from modelport.protocols.openai.sse import SSEParser
from modelport.protocols.openai.upstream_errors import error_for_status
from modelport.protocols.openai.upstream_request import build_request_body, encode_request_body
from modelport.protocols.openai.upstream_stream import StreamTranslator

MAX_ERROR_BODY = 64 * 1024
# uvicorn (vLLM, SGLang) closes idle connections after 5 s; dropping ours sooner avoids
# sending a request down a connection the upstream is closing.
KEEPALIVE_SECONDS = 4.0
# After `[DONE]`, how long to wait for the end of the HTTP body so the connection can be reused.
DRAIN_SECONDS = 1.0


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
        self._endpoint = base + "/chat/completions"
        self._where = _display_url(base)
        self._secret = api_key or None
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        headers.update(config.headers)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._headers = headers
        self._read_timeout = config.timeout if config.read_timeout is None else config.read_timeout
        self._client: http1.Client | None = None
        self._request: http1.Request | None = None

    async def start(self) -> None:
        if self._client is None:
            # No connection limit: every stream holds a connection; admission limits concurrency.
            self._client = http1.Client(
                connect_timeout=self.config.connect_timeout,
                read_timeout=self._read_timeout,
                total_timeout=self.config.timeout,
                keepalive=KEEPALIVE_SECONDS,
                headers={"User-Agent": "modelport"},
            )

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def stream(self, request: ChatRequest, ctx: CallContext) -> AsyncGenerator[Event, None]:
        """Events for one completion; raises `core.errors` types (before or after `Start`).

        Closing the generator early closes the upstream response, so the upstream sees the
        disconnect and stops generating. With `parse_output`, the upstream's text is the
        model's raw output and goes through modelport's Qwen3 parsers.
        """
        if self.config.parse_output:
            parser = output_parser_for(self.card, request, preopened=self.card.thinking == "always")
        else:
            parser = call_checker_for(request)
        if parser is None:
            return self._stream(request, ctx)  # no extra generator hop on the hot path
        return _parsed(self._stream(request, ctx), ParsedRelay(parser, request))

    async def _stream(self, request: ChatRequest, ctx: CallContext) -> AsyncGenerator[Event, None]:
        # A client that reads only the whole answer gets it from one upstream JSON body: fewer
        # packets and less parsing than a stream, and the same events come out.
        body = build_request_body(
            request,
            model=self._model,
            rules=self._rules,
            context_length=self.card.context_length,
            stream=ctx.incremental,
            thinking_budget=thinking_budget(self.card, request),
            enable_thinking=self.card.thinking_switch(request.reasoning),
        )
        try:
            response = await self._post(encode_request_body(body))
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
                    yield Start(model=self.card.id, backend=self.name)
                else:
                    # The upstream accepted the request: start now, so the client's response
                    # headers go out while the first token is still being generated.
                    yield Start(model=self.card.id, backend=self.name)
                    events = []
                    async with aclosing(self._events(response, translator)) as batches:
                        async for batch in batches:
                            if translator.usage is not None:
                                ctx.usage = translator.usage
                            for event in batch:
                                yield event
                if translator.usage is not None:
                    ctx.usage = translator.usage
                events.extend(translator.finish())
                for event in events:
                    yield event
                complete = True
                if translator.done and not response.complete:
                    await self._drain(response)
            finally:
                if complete and response.complete:
                    response.release()  # back to the pool for the next request
                else:
                    response.close()  # drop the connection: the upstream sees the disconnect
        except ModelportError as exc:
            raise self._scrub(exc) from None

    async def _post(self, body: bytes) -> http1.Response:
        client = self._client
        if client is None:
            await self.start()
            client = self._client
            assert client is not None
        prepared = self._request
        if prepared is None:
            try:
                prepared = self._request = client.prepare("POST", self._endpoint, self._headers)
            except ValueError as exc:
                raise UpstreamError(f"request to upstream {self._where} failed: {exc}") from None
        try:
            return await client.send(prepared, body)
        except http1.ConnectionClosed:
            # A fresh connection closed before any answer (a pooled one is retried by http1).
            raise UpstreamError(
                f"upstream {self._where} closed the connection before answering"
            ) from None
        except http1.HTTPClientError as exc:
            raise self._transport_error(exc, answered=False) from None

    async def _events(
        self, response: http1.Response, translator: StreamTranslator
    ) -> AsyncGenerator[list[Event], None]:
        """Batches of events as SSE data arrives; stops at `[DONE]` or the end of the body."""
        parser = SSEParser()
        try:
            async for chunk in response:
                for name, data in parser.feed(chunk):
                    events = translator.feed(name, data)
                    if events:
                        yield events
                    if translator.done:
                        return
            for name, data in parser.close():
                events = translator.feed(name, data)
                if events:
                    yield events
        except http1.HTTPClientError as exc:
            if translator.finished and isinstance(
                exc, http1.ConnectionClosed | http1.ProtocolError
            ):
                return  # cut after the answer was complete: only [DONE] and usage were lost
            raise self._transport_error(exc, answered=True) from None

    async def _read(self, response: http1.Response) -> bytes:
        try:
            return await response.read()
        except http1.HTTPClientError as exc:
            raise self._transport_error(exc, answered=True) from None

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
        where = self._where
        if isinstance(exc, http1.ConnectTimeout):
            return UpstreamTimeout(
                f"upstream {where} did not accept a connection within "
                f"{self.config.connect_timeout:g}s"
            )
        if isinstance(exc, http1.ReadTimeout):
            return UpstreamTimeout(f"upstream {where} sent nothing for {self._read_timeout:g}s")
        if isinstance(exc, http1.TotalTimeout):
            return UpstreamTimeout(
                f"upstream {where} did not finish within {self.config.timeout:g}s"
            )
        if isinstance(exc, http1.ConnectError):
            return UpstreamError(f"cannot reach upstream {where}: {exc.reason}")
        if isinstance(exc, http1.ConnectionClosed):
            when = "mid-response" if answered else "before answering"
            return UpstreamError(f"upstream {where} closed the connection {when}")
        if isinstance(exc, http1.ProtocolError):
            return UpstreamError(f"upstream {where} sent a malformed HTTP response: {exc}")
        return UpstreamError(f"request to upstream {where} failed: {type(exc).__name__}: {exc}")

    def _scrub(self, exc: ModelportError) -> ModelportError:
        """Never let the upstream key reach a client or a log, even if an upstream echoes it."""
        if self._secret and self._secret in exc.message:
            exc.message = exc.message.replace(self._secret, "***")
            exc.args = (exc.message,)
        return exc


async def _parsed(
    events: AsyncGenerator[Event, None], relay: ParsedRelay
) -> AsyncGenerator[Event, None]:
    async with aclosing(events):
        async for event in events:
            for parsed in relay.feed(event):
                yield parsed
