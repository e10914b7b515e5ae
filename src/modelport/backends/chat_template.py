"""Rendering a conversation into a prompt with a model's Jinja chat template (Hugging Face's
format), as the engines do: for the local llama.cpp engine, which applies the template itself,
and for counting the prompt tokens of an upstream engine exactly (`upstream_tokens.py`).

The template runs in a sandboxed Jinja environment with the helpers Hugging Face templates
expect (`tojson` without HTML escaping, `raise_exception`, `strftime_now`, loop controls,
`{% generation %}`), as transformers, vLLM and llama-cpp-python set it up, and receives
messages in the OpenAI-style dict shape those templates are written for
(`openai_messages(..., for_template=True)`).

Pure apart from Jinja: no llama_cpp and no I/O here. It lives in `backends/` rather than
`protocols/` because the pure layers may not import jinja2.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2 import meta, nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from modelport.backends.generic_tools import generic_messages
from modelport.backends.prompt_literals import Literals
from modelport.core.catalog import ConfigError
from modelport.core.errors import InvalidRequest
from modelport.core.types import ChatRequest
from modelport.protocols.openai.messages import openai_messages, openai_tool


class _GenerationBlock(Extension):
    """`{% generation %}…{% endgeneration %}` marks assistant text for training masks; the
    body renders unchanged."""

    tags = {"generation"}  # noqa: RUF012 (the Extension API defines it as a class attribute)

    def parse(self, parser: Parser) -> list[nodes.Node]:
        next(parser.stream)
        return list(parser.parse_statements(("name:endgeneration",), drop_needle=True))


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's built-in tojson HTML-escapes; chat templates expect plain JSON, as in transformers.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


class TemplateRaised(Exception):
    """A template called raise_exception(): it rejects the conversation it was given."""


def _raise_exception(message: str) -> NoReturn:
    raise TemplateRaised(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def template_tools(request: ChatRequest) -> list[dict[str, Any]] | None:
    """The request's tools as a template receives them; None when there are none to show
    (tool_choice "none" hides them, as vLLM does: the model cannot call a tool it is not
    shown)."""
    if not request.tools or request.tool_choice.mode == "none":
        return None
    return [openai_tool(tool, with_strict=False) for tool in request.tools]


class ChatTemplate:
    """A compiled chat template plus the special-token texts it may refer to.

    `bos_token` / `eos_token` None: the text is not known (a template configured without its
    tokenizer's configuration); it renders as "" and `exact` says whether that matters.
    """

    def __init__(self, source: str, *, bos_token: str | None, eos_token: str | None) -> None:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[loopcontrols, _GenerationBlock],
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(source)
            names = meta.find_undeclared_variables(env.parse(source))
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"chat template does not compile: {exc}") from None
        self.bos_token = bos_token
        self.eos_token = eos_token
        # Whether every special-token text the template refers to is known: otherwise what it
        # renders differs from the engine's prompt by that text.
        self.exact = not (
            ("bos_token" in names and bos_token is None)
            or ("eos_token" in names and eos_token is None)
        )

    def render(
        self,
        request: ChatRequest,
        *,
        defaults: dict[str, Any] | None = None,
        generic_tools: bool = False,
        literals: Literals | None = None,
    ) -> str:
        """The prompt for `request`, ending with the assistant's generation prompt.

        `defaults` are template variables the engine chooses (e.g. `enable_thinking`);
        `request.chat_template_kwargs` overrides them; the core variables override both.
        `generic_tools`: the template knows no tools; the tools, calls and results are
        written into the messages (`generic_tools.py`). `literals`: the client's strings
        have their control-token strings swapped for markers (`prompt_literals.py`), so the
        prompt holds the template's control tokens only.
        Raises InvalidRequest when the template cannot render the conversation.
        """
        variables: dict[str, Any] = dict(defaults or {})
        variables.update(request.chat_template_kwargs or {})
        messages = openai_messages(request.messages, for_template=True)
        tools = template_tools(request)
        if generic_tools:
            messages, tools = generic_messages(messages, tools), None
        if literals is not None:
            messages = literals.protect(messages)
            tools = literals.protect(tools)
            variables = literals.protect(variables)
        return self.apply(messages, tools=tools, variables=variables)

    def apply(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> str:
        """The prompt for messages already in the template's dict shape: `variables` (the
        chat_template_kwargs an engine passes on) first, then the core variables over them.
        Raises InvalidRequest when the template cannot render the conversation."""
        merged: dict[str, Any] = dict(variables or {})
        merged.update(
            messages=messages,
            tools=tools or None,
            add_generation_prompt=True,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
        )
        try:
            return self._template.render(**merged)
        except TemplateRaised as exc:
            raise InvalidRequest(
                f"The model's chat template rejected the messages: {exc}", param="messages"
            ) from None
        except jinja2.TemplateError as exc:
            raise InvalidRequest(
                f"The model's chat template cannot render these messages: {exc}",
                param="messages",
            ) from None
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            # Templates index and concatenate freely; an unexpected message shape surfaces here.
            raise InvalidRequest(
                f"The model's chat template cannot render these messages: {exc!r}",
                param="messages",
            ) from None
