"""Turning generated token bytes into text deltas, with stop strings cut out.

Token pieces can split a UTF-8 character, and a stop string can span several tokens, so text
that might still turn into a stop string is held back until the next piece decides it. Pure.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable


class TextAssembler:
    """Feed token bytes in order; get back the text that is safe to send now.

    After a stop string is seen, `stopped` is True and the text from the stop string on is
    dropped (the OpenAI convention: the stop sequence is not part of the output).
    """

    def __init__(self, stop: Iterable[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = tuple(s for s in stop if s)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended the text
        # Characters decoded so far and characters released: positions for logprob alignment.
        self.decoded = 0
        self.released = 0

    def feed(self, data: bytes) -> str:
        if self.stopped:
            return ""
        text = self._decoder.decode(data)
        self.decoded += len(text)
        return self._release(self._held + text, final=False)

    @property
    def end(self) -> int:
        """Where the text of the bytes fed so far ends (an unfinished character counts)."""
        return self.decoded + (1 if self._decoder.getstate()[0] else 0)

    def finish(self) -> str:
        """The text still held back, once generation has ended without a stop string."""
        if self.stopped:
            return ""
        text = self._decoder.decode(b"", final=True)
        self.decoded += len(text)
        return self._release(self._held + text, final=True)

    def _release(self, text: str, *, final: bool) -> str:
        out = self._cut(text, final=final)
        self.released += len(out)
        return out

    def _cut(self, text: str, *, final: bool) -> str:
        if not self._stops:
            self._held = ""
            return text
        found = [(i, s) for s in self._stops if (i := text.find(s)) >= 0]
        if found:
            cut, self.matched = min(found)
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = 0 if final else self._partial_stop_suffix(text)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def _partial_stop_suffix(self, text: str) -> int:
        """Length of the longest end of `text` that begins some stop string."""
        for size in range(min(len(text), self._longest - 1), 0, -1):
            tail = text[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0
