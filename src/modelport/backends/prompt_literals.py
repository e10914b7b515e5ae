"""Text the client wrote stays text: a control token's string (`<|im_end|>`, `<|im_start|>`…)
inside a message, a tool result or a tool's description must not become that control token
in the prompt, or a user could end their own turn and forge a system or assistant turn.

llama.cpp's tokenizer cannot tell the template's `<|im_end|>` from one a user typed: with
special tokens parsed, both become the control token. So before the template renders, every
control-token string in the client's strings (message content, names, tool-call arguments,
tools) is swapped for a marker, one code point from the Supplementary Private Use Area-B
(U+100000-U+10FFFD) per distinct string; the template's own control tokens are the only ones
left in its output. The prompt is then tokenized piece by piece as llama.cpp would tokenize it
(split at the special tokens' strings; the text between them tokenized as text, without
special tokens), with each marker put back as the text it stands for. A client string that
already holds a code point of the marker range is marked the same way, so no text can pass
for a marker.

Most prompts hold no control-token string in client text; for them `Literals.table` stays
empty and the prompt is tokenized in one call, exactly as before. Pure: no llama_cpp here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MARK_FIRST = 0x100000
MARK_LAST = 0x10FFFD
_MARK_CLASS = f"[{chr(MARK_FIRST)}-{chr(MARK_LAST)}]"


def _alternation(texts: Iterable[str]) -> str:
    # Longest first, as llama.cpp matches special tokens: `<|im_end|>` before `<|im`.
    return "|".join(re.escape(text) for text in sorted(set(texts), key=len, reverse=True) if text)


class LiteralGuard:
    """The control-token strings of one vocabulary, compiled once per model."""

    def __init__(self, control: Iterable[str], special: Iterable[str]) -> None:
        """`control`: the strings client text may not turn into tokens; `special`: every
        string llama.cpp reads as a special token when parsing them (control ones included),
        where the rendered prompt is split."""
        control = [text for text in control if text]
        self._control = tuple(control)
        control_pattern = _alternation(control)
        protected = f"{control_pattern}|{_MARK_CLASS}" if control_pattern else _MARK_CLASS
        self._protected = re.compile(protected)
        special_pattern = _alternation([*special, *control])
        self.split = re.compile(special_pattern) if special_pattern else None

    def literals(self, limit: int | None = None) -> Literals:
        """A fresh table for one request, which reads at most `limit` characters of client
        text (`PromptTooLong` beyond)."""
        return Literals(self._protected, self._control, limit)


class PromptTooLong(Exception):
    """More client text than any prompt that fits can hold: `characters` read so far."""

    def __init__(self, characters: int) -> None:
        super().__init__(characters)
        self.characters = characters


class Literals:
    """One request's markers: `protect` swaps client strings' control-token strings for
    markers, `restore` puts them back."""

    def __init__(
        self, pattern: re.Pattern[str], control: tuple[str, ...] = (), limit: int | None = None
    ) -> None:
        self._pattern = pattern
        self._control = control
        self._limit = limit
        self._read = 0
        self.table: dict[str, str] = {}  # marker -> the text it stands for
        self._markers: dict[str, str] = {}  # text -> its marker

    def protect(self, value: Any) -> Any:
        """`value` (strings, lists and dicts of them, as templates receive messages and
        tools) with every protected string replaced by its marker; unchanged objects are
        returned as they are."""
        if isinstance(value, str):
            self._read += len(value)
            if self._limit is not None and self._read > self._limit:
                raise PromptTooLong(self._read)  # before reading it: it cannot fit anyway
            # The regular expression holds the interpreter's lock; `in` scans at memchr's
            # speed, and ASCII text holds no marker code point.
            if value.isascii():
                if not any(text in value for text in self._control):
                    return value
            elif self._pattern.search(value) is None:
                return value
            return self._pattern.sub(self._marker, value)
        if isinstance(value, dict):
            return {self.protect(key): self.protect(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.protect(item) for item in value]
        return value

    def _marker(self, match: re.Match[str]) -> str:
        text = match.group()
        marker = self._markers.get(text)
        if marker is None:
            code = MARK_FIRST + len(self._markers)
            if code > MARK_LAST:  # 65,534 distinct strings: only a hostile request gets here
                raise ValueError("too many distinct control-token strings in one request")
            marker = self._markers[text] = chr(code)
            self.table[marker] = text
        return marker

    def restore(self, text: str) -> str:
        if not self.table:
            return text
        return text.translate({ord(marker): original for marker, original in self.table.items()})

    def pieces(self, prompt: str, split: re.Pattern[str] | None) -> list[tuple[str, bool]]:
        """The rendered `prompt` as llama.cpp's tokenizer would cut it: (text, special) pairs,
        the special ones each one special token's string (the template's own), the others text
        with the markers put back, to be tokenized without parsing special tokens."""
        out: list[tuple[str, bool]] = []
        position = 0
        if split is not None:
            for match in split.finditer(prompt):
                if match.start() > position:
                    out.append((self.restore(prompt[position : match.start()]), False))
                out.append((match.group(), True))
                position = match.end()
        if position < len(prompt):
            out.append((self.restore(prompt[position:]), False))
        return out
