"""The environment variables that attach the handler without code, as named constants.

Read once, when zero-code activation happens (``import observability`` with
``OBSERVABILITY_LANGCHAIN=1``, or ``ConfidenceInstrumentor().instrument()``), never per run.
A value we cannot read is the user's mistake: ``ConfigError`` names the variable and what it
accepts, rather than guessing. Content capture is not here: the exporters read OpenTelemetry's
own ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from observability._score import DEFAULT_LOW_CONFIDENCE_THRESHOLD

OBSERVABILITY_LANGCHAIN = "OBSERVABILITY_LANGCHAIN"
OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD = "OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD"
OBSERVABILITY_METADATA_LABELS = "OBSERVABILITY_METADATA_LABELS"
OBSERVABILITY_TRACE_RUN_TREE = "OBSERVABILITY_TRACE_RUN_TREE"
OBSERVABILITY_ENABLE_LOGPROBS = "OBSERVABILITY_ENABLE_LOGPROBS"
OBSERVABILITY_TOP_LOGPROBS = "OBSERVABILITY_TOP_LOGPROBS"
OBSERVABILITY_PROMETHEUS_PORT = "OBSERVABILITY_PROMETHEUS_PORT"
OBSERVABILITY_PROMETHEUS_HOST = "OBSERVABILITY_PROMETHEUS_HOST"

DEFAULT_TOP_LOGPROBS = 5
MAX_TOP_LOGPROBS = 20  # OpenAI's documented upper bound for top_logprobs

Activation = Literal["auto", "on", "off"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ConfigError(ValueError):
    """An environment variable of ours holds a value we cannot use; the message names the fix."""


@dataclass(frozen=True, slots=True)
class AttachConfig:
    """How zero-code activation configures the handler it attaches to the whole process.

    Each field names its environment variable and default. Build it with ``from_env()``.
    """

    activation: Activation = "auto"
    """``OBSERVABILITY_LANGCHAIN``: ``1``/``true`` attaches to every LangChain run as soon as
    ``observability`` is imported; ``0``/``false`` never attaches process-wide (the OpenTelemetry
    instrumentor then does nothing either); unset (``auto``) attaches only when the instrumentor
    runs (``opentelemetry-instrument``)."""

    low_confidence_threshold: float = DEFAULT_LOW_CONFIDENCE_THRESHOLD
    """``OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD``: token probability below which a token counts
    as low-confidence, in (0, 1]. Default 0.5."""

    metadata_labels: tuple[str, ...] = ()
    """``OBSERVABILITY_METADATA_LABELS``: comma-separated run-metadata keys allowed as metric
    labels (e.g. ``route,tenant``). Default none: no metadata becomes a label."""

    trace_run_tree: bool = False
    """``OBSERVABILITY_TRACE_RUN_TREE``: ``true`` also makes spans for chain, tool and retriever
    runs, so model spans hang under the chain or agent step that called them. Default false."""

    enable_logprobs: bool = False
    """``OBSERVABILITY_ENABLE_LOGPROBS``: ``true`` makes OpenAI-compatible chat models request
    logprobs when the app did not ask (see ``observability._enable_logprobs``). Default false:
    it changes the request."""

    top_logprobs: int = DEFAULT_TOP_LOGPROBS
    """``OBSERVABILITY_TOP_LOGPROBS``: alternatives requested per token when logprobs are turned
    on by us, 0–20. Default 5."""

    prometheus_port: int | None = None
    """``OBSERVABILITY_PROMETHEUS_PORT``: when set, zero-code activation serves Prometheus
    ``/metrics`` (OpenMetrics, so exemplars show) on this port. Default unset: no server."""

    prometheus_host: str = "127.0.0.1"
    """``OBSERVABILITY_PROMETHEUS_HOST``: the address that server binds. Default ``127.0.0.1``
    (loopback only); set ``0.0.0.0`` to let a Prometheus on another host scrape it."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AttachConfig:
        """Read every variable once. Raises ``ConfigError`` naming the variable on a bad value."""
        env = os.environ if environ is None else environ
        return cls(
            activation=_activation(env),
            low_confidence_threshold=_threshold(env),
            metadata_labels=tuple(k.strip() for k in env.get(OBSERVABILITY_METADATA_LABELS, "").split(",")
                                  if k.strip()),
            trace_run_tree=_flag(env, OBSERVABILITY_TRACE_RUN_TREE, default=False),
            enable_logprobs=_flag(env, OBSERVABILITY_ENABLE_LOGPROBS, default=False),
            top_logprobs=_int(env, OBSERVABILITY_TOP_LOGPROBS, DEFAULT_TOP_LOGPROBS, 0, MAX_TOP_LOGPROBS),
            prometheus_port=_port(env),
            prometheus_host=env.get(OBSERVABILITY_PROMETHEUS_HOST, "").strip() or "127.0.0.1",
        )


def _activation(env: Mapping[str, str]) -> Activation:
    raw = env.get(OBSERVABILITY_LANGCHAIN, "").strip().lower()
    if not raw:
        return "auto"
    if raw in _TRUE:
        return "on"
    if raw in _FALSE:
        return "off"
    raise ConfigError(f"{OBSERVABILITY_LANGCHAIN}={raw!r}: use 1/true to attach to every LangChain run, "
                      "0/false to never attach process-wide, or leave it unset")


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r}: use true/1 or false/0")


def _threshold(env: Mapping[str, str]) -> float:
    raw = env.get(OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD, "").strip()
    if not raw:
        return DEFAULT_LOW_CONFIDENCE_THRESHOLD
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise ConfigError(f"{OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD}={raw!r}: use a probability above 0 "
                          "and at most 1, e.g. 0.5")
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r}: use a whole number from {low} to {high}")
    return value


def _port(env: Mapping[str, str]) -> int | None:
    if not env.get(OBSERVABILITY_PROMETHEUS_PORT, "").strip():
        return None
    return _int(env, OBSERVABILITY_PROMETHEUS_PORT, 0, 1, 65535)
