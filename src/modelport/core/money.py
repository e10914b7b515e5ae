"""Money is an integer number of nano-yuan (1 CNY = 10**9). No floats where money is.

Catalog prices are CNY per 1,000 tokens as exact decimal strings ("0.00175"); each one must be
an exact integer number of nano-yuan per token, or the catalog is rejected at start-up.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from functools import lru_cache

from modelport.core.errors import clip

NANO_PER_YUAN = 10**9
TOKENS_PER_PRICE_UNIT = 1000


def parse_cny(text: str) -> Decimal:
    """Parse a CNY amount given as a decimal string; raise ValueError with the reason."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{clip(text)!r} is not a decimal number") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{clip(text)!r} must be a finite, non-negative amount")
    return value


@lru_cache(maxsize=1024)
def nano_per_token(per_1k_cny: str) -> int:
    """CNY per 1,000 tokens (exact decimal string) -> integer nano-yuan per token. Cached: a
    billed request reads its model's prices several times, and the catalog has few."""
    nano = parse_cny(per_1k_cny) * NANO_PER_YUAN / TOKENS_PER_PRICE_UNIT
    if nano != nano.to_integral_value():
        raise ValueError(
            f"price {per_1k_cny} CNY per 1K tokens is not a whole number of nano-yuan per token"
        )
    return int(nano)


def format_cny(nano: int) -> str:
    """Render nano-yuan as a plain decimal CNY string without trailing zeros ("0.00000175")."""
    sign = "-" if nano < 0 else ""
    whole, frac = divmod(abs(nano), NANO_PER_YUAN)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:09d}".rstrip("0")
