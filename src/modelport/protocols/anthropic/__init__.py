"""The Anthropic Messages API wire format (front door)."""
