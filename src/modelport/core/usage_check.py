"""Is the usage an upstream reported believable? Pure bounds, no I/O.

A backend reports what it used; the gateway bills it only when it fits what the gateway saw:

- **Completion tokens** lie between what was relayed and what the request allowed. Every token
  is at least one byte of UTF-8, and a byte-level BPE token is seldom longer than 16 bytes, so
  relayed output of B bytes took at least `B // MAX_BYTES_PER_TOKEN` tokens (one, for any
  output at all); and no more than the admitted output limit (`limit`), which the gateway
  enforces. Output an upstream generated but did not relay (a hidden reasoning trace, a tool
  call's markup) can only raise the count, so there is no tighter upper bound.
- **Prompt tokens** lie between the same lower bound over the prompt's text and an upper
  bound of one token per byte of the prompt's text plus a generous allowance for the chat
  template's markup per message and for the tools block (`prompt_upper_bound`): a prompt of
  30 bytes is not a million tokens.
- **Reasoning and cached tokens** are parts of completion and prompt tokens: clamped to them.

Anything outside its bounds, negative, or absurdly large is *implausible*: the caller counts
that part itself (exactly with the model's tokenizer where it has one, else an estimate it
marks as such) and records why. The bounds are loose on purpose: they catch an upstream that
lies (a million tokens for a short prompt, nothing for a long answer, more than max_tokens),
never one that counts slightly differently.
"""

from __future__ import annotations

from typing import NamedTuple

from modelport.core.events import Usage

MAX_BYTES_PER_TOKEN = 16
# Chat-template markup per message (role tags, separators) and for a tools block: far above
# any real template's, so an honest count is never doubted.
TEMPLATE_TOKENS_PER_MESSAGE = 16
TEMPLATE_TOKENS_BASE = 256
# No single request may count more than this many tokens of either kind.
ABSURD_TOKENS = 1 << 31


class Checked(NamedTuple):
    """The usage to bill from, and what had to be replaced. `recount_prompt` and
    `recount_completion` say which counts the caller must make itself (the reported value is
    not believable or was missing); `problems` names every reason, for the usage row."""

    usage: Usage | None
    recount_prompt: bool
    recount_completion: bool
    problems: tuple[str, ...]


def lower_bound(text_bytes: int) -> int:
    """The fewest tokens `text_bytes` bytes of text can be."""
    if text_bytes <= 0:
        return 0
    return max(1, text_bytes // MAX_BYTES_PER_TOKEN)


def prompt_upper_bound(text_bytes: int, messages: int) -> int:
    """The most tokens a prompt of `text_bytes` bytes of text in `messages` messages (tools'
    schemas counted in the bytes) can be, whatever the tokenizer and template."""
    return text_bytes + TEMPLATE_TOKENS_PER_MESSAGE * messages + TEMPLATE_TOKENS_BASE


def check_usage(
    reported: Usage | None,
    *,
    prompt_bytes: int,
    prompt_messages: int,
    relayed_bytes: int,
    limit: int | None,
) -> Checked:
    """Check `reported` against the prompt's size in bytes and messages, the bytes of output
    relayed to the client, and the admitted output limit (None: no limit known)."""
    if reported is None:
        return Checked(None, True, True, ("usage_missing",))
    problems: list[str] = []
    prompt, completion = reported.prompt_tokens, reported.completion_tokens
    recount_prompt = not _within(
        prompt, lower_bound(prompt_bytes), prompt_upper_bound(prompt_bytes, prompt_messages)
    )
    if recount_prompt:
        problems.append("prompt_implausible")
    upper = ABSURD_TOKENS if limit is None else limit
    recount_completion = False
    if not _within(completion, lower_bound(relayed_bytes), ABSURD_TOKENS):
        recount_completion = True
        problems.append("completion_implausible")
    elif completion > upper:
        recount_completion = True
        problems.append("completion_above_limit")
    if recount_prompt or recount_completion:
        return Checked(reported, recount_prompt, recount_completion, tuple(problems))
    reasoning = _clamped(reported.reasoning_tokens, completion)
    cached = _clamped(reported.cached_tokens, prompt)
    if reasoning != reported.reasoning_tokens or cached != reported.cached_tokens:
        problems.append("parts_clamped")
        reported = Usage(prompt, completion, reasoning, cached, estimated=reported.estimated)
    return Checked(reported, False, False, tuple(problems))


def _within(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _clamped(part: object, whole: int) -> int:
    if not isinstance(part, int) or isinstance(part, bool) or part < 0:
        return 0
    return min(part, whole)
