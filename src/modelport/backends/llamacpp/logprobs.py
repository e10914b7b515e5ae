"""Per-token log probabilities for requests that ask for them, and their alignment with text.

`TokenScorer` reads the logits llama.cpp computed for the position that produced a token and
turns them into a `TokenLogprob`. `LogprobAligner` holds the entries back until the text of
their tokens has been released by the `TextAssembler`, so each entry goes out exactly once,
with (or after) its text, and the tokens of a stop string that was cut never get one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from modelport.core.types import TokenLogprob

# OpenAI's stand-in for log(0): JSON has no -inf, and clients sum these values.
FLOOR = -9999.0
MAX_TOP = 20

Logits = npt.NDArray[np.float32]


def _finite(value: float) -> float:
    return value if value > FLOOR else FLOOR  # also maps nan to FLOOR (nan > x is False)


@dataclass(frozen=True)
class Scored:
    """One token's logprob and the ids and logprobs of its most likely alternatives."""

    logprob: float
    top: tuple[tuple[int, float], ...]


def score(logits: Logits, token: int, k: int) -> Scored:
    """The log-softmax of the raw logits at `token`, and the `k` best tokens, best first.

    The raw logits are the model's own distribution, before logit_bias, penalties, grammar,
    temperature or truncation: what OpenAI and vLLM report by default.
    """
    peak = float(logits.max())
    # float64 for the sum: 49k-152k float32 terms lose digits that a logprob near 0 needs.
    log_total = peak + float(np.log(np.exp(logits - peak, dtype=np.float64).sum()))
    chosen = _finite(float(logits[token]) - log_total)
    if k <= 0:
        return Scored(chosen, ())
    k = min(k, logits.shape[0])
    best = np.argpartition(logits, -k)[-k:]
    # Ties broken by id so that equal logits give a repeatable order.
    best = best[np.lexsort((best, -logits[best]))]
    return Scored(chosen, tuple((int(i), _finite(float(logits[i]) - log_total)) for i in best))


class TokenScorer:
    """Builds `TokenLogprob`s, with the texts of tokens cached across requests."""

    def __init__(self, piece: Callable[[int], bytes], label: Callable[[int], bytes]) -> None:
        # `piece` is a token's bytes as they appear in the output (control tokens are empty);
        # `label` names any token, control tokens included, for the list of alternatives.
        self._piece = piece
        self._label = label

    def entry(self, logits: Logits, token: int, k: int) -> TokenLogprob:
        scored = score(logits, token, k)
        raw = self._piece(token)
        top = []
        for alt, logprob in scored.top:
            name = self._label(alt)
            top.append((name.decode("utf-8", errors="replace"), logprob, tuple(name)))
        return TokenLogprob(
            token=raw.decode("utf-8", errors="replace"),
            logprob=scored.logprob,
            bytes=tuple(raw),
            top=tuple(top),
        )


@dataclass
class _Pending:
    entry: TokenLogprob
    start: int  # characters of output decoded before this token
    end: int  # characters decoded once this token was fed


class LogprobAligner:
    """Orders entries after their text. Positions count characters of the decoded output.

    An entry is released once the text up to its token's end has been released. When a stop
    string cuts the output at character `cut`, tokens that began before the cut keep their
    entry (their text is at least partly in the output) and the others are dropped. Entries
    are only released once some text has been (the stream has no block for them before).
    """

    def __init__(self) -> None:
        self._pending: list[_Pending] = []

    def add(self, entry: TokenLogprob, start: int, end: int) -> None:
        self._pending.append(_Pending(entry, start, end))

    def release(self, released: int) -> tuple[TokenLogprob, ...]:
        """Entries whose text lies within the first `released` characters of output."""
        if released == 0:
            return ()
        ready = [p for p in self._pending if p.end <= released]
        if not ready:
            return ()
        self._pending = [p for p in self._pending if p.end > released]
        return tuple(p.entry for p in ready)

    def cut(self, at: int) -> tuple[TokenLogprob, ...]:
        """Entries of the tokens that began before the stop string cut at `at`; drops the rest."""
        kept = tuple(p.entry for p in self._pending if p.start < at)
        self._pending = []
        return kept if at > 0 else ()

    def finish(self, released: int) -> tuple[TokenLogprob, ...]:
        """Everything left, once generation ended without a stop string."""
        rest = tuple(p.entry for p in self._pending)
        self._pending = []
        return rest if released > 0 else ()
