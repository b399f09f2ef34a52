"""Whether spans may carry content (token text, JSON field values). Off unless the user opts in.

``capture_content=None`` reads the standard OpenTelemetry GenAI variable
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` the way the contrib GenAI instrumentations
(``opentelemetry-instrumentation-openai-v2``, ``opentelemetry-util-genai``) do, which depends on
``OTEL_SEMCONV_STABILITY_OPT_IN``:

- by default: ``true`` / ``false`` (any case); unset means false; any other value logs a warning
  naming the variable and counts as false;
- when ``OTEL_SEMCONV_STABILITY_OPT_IN`` (a comma-separated list) holds ``gen_ai_latest_experimental``:
  one of ``NO_CONTENT`` / ``SPAN_ONLY`` / ``EVENT_ONLY`` / ``SPAN_AND_EVENT`` (any case); unset means
  ``NO_CONTENT``; any other value (``true`` included, as there) logs a warning and counts as
  ``NO_CONTENT``. Our content sits on span events, part of the span, so ``SPAN_ONLY`` and
  ``SPAN_AND_EVENT`` turn it on; ``EVENT_ONLY`` (content in log-record events only, which we do not
  emit) and ``NO_CONTENT`` leave it off.

That variable's reading is the only thing the opt-in changes here: every name we emit is already
the latest experimental one (``gen_ai.provider.name``, never the replaced ``gen_ai.system``), so
there is no older set of names to keep emitting by default.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("observability")

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
SEMCONV_STABILITY_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
GEN_AI_LATEST_EXPERIMENTAL = "gen_ai_latest_experimental"
CONTENT_ON_SPANS = {"NO_CONTENT": False, "SPAN_ONLY": True, "EVENT_ONLY": False, "SPAN_AND_EVENT": True}
"""The experimental-mode values of ``CAPTURE_CONTENT_ENV`` → whether our span events carry content."""


def latest_experimental() -> bool:
    """True when ``OTEL_SEMCONV_STABILITY_OPT_IN`` lists ``gen_ai_latest_experimental``."""
    raw = os.environ.get(SEMCONV_STABILITY_ENV) or ""
    return GEN_AI_LATEST_EXPERIMENTAL in (part.strip() for part in raw.split(","))


def capture_content_from_env() -> bool:
    """The content-capture setting from ``CAPTURE_CONTENT_ENV`` (default false)."""
    raw = os.environ.get(CAPTURE_CONTENT_ENV)
    if latest_experimental():
        if raw is None or not raw.strip():
            return False
        mode = raw.strip().upper()
        if mode in CONTENT_ON_SPANS:
            return CONTENT_ON_SPANS[mode]
        logger.warning("observability: %s=%r is not one of %s (%s=%s); content capture stays off",
                       CAPTURE_CONTENT_ENV, raw, ", ".join(CONTENT_ON_SPANS), SEMCONV_STABILITY_ENV,
                       GEN_AI_LATEST_EXPERIMENTAL)
        return False
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
