"""Rendering canonical messages into a prompt with the model's Jinja chat template.

The template comes from the GGUF (`tokenizer.chat_template`) or the backend config. It runs in
a sandboxed Jinja environment with the helpers Hugging Face templates expect (`tojson`,
`raise_exception`, `strftime_now`, loop controls, `{% generation %}`), and receives messages in
the OpenAI-style dict shape those templates are written for. Pure: no llama_cpp here.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

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


class ChatTemplate:
    """A compiled chat template plus the special-token texts it may refer to."""

    def __init__(self, source: str, *, bos_token: str, eos_token: str) -> None:
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
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"chat template does not compile: {exc}") from None
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, request: ChatRequest, *, defaults: dict[str, Any] | None = None) -> str:
        """The prompt for `request`, ending with the assistant's generation prompt.

        `defaults` are template variables the engine chooses (e.g. `enable_thinking`);
        `request.chat_template_kwargs` overrides them; the core variables override both.
        """
        tools = [openai_tool(tool, with_strict=False) for tool in request.tools]
        if request.tool_choice.mode == "none":
            tools = []  # as vLLM does: the model cannot call a tool it is not shown
        variables: dict[str, Any] = dict(defaults or {})
        variables.update(request.chat_template_kwargs or {})
        variables.update(
            messages=openai_messages(request.messages, for_template=True),
            tools=tools or None,
            add_generation_prompt=True,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )
        try:
            return self._template.render(**variables)
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
