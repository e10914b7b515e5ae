"""The floor no tokenizer goes below (core/tokens.prompt_floor): text over 32 bytes a token plus
one a message; images left out, since engines count them by their pixels."""

from __future__ import annotations

from modelport.core.tokens import prompt_bytes, prompt_floor
from modelport.core.types import ChatRequest, ImagePart, Message, TextPart


def request(*parts: TextPart | ImagePart, messages: int = 1) -> ChatRequest:
    return ChatRequest(model="m", messages=tuple(Message("user", parts) for _ in range(messages)))


def test_the_floor_is_the_text_over_32_bytes_plus_one_a_message() -> None:
    text = request(TextPart("x" * 32_000), messages=2)
    assert prompt_floor(text) == prompt_bytes(text) // 32 + 2
    assert prompt_floor(text, prompt_bytes(text)) == prompt_floor(text)


def test_images_do_not_count_towards_the_floor() -> None:
    image = ImagePart(url="data:image/png;base64," + "A" * 4_000_000)
    with_image = request(TextPart("hi"), image)
    assert prompt_bytes(with_image) > 4_000_000
    assert prompt_floor(with_image, prompt_bytes(with_image)) == prompt_floor(
        request(TextPart("hi"))
    )
