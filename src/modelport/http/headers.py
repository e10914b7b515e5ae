"""Headers the app adds to responses on its own: security headers chosen by content type, and
CORS (closed unless the operator lists origins).

Security headers: `X-Content-Type-Options: nosniff` on every response; an HTML response also
gets a Content-Security-Policy, a Referrer-Policy and X-Frame-Options, so a page added later is
covered without its route doing anything. The adapters take a response's first headers from
`response_head(content_type)`: one list per content type, built once (the hot path pays a dict
lookup).

CORS: with no allowed origins (the default) no response carries Access-Control-Allow-Origin and
a preflight is answered without allowing anything, so browsers refuse cross-origin calls.
`MODELPORT_CORS_ORIGINS` lists the origins allowed, or `*` for any; API keys travel in a
header, never a cookie, so credentials mode is never allowed. Imports nothing from modelport.
"""

from __future__ import annotations

from collections.abc import Iterable

Header = tuple[str, str]
Headers = tuple[Header, ...]

NOSNIFF: Header = ("x-content-type-options", "nosniff")
HTML_SECURITY_HEADERS: Headers = (
    NOSNIFF,
    (
        "content-security-policy",
        "default-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
    ),
    ("referrer-policy", "same-origin"),
    ("x-frame-options", "DENY"),  # frame-ancestors for browsers that predate it
)
SECURITY_HEADERS: Headers = (NOSNIFF,)

_heads: dict[str, list[Header]] = {}
_MAX_CACHED_TYPES = 64  # content types are constants in the code; a bound all the same


def security_headers(content_type: str) -> Headers:
    """The security headers for a response of `content_type`."""
    if content_type[:9].lower() == "text/html":
        return HTML_SECURITY_HEADERS
    return SECURITY_HEADERS


def response_head(content_type: str) -> list[Header]:
    """A response's content type and security headers, as one shared list: callers extend a
    copy, never the list itself."""
    head = _heads.get(content_type)
    if head is None:
        head = [("content-type", content_type), *security_headers(content_type)]
        if len(_heads) < _MAX_CACHED_TYPES:
            _heads[content_type] = head
    return head


# ---------------------------------------------------------------------------- CORS

ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
# Request headers the OpenAI and Anthropic SDKs send from a browser; a preflight that asks for
# others (with valid names) gets them allowed too, for allowed origins only.
ALLOWED_HEADERS = (
    "authorization",
    "content-type",
    "x-api-key",
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "openai-organization",
    "openai-project",
)
EXPOSED_HEADERS = "retry-after"  # the only header of our own a client reads
PREFLIGHT_MAX_AGE = "600"  # seconds a browser may reuse a preflight's answer
_MAX_REQUESTED_HEADERS = 1024  # characters of Access-Control-Request-Headers considered
_TOKEN_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")

VARY_ORIGIN: Header = ("vary", "Origin")
_VARY_PREFLIGHT: Header = (
    "vary",
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
)


def _origin(text: str) -> str:
    return text.strip().rstrip("/").lower()


class Cors:
    """Which origins may call the API from a browser, and the headers that say so.

    `origins`: origins as browsers send them (`https://app.example.com`, scheme and host, a
    port when not the default), compared without case; `*` allows any origin.
    """

    __slots__ = ("_allowed", "_any", "_closed_preflight", "any_origin", "origins")

    def __init__(self, origins: Iterable[str]) -> None:
        cleaned = {_origin(origin) for origin in origins if origin.strip()}
        self.any_origin = "*" in cleaned
        self.origins = frozenset(cleaned - {"*"})
        exposed = ("access-control-expose-headers", EXPOSED_HEADERS)
        # Precomputed per allowed origin: an ordinary response's CORS headers.
        self._allowed: dict[str, Headers] = {
            origin: (("access-control-allow-origin", origin), VARY_ORIGIN, exposed)
            for origin in self.origins
        }
        self._any: Headers = (("access-control-allow-origin", "*"), exposed)
        self._closed_preflight: Headers = (_VARY_PREFLIGHT,)

    @property
    def closed(self) -> bool:
        """No origin is allowed: responses carry no CORS headers at all."""
        return not self.any_origin and not self.origins

    def allows(self, origin: str) -> bool:
        return self.any_origin or _origin(origin) in self.origins

    def response_headers(self, origin: str | None) -> Headers:
        """CORS headers for an ordinary response to a request that sent `origin`."""
        if self.any_origin:
            return self._any
        if not self.origins:
            return ()
        if origin is None:
            return (VARY_ORIGIN,)  # a cache must not serve this answer to a browser's request
        allowed = self._allowed.get(origin)
        if allowed is None:
            allowed = self._allowed.get(_origin(origin))
            if allowed is not None:  # the origin as the browser wrote it, not as configured
                allowed = (("access-control-allow-origin", origin), *allowed[1:])
        return allowed if allowed is not None else (VARY_ORIGIN,)

    def preflight_headers(self, origin: str | None, requested_headers: str | None) -> Headers:
        """The answer to a preflight (OPTIONS with Access-Control-Request-Method): what the
        origin may send, or nothing when it is not allowed."""
        if origin is None or not self.allows(origin):
            return self._closed_preflight
        allowed_origin = "*" if self.any_origin else origin
        return (
            ("access-control-allow-origin", allowed_origin),
            ("access-control-allow-methods", ALLOWED_METHODS),
            ("access-control-allow-headers", _allowed_headers(requested_headers)),
            ("access-control-max-age", PREFLIGHT_MAX_AGE),
            _VARY_PREFLIGHT,
        )


def _allowed_headers(requested: str | None) -> str:
    """The known headers, plus the ones a preflight asks for when their names are plain
    tokens (the SDKs add their own, x-stainless-…)."""
    names = list(ALLOWED_HEADERS)
    if requested:
        for raw in requested[:_MAX_REQUESTED_HEADERS].split(","):
            name = raw.strip().lower()
            if name and name not in names and set(name) <= _TOKEN_CHARACTERS:
                names.append(name)
    return ", ".join(names)
