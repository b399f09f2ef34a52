"""The OpenAI Responses API's logprobs, recovered where langchain-openai drops them.

OpenAI returns logprobs per ``output_text`` content part when the request has
``include=["message.output_text.logprobs"]`` (and ``top_logprobs``), and per
``response.output_text.delta`` event when streaming. langchain-openai (1.7, 1.8) parses neither
into its result (upstream langchain#36211, PR #36371 open). Two of its module functions still
hold the openai SDK's parsed objects, and the enabling patch (``observability.langchain.enable_logprobs``)
wraps them while it is on:

- ``_construct_lc_result_from_responses_api(response, ...)`` (``invoke`` / ``ainvoke``): the
  entries of every ``output_text`` part, in order, go to the generation's
  ``generation_info["logprobs"]``.
- ``_convert_responses_chunk_to_generation_chunk(chunk, ...)`` (``stream`` / ``astream``): each
  ``response.output_text.delta`` event's entries go to its chunk's ``generation_info["logprobs"]``,
  which LangChain merges into the end result as it does for Chat Completions.

Both are written in the Chat Completions shape ``{"content": [{token, bytes, logprob,
top_logprobs}]}`` that ``extract`` reads, so from there on a Responses answer is read exactly like a
Chat Completions one. Nothing is added when langchain-openai already put logprobs on the
generation or chunk (``logprobs`` in ``generation_info`` / ``response_metadata``, or on content
blocks): the upstream fix is then read as it is (``payload.logprobs_payload``), never twice.

Streamed entries carry no ``bytes``. Where a token is a whole piece of text, its bytes are its
UTF-8 (what OpenAI sends as ``bytes`` for it). A token that holds part of a character (Korean and
emoji often arrive as UTF-8 byte pieces) is spelled by OpenAI as escapes, ``"\\xeb\\xaf"``; those are
read back into the bytes they name, so the text and the character ranges of a streamed answer are
those of the same answer invoked. Without that, each piece would count as its escape text (8
characters for 2 bytes) and every range after it would be shifted. The one ambiguity is OpenAI's
own: a token whose text is literally backslash-x-hex reads as bytes too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from observability.langchain.payload import logprobs_payload

Failed = Callable[[str, BaseException], None]

RESULT_FUNCTION = "_construct_lc_result_from_responses_api"
CHUNK_FUNCTION = "_convert_responses_chunk_to_generation_chunk"
_DELTA = "response.output_text.delta"

# name -> (positional arguments, keyword arguments) the wrappers pass on: what langchain-openai 1.7/1.8 take.
EXPECTED: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    RESULT_FUNCTION: ((None,), {"schema": None, "metadata": None, "output_version": None}),
    CHUNK_FUNCTION: ((None, -1, -1, -1), {"schema": None, "metadata": None, "has_reasoning": False,
                                          "output_version": None}),
}

_ESCAPED = re.compile(r"(?:bytes:)?((?:\\x[0-9a-fA-F]{2})+)")


def _field(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def result_entries(response: Any) -> list[dict[str, Any]]:
    """Every logprobs entry of a Responses API response's ``output_text`` parts, in order."""
    entries: list[dict[str, Any]] = []
    for output in _field(response, "output") or ():
        if _field(output, "type") != "message":
            continue
        for part in _field(output, "content") or ():
            if _field(part, "type") == "output_text":
                entries.extend(map(_entry, _field(part, "logprobs") or ()))
    return entries


def delta_entries(logprobs: Iterable[Any]) -> list[dict[str, Any]]:
    """A ``response.output_text.delta`` event's entries, with the bytes the stream leaves out."""
    return [_entry(logprob) for logprob in logprobs]


def _entry(logprob: Any) -> dict[str, Any]:
    token = _field(logprob, "token")
    raw = _field(logprob, "bytes")
    if raw is None and isinstance(token, str):
        raw = token_bytes(token)
    return {"token": token, "bytes": raw, "logprob": _field(logprob, "logprob"),
            "top_logprobs": [{"token": _field(top, "token"), "logprob": _field(top, "logprob")}
                             for top in _field(logprob, "top_logprobs") or ()]}


def token_bytes(token: str) -> list[int]:
    """The bytes of a streamed token: the ones an escaped byte piece names (``"\\xeb\\xaf"``), else
    its UTF-8."""
    escaped = _ESCAPED.fullmatch(token)
    if escaped is not None:
        return list(bytes.fromhex(escaped.group(1).replace("\\x", "")))
    return list(token.encode("utf-8", "surrogatepass"))


def _has_logprobs(generation: Any) -> bool:
    """langchain-openai itself put logprobs on it (a release with the upstream fix)."""
    return logprobs_payload(generation) is not None


def _attach(generation: Any, entries: list[dict[str, Any]]) -> None:
    generation.generation_info = {**(generation.generation_info or {}), "logprobs": {"content": entries}}


def wrap_result(original: Callable[..., Any], failed: Failed) -> Callable[..., Any]:
    def _construct_lc_result_from_responses_api(response: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(response, *args, **kwargs)
        try:
            entries = result_entries(response)
            generations = result.generations
            if entries and len(generations) == 1 and not _has_logprobs(generations[0]):
                _attach(generations[0], entries)
        except Exception as exc:
            failed(RESULT_FUNCTION, exc)
        return result

    return _construct_lc_result_from_responses_api


def wrap_chunk(original: Callable[..., Any], failed: Failed) -> Callable[..., Any]:
    def _convert_responses_chunk_to_generation_chunk(chunk: Any, *args: Any, **kwargs: Any) -> Any:
        converted = original(chunk, *args, **kwargs)
        try:
            if getattr(chunk, "type", None) == _DELTA:
                generation = converted[3]
                logprobs = getattr(chunk, "logprobs", None)
                if generation is not None and logprobs and not _has_logprobs(generation):
                    _attach(generation, delta_entries(logprobs))
        except Exception as exc:
            failed(CHUNK_FUNCTION, exc)
        return converted

    return _convert_responses_chunk_to_generation_chunk
