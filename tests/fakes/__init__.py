"""Scripted stand-ins for upstream servers, speaking the real wire protocols over HTTP."""
