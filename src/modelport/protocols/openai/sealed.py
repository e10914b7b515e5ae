"""Reasoning handed to a stateless client in an opaque, integrity-protected field
(`encrypted_content`, asked for with `include: ["reasoning.encrypted_content"]`), which the
client returns next turn: the model then sees its earlier reasoning although the server kept
nothing.

The text is encrypted with a keystream of HMAC-SHA256 blocks over a random 16-byte nonce and
a counter (a PRF in counter mode), and authenticated with HMAC-SHA256 over the nonce and the
ciphertext (encrypt-then-MAC); both keys are derived from the server's secret. Pure: the
secret comes from the caller.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

PREFIX = "mp1."
NONCE = 16
TAG = 32
MAX_SEALED = 4 * 1024 * 1024  # characters of a sealed field accepted back


def _keys(secret: bytes) -> tuple[bytes, bytes]:
    return (
        hmac.new(secret, b"modelport reasoning: encryption", hashlib.sha256).digest(),
        hmac.new(secret, b"modelport reasoning: integrity", hashlib.sha256).digest(),
    )


def _keystream(key: bytes, nonce: bytes, length: int) -> bytes:
    blocks = []
    for counter in range((length + 31) // 32):
        blocks.append(hmac.new(key, nonce + counter.to_bytes(8, "big"), hashlib.sha256).digest())
    return b"".join(blocks)[:length]


def seal(text: str, secret: bytes) -> str:
    encryption, integrity = _keys(secret)
    plain = text.encode()
    nonce = os.urandom(NONCE)
    cipher = bytes(
        a ^ b for a, b in zip(plain, _keystream(encryption, nonce, len(plain)), strict=True)
    )
    tag = hmac.new(integrity, nonce + cipher, hashlib.sha256).digest()
    return PREFIX + base64.urlsafe_b64encode(nonce + cipher + tag).decode()


def unseal(sealed: str, secret: bytes) -> str | None:
    """The text, or None when the field is not one this server sealed (or was altered)."""
    if not isinstance(sealed, str) or not sealed.startswith(PREFIX) or len(sealed) > MAX_SEALED:
        return None
    encoded = sealed[len(PREFIX) :].encode()
    try:
        raw = base64.urlsafe_b64decode(encoded)
    except ValueError:
        return None
    if base64.urlsafe_b64encode(raw) != encoded:
        # Not the one encoding seal() makes: a last character whose unused bits were changed
        # decodes to the same bytes, and stray characters are skipped by the decoder; neither is
        # what was handed out.
        return None
    if len(raw) < NONCE + TAG:
        return None
    nonce, cipher, tag = raw[:NONCE], raw[NONCE:-TAG], raw[-TAG:]
    encryption, integrity = _keys(secret)
    if not hmac.compare_digest(tag, hmac.new(integrity, nonce + cipher, hashlib.sha256).digest()):
        return None
    plain = bytes(
        a ^ b for a, b in zip(cipher, _keystream(encryption, nonce, len(cipher)), strict=True)
    )
    try:
        return plain.decode()
    except UnicodeDecodeError:
        return None
