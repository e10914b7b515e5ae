"""Log lines: one JSON object per line for machines, or a readable line for a terminal, each
with the request id of the request it was written for; and the access line every request
leaves.

`configure_logging` sets up modelport's loggers (and, through `granian_log_config`, granian's)
once per process. Every line written while a request runs carries its id: the trace is a
context variable (core/trace.py), seen by tasks the request spawns too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from modelport.core.trace import Trace, current

LogFormat = Literal["auto", "json", "text"]

# The trace's fields an access line carries, in this order; None values are left out.
_TRACE_FIELDS = (
    "door",
    "account_id",
    "key_id",
    "model",
    "backend",
    "generation_id",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "cost_nano",
    "error_kind",
)


# Control characters in text lines (a decoded path, a message quoting a client's value)
# become escapes, so that no value can start a line of its own or drive a terminal.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}


# What looks like an API key in a path (a client that put its key in the URL, by mistake or in
# a probe): modelport's own (`sk-mp-…`) and other providers' (`sk-…`, `sk-ant-…`) alike. The
# line keeps the first characters, enough to tell which key it was, never the secret.
_SECRETS = re.compile(
    r"(?<![A-Za-z0-9])(sk-(?:[A-Za-z]{2,4}-)?[A-Za-z0-9]{0,4})[A-Za-z0-9_\-]{12,}"
)


def without_secrets(path: str) -> str:
    return _SECRETS.sub(r"\1…", path) if "sk-" in path else path


def printable(text: str) -> str:
    return text if text.isprintable() else text.translate(_CONTROLS)


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """{"ts", "level", "logger", "pid", "msg", "request_id"?, fields…, "exc"?} on one line.
    A record's `fields` (passed as `extra={"fields": {...}}`) become keys of their own."""

    _encoder = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        trace = current()
        if trace is not None:
            line["request_id"] = trace.request_id
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        try:
            return self._encoder.encode(line).decode()
        except (TypeError, msgspec.EncodeError):  # a field msgspec cannot encode
            return self._encoder.encode({k: str(v) for k, v in line.items()}).decode()


class TextFormatter(logging.Formatter):
    """`2026-12-03 21:30:01.123 [pid] INFO logger: message key=value… [request id]`."""

    def format(self, record: logging.LogRecord) -> str:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        text = (
            f"{at}.{int(record.msecs):03d} [{record.process}] {record.levelname} "
            f"{record.name}: {printable(record.getMessage())}"
        )
        fields = getattr(record, "fields", None)
        if fields:
            text += " " + " ".join(
                f"{key}={printable(str(value))}"
                for key, value in fields.items()
                if key != "request_id"
            )
        trace = current()
        request_id = trace.request_id if trace is not None else (fields or {}).get("request_id")
        if request_id:
            text += f" [{request_id}]"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def resolve_format(fmt: LogFormat) -> Literal["json", "text"]:
    """ "auto": readable text on a terminal (`make serve`), JSON lines otherwise."""
    if fmt == "auto":
        return "text" if sys.stderr.isatty() else "json"
    return fmt


def _formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if resolve_format(fmt) == "json" else TextFormatter()


def configure_logging(level: str, fmt: LogFormat = "auto") -> None:
    """modelport's own log lines (loggers under "modelport") to stderr at `level`, in `fmt`:
    granian configures only its own loggers, and without a handler Python would print
    warnings alone, without a timestamp."""
    logger = logging.getLogger("modelport")
    formatter = _formatter(fmt)
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler(sys.stderr))
        logger.propagate = False
    for handler in logger.handlers:
        handler.setFormatter(formatter)
    logger.setLevel(level.upper())


def granian_log_config(fmt: LogFormat) -> dict[str, Any]:
    """granian's logging configuration (its `log_dictconfig`): its own lines in the same
    format as modelport's, on stderr (stdout carries the first-start admin key alone)."""
    formatter = "modelport.http.logs.JsonFormatter"
    if resolve_format(fmt) == "text":
        formatter = "modelport.http.logs.TextFormatter"
    return {
        "formatters": {"modelport": {"()": formatter}},
        "handlers": {
            "console": {
                "formatter": "modelport",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
            },
            "access": {
                "formatter": "modelport",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
            },
        },
    }


class AccessLog:
    """The access lines, written the cheap way: one per request is the most frequent line by
    far, and going through `logging` (a record, a formatter, a write and a flush per line)
    cost about 19 µs a request, a tenth of a proxied request's CPU. Lines are encoded
    directly and gathered for up to `linger` seconds (or `limit` bytes) into one write; the
    same format as the other lines (`"json"` or `"text"`), on the same stream (stderr).
    `flush` writes what is gathered (the app calls it when it stops)."""

    def __init__(
        self,
        fmt: LogFormat,
        *,
        write: Callable[[bytes], object] | None = None,
        linger: float = 0.1,
        limit: int = 64 * 1024,
    ) -> None:
        self._json = resolve_format(fmt) == "json"
        self._write = write or _write_stderr
        self._linger = linger
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._pid = 0
        self._second = -1
        self._stamp = ""
        self._encode = msgspec.json.Encoder().encode

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            if self._json:
                self._stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            else:
                self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        millis = int((now - second) * 1000)
        if self._json:
            return f"{self._stamp}.{millis:03d}+00:00"
        return f"{self._stamp}.{millis:03d}"

    def line(
        self, trace: Trace, method: str, path: str, status: int, seconds: float, client: str
    ) -> bytes:
        """The access line of one request (with its newline)."""
        if not self._pid:
            self._pid = os.getpid()  # after granian forked the worker
        now = time.time()
        path = without_secrets(path)
        message = f"{method} {path} {status}"
        fields: dict[str, Any] = {
            "method": method,
            "path": path,
            "status": status,
            "latency_ms": round(seconds * 1000, 3),
            "client": client,
        }
        for name in _TRACE_FIELDS:
            value = getattr(trace, name)
            if value is not None:
                fields[name] = value
        if trace.error_status is not None and trace.error_status != status:
            fields["error_status"] = trace.error_status
        if self._json:
            head = {
                "ts": self._timestamp(now),
                "level": "info",
                "logger": "modelport.access",
                "pid": self._pid,
                "msg": message,
                "request_id": trace.request_id,
            }
            head.update(fields)
            return self._encode(head) + b"\n"
        pairs = " ".join(f"{key}={value}" for key, value in fields.items())
        text = (
            f"{self._timestamp(now)} [{self._pid}] INFO modelport.access: {message} {pairs} "
            f"[{trace.request_id}]"
        )
        text = printable(text) + "\n"
        return text.encode("utf-8", "backslashreplace")

    def log(
        self, trace: Trace, method: str, path: str, status: int, seconds: float, client: str
    ) -> None:
        data = self.line(trace, method, path, status, seconds, client)
        self._parts.append(data)
        self._size += len(data)
        if self._size >= self._limit:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()  # no loop to wait on (a test, a script)
                return
            self._timer = loop.call_later(self._linger, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._parts:
            return
        data = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        with contextlib.suppress(OSError):  # stderr gone (a closed pipe): nowhere to say so
            self._write(data)


def _write_stderr(data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(2, view)
        except BlockingIOError:
            time.sleep(0.001)
            continue
        view = view[written:]
