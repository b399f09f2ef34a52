"""Exporters: where finished ``ResponseRecord``s go. Each knows its SDK, nothing of LangChain."""

from __future__ import annotations

from observability._types import Exporter


def default_exporters() -> list[Exporter]:
    """The exporters a handler gets when none are given."""
    return []
