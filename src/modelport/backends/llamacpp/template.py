"""Chat templates for the local engine: the model's Jinja template (from the GGUF's
`tokenizer.chat_template` or the backend config) rendered as `backends/chat_template.py` does
for every engine, so that a prompt rendered here and a prompt counted for an upstream are made
the same way. No llama_cpp here.
"""

from __future__ import annotations

from modelport.backends.chat_template import ChatTemplate, TemplateRaised

__all__ = ["ChatTemplate", "TemplateRaised"]
