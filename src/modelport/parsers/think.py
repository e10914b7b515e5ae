"""Splits Qwen3 output into reasoning and content at its `<think>…</think>` block.

Qwen3 writes `<think>\\n{reasoning}\\n</think>\\n\\n{answer}`. Where the output starts depends on
the prompt, so the caller names the mode:

- "open": hybrid Qwen3 with thinking on; the output may start with `<think>` (leading
  whitespace before it is tolerated). Output that does not start with it is all content: the
  model answered without a think block. A `</think>` without a `<think>` is content here, because
  deciding otherwise would mean holding back the whole answer; use "preopened" for such models.
- "preopened": Thinking-2507, whose template already ends the prompt with `<think>\\n`; the
  output starts inside reasoning and holds only `</think>`.
- "off": `enable_thinking=False` put an empty think block into the prompt; all output is
  content and passes through untouched.

Newlines: vLLM's qwen3 reasoning parser partitions at the tags and keeps the newlines around
them. We strip them the way Qwen3's own chat template does when it renders an assistant turn
back into history (`lstrip('\\n')`/`rstrip('\\n')` on the reasoning, `lstrip('\\n')` on the
answer): reasoning loses its leading and trailing newlines, the answer its leading newlines. The
template then re-renders exactly the bytes the model wrote, and clients get no stray blank lines.
Spaces are never touched, and output cut off inside reasoning keeps its trailing newlines (the
block never closed, so there is no convention to undo).

Streaming: tags may be split across chunks at any byte; only a suffix that could still become
the tag, or a trailing run of newlines that may precede `</think>`, is held back. Imports only
the standard library and `parsers.base`.
"""

from __future__ import annotations

from typing import Literal

from modelport.parsers.base import Content, Reasoning, longest_partial_suffix

ThinkMode = Literal["open", "preopened", "off"]

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"

_State = Literal["start", "reasoning", "content"]
_FIRST_STATE: dict[ThinkMode, _State] = {
    "open": "start",
    "preopened": "reasoning",
    "off": "content",
}


class ThinkParser:
    """Incremental splitter of raw model text into `Reasoning` and `Content` pieces."""

    def __init__(self, mode: ThinkMode = "open") -> None:
        self._state: _State = _FIRST_STATE[mode]
        # Reasoning and the answer both start after a tag whose newline convention we strip;
        # "off" output follows a prompt that already holds those newlines.
        self._skip_newlines = mode == "preopened"
        self._buffer = ""

    @property
    def think_closed(self) -> bool:
        """False while the output so far ends inside a think block that has not been closed.

        After `finish`, False means the output was cut off while reasoning: the caller reports
        reasoning only (never the reasoning as content) and, with the engine's "length", that
        the answer is missing."""
        return self._state != "reasoning"

    def feed(self, text: str) -> list[Reasoning | Content]:
        self._buffer += text
        pieces: list[Reasoning | Content] = []
        if self._state == "start":
            self._decide_start()
        if self._state == "reasoning":
            self._feed_reasoning(pieces)
        if self._state == "content":
            self._feed_content(pieces)
        return pieces

    def finish(self) -> list[Reasoning | Content]:
        """Flush what was held back: a partial tag is just text once no more output comes."""
        pieces: list[Reasoning | Content] = []
        rest, self._buffer = self._buffer, ""
        if self._state == "start":
            self._state = "content"
        elif self._skip_newlines:  # still before the first character of reasoning or answer
            rest = rest.lstrip("\n")
        if rest:
            pieces.append(Reasoning(rest) if self._state == "reasoning" else Content(rest))
        return pieces

    def _decide_start(self) -> None:
        head = self._buffer.lstrip()
        if head.startswith(OPEN_TAG):
            self._buffer = head[len(OPEN_TAG) :]
            self._state = "reasoning"
            self._skip_newlines = True
        elif not OPEN_TAG.startswith(head):
            self._state = "content"  # no think block: the text so far is the answer, as written

    def _feed_reasoning(self, pieces: list[Reasoning | Content]) -> None:
        if self._skip_newlines:
            stripped = self._buffer.lstrip("\n")
            if stripped:
                self._skip_newlines = False
            self._buffer = stripped
        end = self._buffer.find(CLOSE_TAG)
        if end >= 0:
            reasoning = self._buffer[:end].rstrip("\n")
            if reasoning:
                pieces.append(Reasoning(reasoning))
            self._buffer = self._buffer[end + len(CLOSE_TAG) :]
            self._state = "content"
            self._skip_newlines = True
            return
        held = longest_partial_suffix(self._buffer, CLOSE_TAG)
        safe = self._buffer[: len(self._buffer) - held].rstrip("\n")
        if safe:
            pieces.append(Reasoning(safe))
            self._buffer = self._buffer[len(safe) :]

    def _feed_content(self, pieces: list[Reasoning | Content]) -> None:
        if self._skip_newlines:
            self._buffer = self._buffer.lstrip("\n")
            if not self._buffer:
                return
            self._skip_newlines = False
        if self._buffer:
            pieces.append(Content(self._buffer))
            self._buffer = ""
