"""The ASGI application: routes, auth extraction, SSE streaming, error rendering."""
