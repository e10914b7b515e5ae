"""A model served by the scripted fake upstream, for end-to-end tests of the doors and the
clients: the config file that adds it to a server."""

from __future__ import annotations

from pathlib import Path


def scripted_model_config(
    directory: Path,
    upstream_url: str,
    model_id: str,
    *,
    thinking: str = "none",
    supported: tuple[str, ...] = ("tools", "tool_choice", "reasoning", "response_format"),
    context_length: int = 65536,
) -> Path:
    """A modelport.toml in `directory` with `model_id` whose only backend is the upstream."""
    config = directory / "modelport.toml"
    parameters = ", ".join(f'"{name}"' for name in supported)
    config.write_text(
        f'[[models]]\nid = "{model_id}"\nname = "Scripted"\ndescription = "scripted upstream"\n'
        f'context_length = {context_length}\nthinking = "{thinking}"\n'
        f"supported_parameters = [{parameters}]\n"
        f'[[models.backends]]\nkind = "openai_compat"\nurl = "{upstream_url}"\n'
    )
    return config
