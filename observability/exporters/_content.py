"""Whether spans may carry content (token text). Off unless the user opts in.

``capture_content=None`` reads the standard OpenTelemetry GenAI variable
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``: ``true`` / ``false`` (any case); unset
means false; any other value logs a warning naming the variable and counts as false.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("observability")

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


def capture_content_from_env() -> bool:
    """The content-capture setting from ``CAPTURE_CONTENT_ENV`` (default false)."""
    raw = os.environ.get(CAPTURE_CONTENT_ENV)
    if raw is None or not raw.strip():
        return False
    value = raw.strip().lower()
    if value in ("true", "false"):
        return value == "true"
    logger.warning("observability: %s=%r is neither true nor false; content capture stays off",
                   CAPTURE_CONTENT_ENV, raw)
    return False


def resolve_capture_content(capture_content: bool | None) -> bool:
    """The constructor flag if given, else the environment variable."""
    if capture_content is None:
        return capture_content_from_env()
    if not isinstance(capture_content, bool):
        raise TypeError(f"capture_content must be True, False or None (read {CAPTURE_CONTENT_ENV}), "
                        f"got {capture_content!r}")
    return capture_content
