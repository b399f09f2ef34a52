"""The environment variables that attach the handler without code, as named constants.

Read only when activation is asked for (``OBSERVABILITY_LANGCHAIN=1`` at ``import observability``,
or ``ConfidenceInstrumentor().instrument()`` under ``opentelemetry-instrument``), once, never per
run. ``read_env()`` never raises: each value it cannot use becomes a ``ConfigProblem`` naming the
variable, the fix and what runs without it (see docs/configuration.md), and the rest of the
configuration still applies. ``AttachConfig.from_env()`` is the strict form for code: it raises
``ConfigError`` on the first bad value. Content capture is not here: the exporters read
OpenTelemetry's own ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from observability.core.calibration import CalibrationError, CalibrationMap, load_calibration
from observability.core.score import DEFAULT_LOW_CONFIDENCE_THRESHOLD
from observability.langchain.enable_logprobs import DEFAULT_TOP_LOGPROBS, MAX_TOP_LOGPROBS

OBSERVABILITY_LANGCHAIN = "OBSERVABILITY_LANGCHAIN"
OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD = "OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD"
OBSERVABILITY_METADATA_LABELS = "OBSERVABILITY_METADATA_LABELS"
OBSERVABILITY_TRACE_RUN_TREE = "OBSERVABILITY_TRACE_RUN_TREE"
OBSERVABILITY_ENABLE_LOGPROBS = "OBSERVABILITY_ENABLE_LOGPROBS"
OBSERVABILITY_TOP_LOGPROBS = "OBSERVABILITY_TOP_LOGPROBS"
OBSERVABILITY_PROMETHEUS_PORT = "OBSERVABILITY_PROMETHEUS_PORT"
OBSERVABILITY_PROMETHEUS_HOST = "OBSERVABILITY_PROMETHEUS_HOST"
OBSERVABILITY_CALIBRATION = "OBSERVABILITY_CALIBRATION"
VARIABLES = (OBSERVABILITY_LANGCHAIN, OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD, OBSERVABILITY_METADATA_LABELS,
             OBSERVABILITY_TRACE_RUN_TREE, OBSERVABILITY_ENABLE_LOGPROBS, OBSERVABILITY_TOP_LOGPROBS,
             OBSERVABILITY_PROMETHEUS_PORT, OBSERVABILITY_PROMETHEUS_HOST, OBSERVABILITY_CALIBRATION)

DEFAULT_PROMETHEUS_HOST = "127.0.0.1"

Activation = Literal["auto", "on", "off"]

TRUE_VALUES = ("1", "true", "yes", "on")
FALSE_VALUES = ("0", "false", "no", "off")
"""Switch values, matched after stripping spaces and ignoring case; empty counts as unset."""
SWITCH_HINT = "use 1/true/yes/on or 0/false/no/off"

# What runs without a variable whose value is unusable (the "part" it controls).
NOT_ATTACHED = "the handler is not attached; the app runs unobserved"
NO_LABELS = "attached without metadata labels"
NO_RUN_TREE = "attached with model spans only"
NO_LOGPROBS_PATCH = "attached; requests are sent as the app builds them (logprobs not turned on)"
NO_METRICS_SERVER = "attached without the /metrics server"
NO_CALIBRATION = "attached without calibration (no calibrated probability is exported)"

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_RESERVED_LABELS = frozenset({"provider", "model", "status", "logprobs", "le", "quantile", "job", "instance"})
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


class ConfigError(ValueError):
    """An environment variable of ours holds a value we cannot use; the message names the fix."""

    def __init__(self, variable: str, value: str, fix: str) -> None:
        super().__init__(f"{variable}={_shown(value)}: {fix}")
        self.variable, self.value, self.fix = variable, value, fix


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One unusable value found by ``read_env()``: the variable, the fix, what runs without it."""

    variable: str
    value: str
    fix: str
    consequence: str

    @property
    def message(self) -> str:
        return f"{self.variable}={_shown(self.value)} is not usable: {self.fix}; {self.consequence}"

    @property
    def fatal(self) -> bool:
        """True when nothing is attached because of it."""
        return self.consequence == NOT_ATTACHED


@dataclass(frozen=True, slots=True)
class AttachConfig:
    """How zero-code activation configures the handler it attaches to the whole process.

    Each field names its environment variable and default. Build it with ``from_env()`` (strict)
    or ``read_env()`` (lenient, for activation).
    """

    activation: Activation = "auto"
    """``OBSERVABILITY_LANGCHAIN``: on (``1``/``true``/``yes``/``on``) attaches to every LangChain run
    as soon as ``observability`` is imported; off (``0``/``false``/``no``/``off``) never attaches
    process-wide (the OpenTelemetry instrumentor then does nothing either); unset (``auto``)
    attaches only when the instrumentor runs (``opentelemetry-instrument``)."""

    low_confidence_threshold: float = DEFAULT_LOW_CONFIDENCE_THRESHOLD
    """``OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD``: token probability below which a token counts
    as low-confidence, in (0, 1]. Default 0.5."""

    metadata_labels: tuple[str, ...] = ()
    """``OBSERVABILITY_METADATA_LABELS``: comma-separated run-metadata keys allowed as metric
    labels (e.g. ``route,tenant``). Default none: no metadata becomes a label."""

    trace_run_tree: bool = False
    """``OBSERVABILITY_TRACE_RUN_TREE``: on also makes spans for chain, tool and retriever
    runs, so model spans hang under the chain or agent step that called them. Default off."""

    enable_logprobs: bool = False
    """``OBSERVABILITY_ENABLE_LOGPROBS``: on makes OpenAI-compatible chat models request
    logprobs when the app did not ask (see ``observability.langchain.enable_logprobs``). Default off:
    it changes the request."""

    top_logprobs: int = DEFAULT_TOP_LOGPROBS
    """``OBSERVABILITY_TOP_LOGPROBS``: alternatives requested per token when logprobs are turned
    on by us, 0–20. Default 5."""

    prometheus_port: int | None = None
    """``OBSERVABILITY_PROMETHEUS_PORT``: when set, zero-code activation serves Prometheus
    ``/metrics`` (OpenMetrics, so exemplars show) on this port. Default unset: no server."""

    prometheus_host: str = DEFAULT_PROMETHEUS_HOST
    """``OBSERVABILITY_PROMETHEUS_HOST``: the address that server binds. Default ``127.0.0.1``
    (loopback only); set ``0.0.0.0`` to let a Prometheus on another host scrape it."""

    calibration: CalibrationMap | None = None
    """``OBSERVABILITY_CALIBRATION``: the path of a calibration map (``python -m observability
    evaluate ... --calibration OUT.json``), read at activation; the handler then exports the
    calibrated probability of each answer being right. Default unset: no calibration."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AttachConfig:
        """Read every variable. Raises ``ConfigError`` naming the variable on the first bad value."""
        reading = read_env(environ)
        if reading.problems:
            first = reading.problems[0]
            raise ConfigError(first.variable, first.value, first.fix)
        return reading.config


@dataclass(frozen=True, slots=True)
class EnvReading:
    """What ``read_env()`` found: the usable configuration and every problem, in variable order."""

    config: AttachConfig
    problems: tuple[ConfigProblem, ...]

    @property
    def fatal(self) -> bool:
        return any(problem.fatal for problem in self.problems)


def read_activation(environ: Mapping[str, str] | None = None) -> tuple[Activation, ConfigProblem | None]:
    """``OBSERVABILITY_LANGCHAIN`` alone (nothing else is read unless activation is asked for).
    A bad value reads as ``off`` with its problem."""
    env = os.environ if environ is None else environ
    try:
        return _activation(env), None
    except ConfigError as exc:
        return "off", ConfigProblem(exc.variable, exc.value, exc.fix, NOT_ATTACHED)


def read_env(environ: Mapping[str, str] | None = None) -> EnvReading:
    """Read every variable; never raises. A bad value leaves its field at the default (and turns
    off the part it controls: see each reader's consequence) and is listed in ``problems``."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[ConfigProblem] = []
    for field, read, consequence in _READERS:
        try:
            values[field] = read(env)
        except ConfigError as exc:
            problems.append(ConfigProblem(exc.variable, exc.value, exc.fix, consequence))
    failed = {problem.variable for problem in problems}
    if OBSERVABILITY_TOP_LOGPROBS in failed:
        values["enable_logprobs"] = False  # the patch needs a count; it stays off
    if OBSERVABILITY_PROMETHEUS_HOST in failed:
        values["prometheus_port"] = None  # the server needs an address; it stays off
    return EnvReading(AttachConfig(**values), tuple(problems))


def with_overrides(config: AttachConfig, **overrides: Any) -> AttachConfig:
    """``config`` with fields replaced (e.g. the instrumentor's ``enable_logprobs=``)."""
    return dataclasses.replace(config, **overrides) if overrides else config


def _shown(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


def _activation(env: Mapping[str, str]) -> Activation:
    raw = env.get(OBSERVABILITY_LANGCHAIN, "")
    value = _switch(raw, OBSERVABILITY_LANGCHAIN, "to attach to every LangChain run, or leave it unset")
    return "auto" if value is None else "on" if value else "off"


def _switch(raw: str, name: str, purpose: str = "") -> bool | None:
    text = raw.strip().lower()
    if not text:
        return None
    if text in TRUE_VALUES:
        return True
    if text in FALSE_VALUES:
        return False
    raise ConfigError(name, raw, f"{SWITCH_HINT}{' ' + purpose if purpose else ''}")


def _flag(name: str) -> Callable[[Mapping[str, str]], bool]:
    return lambda env: bool(_switch(env.get(name, ""), name))


def _threshold(env: Mapping[str, str]) -> float:
    raw = env.get(OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD, "")
    if not raw.strip():
        return DEFAULT_LOW_CONFIDENCE_THRESHOLD
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise ConfigError(OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD, raw,
                          "use a probability above 0 and at most 1, e.g. 0.5")
    return value


def _labels(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get(OBSERVABILITY_METADATA_LABELS, "")
    keys = tuple(dict.fromkeys(key.strip() for key in raw.split(",") if key.strip()))
    for key in keys:
        if not _LABEL_NAME.fullmatch(key) or key.startswith("__") or key in _RESERVED_LABELS:
            raise ConfigError(OBSERVABILITY_METADATA_LABELS, raw,
                              f"{key!r} cannot be a label: use comma-separated names of letters, digits and _ "
                              f"(not starting with a digit or __), none of {', '.join(sorted(_RESERVED_LABELS))}")
    return keys


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "")
    if not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(name, raw, f"use a whole number from {low} to {high}")
    return value


def _top(env: Mapping[str, str]) -> int:
    return _int(env, OBSERVABILITY_TOP_LOGPROBS, DEFAULT_TOP_LOGPROBS, 0, MAX_TOP_LOGPROBS)


def _port(env: Mapping[str, str]) -> int | None:
    if not env.get(OBSERVABILITY_PROMETHEUS_PORT, "").strip():
        return None
    return _int(env, OBSERVABILITY_PROMETHEUS_PORT, 0, 1, 65535)


def _host(env: Mapping[str, str]) -> str:
    raw = env.get(OBSERVABILITY_PROMETHEUS_HOST, "")
    host = raw.strip()
    if not host:
        return DEFAULT_PROMETHEUS_HOST
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_NAME.fullmatch(host):
            raise ConfigError(OBSERVABILITY_PROMETHEUS_HOST, raw,
                              "use an IP address (127.0.0.1, 0.0.0.0, ::1) or a host name") from None
    return host


def _calibration(env: Mapping[str, str]) -> CalibrationMap | None:
    raw = env.get(OBSERVABILITY_CALIBRATION, "")
    if not raw.strip():
        return None
    try:
        return load_calibration(raw.strip())
    except CalibrationError as exc:
        raise ConfigError(OBSERVABILITY_CALIBRATION, raw, str(exc)) from None
    except Exception as exc:  # the loader promises CalibrationError; the handler stays attached regardless
        raise ConfigError(OBSERVABILITY_CALIBRATION, raw, f"the file cannot be used ({type(exc).__name__}); "
                          "write one with: python -m observability evaluate ... --calibration OUT.json") from None


_READERS: tuple[tuple[str, Callable[[Mapping[str, str]], Any], str], ...] = (
    ("activation", _activation, NOT_ATTACHED),
    ("low_confidence_threshold", _threshold, NOT_ATTACHED),
    ("metadata_labels", _labels, NO_LABELS),
    ("trace_run_tree", _flag(OBSERVABILITY_TRACE_RUN_TREE), NO_RUN_TREE),
    ("enable_logprobs", _flag(OBSERVABILITY_ENABLE_LOGPROBS), NO_LOGPROBS_PATCH),
    ("top_logprobs", _top, NO_LOGPROBS_PATCH),
    ("prometheus_port", _port, NO_METRICS_SERVER),
    ("prometheus_host", _host, NO_METRICS_SERVER),
    ("calibration", _calibration, NO_CALIBRATION),
)
