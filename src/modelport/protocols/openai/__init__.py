"""The OpenAI Chat Completions wire format: server side (front door) and client side (upstreams)."""
