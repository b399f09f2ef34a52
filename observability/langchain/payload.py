"""Reading what LangChain hands the callbacks: generations, where logprobs sit, scalar fields.

Every reader takes ``Any`` and returns a clean value or None: callback payloads come from many
providers and versions, and a surprise must cost a field, never the record.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from observability.core.extract import PAYLOAD_KEYS
from observability.exporters._strings import utf8_safe

_FINISH_KEYS = ("finish_reason", "done_reason", "stop_reason")


@dataclass(frozen=True, slots=True)
class Choice:
    """What a record needs of one of a response's generations, read once."""

    logprobs: Any  # the provider's payload, as it came (``extract`` reads it)
    text: str | None  # the generation's text as LangChain gives it (may be empty)
    response_model: str | None
    response_id: str | None
    finish_reason: str | None
    input_tokens: int | None
    output_tokens: int | None


def read_response(response: Any) -> list[Choice]:
    """Every choice of an ``on_llm_end`` / ``on_llm_error`` response, at least one (an empty one
    when the response holds none: an error before any output)."""
    llm_output = as_mapping(getattr(response, "llm_output", None))
    return [_choice(generation, llm_output) for generation in choices(response) or [None]]


def _choice(generation: Any, llm_output: Mapping[str, Any]) -> Choice:
    info = as_mapping(getattr(generation, "generation_info", None))
    message = getattr(generation, "message", None)
    meta = as_mapping(getattr(message, "response_metadata", None))
    usage = as_mapping(getattr(message, "usage_metadata", None))
    token_usage = as_mapping(llm_output.get("token_usage") or meta.get("token_usage"))
    text = getattr(generation, "text", None)
    return Choice(
        logprobs=logprobs_payload(generation),
        text=text if isinstance(text, str) else None,
        response_model=as_text(meta.get("model_name") or meta.get("model") or llm_output.get("model_name")),
        response_id=response_id(meta, llm_output, message),
        finish_reason=as_text(next((src[k] for src in (info, meta) for k in _FINISH_KEYS if src.get(k)), None)),
        input_tokens=as_int(usage.get("input_tokens", token_usage.get("prompt_tokens"))),
        output_tokens=as_int(usage.get("output_tokens", token_usage.get("completion_tokens"))),
    )


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
    """The logprobs a provider attached to one generation, wherever it put them: in
    ``generation_info`` or ``response_metadata`` (every integration today, and the OpenAI Responses
    API once recovered, see ``observability.langchain.responses_logprobs``), else on the message's content
    blocks (``{"type": "text", "text": ..., "logprobs": [...]}``, where a langchain-openai that
    reads the Responses API's logprobs itself may put them, langchain#36211)."""
    message = getattr(generation, "message", None)
    for source in (getattr(generation, "generation_info", None), getattr(message, "response_metadata", None)):
        if isinstance(source, Mapping):
            for key in PAYLOAD_KEYS:
                if source.get(key) is not None:
                    return source[key]
    content = getattr(message, "content", None)
    if type(content) is list:
        blocks = [block["logprobs"] for block in content
                  if type(block) is dict and block.get("type") in _TEXT_BLOCKS and type(block.get("logprobs")) is list]
        if blocks:
            return [entry for entries in blocks for entry in entries]
    return None


_TEXT_BLOCKS = ("text", "output_text")

_ASKING_KEYS = ("logprobs", "top_logprobs", "response_logprobs")
RESPONSES_LOGPROBS = "message.output_text.logprobs"
"""The Responses API's ``include`` entry that asks for logprobs."""
# A model LangChain cannot serialise (ChatOllama, ChatLiteLLM) reaches the callbacks only as its
# repr, in which pydantic writes the fields set on the constructor: ``ChatOllama(model='x',
# logprobs=True, ...)``, ``ChatLiteLLM(..., model_kwargs={'logprobs': True, 'top_logprobs': 3})``.
_ASKING_REPR = re.compile(r"[(,] ?(?:logprobs=(?:True|[1-9])|top_logprobs=[1-9]|response_logprobs=True)\b"
                          r"|[(,] ?model_kwargs=\{[^}]*'(?:logprobs|top_logprobs)': (?:True|[1-9])")


def logprobs_requested(params: Any, serialized: Any) -> bool:
    """Whether the model call asked for logprobs, however the app asked.

    ``params`` is the run's ``invocation_params`` (``.bind(...)`` arguments, and the constructor
    fields of the integrations that copy them there); it decides when it names any of
    ``logprobs`` / ``top_logprobs`` / ``response_logprobs`` (so ``.bind(logprobs=False)`` wins over
    a constructor's ``logprobs=True``) or has the Responses API's ``include`` entry. Else
    ``model_kwargs`` (in the params, or on the constructor), then the constructor fields in
    ``serialized`` (``kwargs`` for a serialisable model, the ``repr`` for another: ChatOllama's
    ``logprobs=True`` is found nowhere else)."""
    params = as_mapping(params)
    decided = _asks(params)
    if decided is not None:
        return decided
    serialized = as_mapping(serialized)
    constructor = as_mapping(serialized.get("kwargs"))
    for source in (as_mapping(params.get("model_kwargs")), constructor, as_mapping(constructor.get("model_kwargs"))):
        decided = _asks(source)
        if decided is not None:
            return decided
    shown = serialized.get("repr") if serialized.get("type") == "not_implemented" else None
    return isinstance(shown, str) and _ASKING_REPR.search(shown) is not None


def _asks(source: Mapping[str, Any]) -> bool | None:
    """True/False when ``source`` says whether logprobs are asked for; None when it is silent."""
    include = source.get("include")
    if isinstance(include, (list, tuple)) and RESPONSES_LOGPROBS in include:
        return True
    values = [source.get(key) for key in _ASKING_KEYS if source.get(key) is not None]
    if not values:
        return None
    return any(value not in (False, 0) for value in values)


def run_name(serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> str:
    name = kwargs.get("name")
    if not name and isinstance(serialized, Mapping):
        name = serialized.get("name") or (serialized.get("id") or [None])[-1]
    return str(name) if name else "unknown"


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

