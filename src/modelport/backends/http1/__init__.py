"""A lean HTTP/1.1 client for upstream servers: an asyncio `Protocol` per connection, a
keep-alive pool per client, and responses whose body arrives as it is received.

What it does: `POST` (or any method) with a bytes body and `Content-Length`; responses framed
by `Content-Length`, chunked transfer encoding (extensions and trailers ignored) or the end of
the connection; `1xx` interim responses skipped; `Connection: close` and HTTP/1.0 honoured;
TLS for `https://` (the system's default trust store, the URL's host as the server name);
IPv6 literals. Timeouts: connect, read (no bytes for N seconds while waiting for the head or
the body) and a total deadline over the whole exchange. A pooled connection that the server
closed while idle is retried once on a fresh connection when it fails before any response byte.

What it does not do, on purpose: proxies, redirects, cookies, compression (it sends
`Accept-Encoding: identity`), `Expect: 100-continue`, pipelining, request-body streaming.
The read timeout starts once the request is handed to the transport, not once it is sent.

Errors are this module's own (`HTTPClientError` and subclasses); `openai_compat` maps them to
`core.errors`. This module knows nothing of modelport beyond that.
"""

from modelport.backends.http1.client import Client, Origin, Request
from modelport.backends.http1.errors import (
    ConnectError,
    ConnectionClosed,
    ConnectTimeout,
    HTTPClientError,
    ProtocolError,
    ReadTimeout,
    TotalTimeout,
)
from modelport.backends.http1.response import HIGH_WATER, LOW_WATER, Headers, Response

__all__ = [
    "HIGH_WATER",
    "LOW_WATER",
    "Client",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionClosed",
    "HTTPClientError",
    "Headers",
    "Origin",
    "ProtocolError",
    "ReadTimeout",
    "Request",
    "Response",
    "TotalTimeout",
]
