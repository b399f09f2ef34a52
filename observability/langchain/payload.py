"""Reading what LangChain hands the callbacks: generations, where logprobs sit, scalar fields.

Every reader takes ``Any`` and returns a clean value or None: callback payloads come from many
providers and versions, and a surprise must cost a field, never the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from observability.core.extract import PAYLOAD_KEYS
from observability.core.text import utf8_safe


def choices(response: Any) -> list[Any]:
    """The run's choices: ``generations[0]``. A model run answers one prompt; when a stream fails
    with an HTTP error, langchain-core appends a second list holding the error's body and headers
    (``chat_models._generate_response_from_error``), which is not a choice."""
    generations = getattr(response, "generations", None)
    if not isinstance(generations, list) or not generations or not isinstance(generations[0], list):
        return []
    return list(generations[0])


def response_id(meta: Mapping[str, Any], llm_output: Mapping[str, Any], message: Any) -> str | None:
    """The provider's id of the response (``chatcmpl-…``); LangChain's own ``lc_run--…`` message ids
    name the run, not the response, and are not used."""
    for value in (meta.get("id"), llm_output.get("id"), getattr(message, "id", None)):
        text = as_text(value)
        if text is not None and not text.startswith("lc_"):
            return text
    return None


def logprobs_payload(generation: Any) -> Any:
    """The logprobs a provider attached to one generation, wherever it put them."""
    for source in (getattr(generation, "generation_info", None),
                   getattr(getattr(generation, "message", None), "response_metadata", None)):
        if isinstance(source, Mapping):
            for key in PAYLOAD_KEYS:
                if source.get(key) is not None:
                    return source[key]
    return None


def run_name(serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> str:
    name = kwargs.get("name")
    if not name and isinstance(serialized, Mapping):
        name = serialized.get("name") or (serialized.get("id") or [None])[-1]
    return str(name) if name else "unknown"


def error_type_name(error: BaseException | None) -> str | None:
    """The exception's fully qualified class name (OTel's ``error.type``)."""
    if error is None:
        return None
    cls = type(error)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_text(value: Any) -> str | None:
    return utf8_safe(value) if isinstance(value, str) and value else None


def as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if -1e308 < value < 1e308 else None  # also keeps ints no float holds out


def as_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if -(2**63) <= value < 2**63 else None  # OTLP and Prometheus carry 64-bit ints

