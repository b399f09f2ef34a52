"""Strings every exporter can carry.

One lone surrogate (JSON's ``"\\ud800"`` decodes to one, and providers send it) breaks a whole
OTLP batch or every later Prometheus scrape. So every string that leaves through an exporter goes
through ``utf8_safe``: the exporters for what the core hands them (token texts, field paths), and
the LangChain layer for what it reads from a response (model name, response id, finish reason),
so a record's own strings are safe for any exporter, ours or the app's.
"""

from __future__ import annotations


def utf8_safe(text: str) -> str:
    """``text`` with every character UTF-8 cannot encode replaced by ``?``."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")
