"""The errors the HTTP/1.1 client raises; `openai_compat` maps them onto `core.errors`."""

from __future__ import annotations


class HTTPClientError(Exception):
    """Base of every error this client raises."""


class ConnectError(HTTPClientError):
    """No connection could be made (refused, unreachable, name not found, TLS failure)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectTimeout(HTTPClientError):
    """The connection was not established within the connect timeout."""


class ReadTimeout(HTTPClientError):
    """No bytes arrived for the read timeout while waiting for the head or the body."""


class TotalTimeout(HTTPClientError):
    """The exchange did not finish before its total deadline."""


class ConnectionClosed(HTTPClientError):
    """The server closed the connection before the response was complete.

    `answered` says whether the response head had arrived (a cut body) or not.
    """

    def __init__(self, *, answered: bool) -> None:
        super().__init__("closed mid-response" if answered else "closed before answering")
        self.answered = answered


class ProtocolError(HTTPClientError):
    """The server sent something that is not valid HTTP/1.x."""
