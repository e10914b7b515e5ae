"""Qwen3's own text formats, for upstream engines that take raw prompts. Pure, no I/O."""
