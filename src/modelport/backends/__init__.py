"""Backends: the in-process llama.cpp engine and OpenAI-compatible upstreams.

Only this package imports an HTTP client or llama_cpp. Every backend speaks `Backend.stream`.
"""
