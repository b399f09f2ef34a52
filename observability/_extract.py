"""Provider payload -> ``TokenLogprob`` list. Knows provider formats and nothing else.

Standard library only. Never raises: a malformed entry is left out and counted in
``TokenLogprobs.skipped``; an unrecognised payload counts as one skipped entry.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping
from typing import Any

from observability._text import token_bytes
from observability._types import TokenLogprob, TokenLogprobs

POSITIVE_NOISE = 1e-4
"""Logprobs in (0, POSITIVE_NOISE] are float noise around 0 and read as 0; larger positive
values are malformed."""

# Where providers put logprobs inside generation_info / response_metadata, most common first.
PAYLOAD_KEYS = ("logprobs", "logprobs_result")
_MAX_DEPTH = 4
# Keys of the chat and legacy shapes; llama.cpp's completions endpoint sends both at once, the
# legacy ones as None.
_KNOWN_EMPTY = ("content", "refusal", "token_logprobs")


def extract_token_logprobs(payload: object) -> TokenLogprobs:
    """Read the tokens of one response from whatever a provider returned.

    Accepts the OpenAI chat shape (``{"content": [...], "refusal": ...}``, the bare ``content``
    list, or the openai SDK's objects), the legacy completions shape (``tokens`` /
    ``token_logprobs`` / ``top_logprobs`` / ``text_offset``), Ollama's list of objects, Vertex's
    ``logprobs_result`` list, and a ``generation_info`` / ``response_metadata`` mapping holding
    any of these. None gives an empty list.
    """
    out = TokenLogprobs()
    try:
        _extract(payload, out, 0)
    except Exception:  # a payload we cannot even walk: count it, never raise
        out.skipped += 1
    return out


def chat_content(payload: object) -> list[Any] | None:
    """The entry list of an OpenAI chat-shaped payload, a plain ``{"content": [...], ...}`` dict,
    else None. ``extract_token_logprobs`` reads such a payload as exactly that list; a caller can
    compare lists to learn that two payloads hold the same entries without extracting either."""
    if type(payload) is dict:
        content = payload.get("content")
        if type(content) is list and not isinstance(payload.get("token_logprobs"), (list, tuple)):
            return content
    return None


def entry_piece(entry: dict[str, Any]) -> bytes:
    """The raw UTF-8 of the token extracted from a plain-dict chat entry: its ``bytes`` when
    valid, else its ``token`` text (what ``token_offsets`` reads of that token)."""
    raw = _bytes(entry.get("bytes"))
    if raw is not None:
        return raw
    text = entry.get("token")
    return token_bytes(text if isinstance(text, str) else None)


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _has(obj: Any, key: str) -> bool:
    if isinstance(obj, Mapping):
        return key in obj
    return hasattr(obj, key) and not isinstance(obj, (str, bytes))


def _extract(payload: Any, out: TokenLogprobs, depth: int) -> None:
    if payload is None or depth > _MAX_DEPTH:
        out.skipped += payload is not None
        return
    if isinstance(payload, (list, tuple)):
        _entries(payload, out)
    elif isinstance(_get(payload, "token_logprobs"), (list, tuple)):
        _legacy(payload, out)
    elif _get(payload, "content") is not None:
        _extract(_get(payload, "content"), out, depth + 1)
    elif _get(payload, "refusal") is not None:
        _extract(_get(payload, "refusal"), out, depth + 1)
    elif any(_has(payload, key) for key in _KNOWN_EMPTY):
        return  # a known shape holding no tokens, e.g. {"content": None, "refusal": None}
    elif isinstance(payload, Mapping):
        for key in PAYLOAD_KEYS:
            if key in payload:
                _extract(payload[key], out, depth + 1)
                return
        out.skipped += bool(payload)
    else:
        out.skipped += 1


def _entries(entries: list[Any] | tuple[Any, ...], out: TokenLogprobs) -> None:
    append = out.append
    for entry in entries:
        token = _entry(entry)
        if token is None:
            out.skipped += 1
        else:
            append(token)


def _entry(entry: Any) -> TokenLogprob | None:
    if type(entry) is dict:  # a JSON-decoded entry, the common case: the same rules, fewer calls
        logprob = entry.get("logprob")
        if type(logprob) is not float or not logprob <= 0.0:  # else _logprob would return it as is
            logprob = _logprob(logprob)
            if logprob is None:
                return None
        text = entry.get("token")
        return _new_token(text if isinstance(text, str) else None, _bytes(entry.get("bytes")), logprob,
                          _alternatives(entry.get("top_logprobs")))
    if entry is None or isinstance(entry, (str, bytes, int, float)):
        return None
    logprob = _logprob(_get(entry, "logprob"))
    if logprob is None:
        return None
    text = _get(entry, "token")
    return TokenLogprob(
        token=text if isinstance(text, str) else None,
        bytes=_bytes(_get(entry, "bytes")),
        logprob=logprob,
        top_logprobs=_alternatives(_get(entry, "top_logprobs")),
    )


def _legacy(payload: Any, out: TokenLogprobs) -> None:
    tokens = _get(payload, "tokens")
    logprobs = _get(payload, "token_logprobs")
    tops = _get(payload, "top_logprobs")
    tokens = tokens if isinstance(tokens, (list, tuple)) else ()
    logprobs = logprobs if isinstance(logprobs, (list, tuple)) else ()
    tops = tops if isinstance(tops, (list, tuple)) else ()
    for i in range(max(len(tokens), len(logprobs))):
        raw = logprobs[i] if i < len(logprobs) else None
        if raw is None and i == 0:
            continue  # the first token of an echoed prompt has no logprob: not malformed
        logprob = _logprob(raw)
        if logprob is None:
            out.skipped += 1
            continue
        text = tokens[i] if i < len(tokens) else None
        out.append(TokenLogprob(
            token=text if isinstance(text, str) else None,
            bytes=None,
            logprob=logprob,
            top_logprobs=_alternatives(tops[i] if i < len(tops) else None),
        ))


def _logprob(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        logprob = float(value)
    except OverflowError:  # an int no float can hold: one malformed entry, not a lost response
        return None
    if logprob > 0.0:
        return 0.0 if logprob <= POSITIVE_NOISE else None
    return logprob if logprob <= 0.0 else None  # the else is NaN


def _bytes(value: Any) -> bytes | None:
    if type(value) is not list:  # JSON's list of ints is the common case
        if isinstance(value, bytes):
            return value
        if isinstance(value, bytearray):
            return bytes(value)
    if isinstance(value, (list, tuple)):
        try:
            return bytes(value)
        except (TypeError, ValueError):
            return None
    return None


def _alternatives(value: Any) -> tuple[tuple[str | None, float], ...]:
    """Alternatives as (text, logprob) pairs, best first; malformed ones are dropped."""
    pairs: list[tuple[str | None, float]] = []
    # (a list is never a Mapping; testing that first skips the slow ABC check in the common case)
    if type(value) is not list and isinstance(value, Mapping):  # legacy completions: {token: logprob}
        for text, raw in value.items():
            logprob = _logprob(raw)
            if logprob is not None:
                pairs.append((text if isinstance(text, str) else None, logprob))
    elif isinstance(value, (list, tuple)):
        append = pairs.append
        for alt in value:
            if type(alt) is dict:  # the common case, as in _entry
                logprob = alt.get("logprob")
                if type(logprob) is not float or not logprob <= 0.0:
                    logprob = _logprob(logprob)
                    if logprob is None:
                        continue
                text = alt.get("token")
                append((text if isinstance(text, str) else None, logprob))
                continue
            if alt is None or isinstance(alt, (str, bytes, int, float)):
                continue
            logprob = _logprob(_get(alt, "logprob"))
            if logprob is not None:
                text = _get(alt, "token")
                pairs.append((text if isinstance(text, str) else None, logprob))
    else:
        return ()
    pairs.sort(key=_LOGPROB_OF_PAIR, reverse=True)  # stable: ties keep the provider's order
    return tuple(pairs)


_LOGPROB_OF_PAIR = operator.itemgetter(1)


def _token_factory() -> Callable[[str | None, bytes | None, float, tuple[tuple[str | None, float], ...]],
                                 TokenLogprob]:
    """A faster ``TokenLogprob(token, bytes, logprob, top_logprobs)``.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``; filling the
    four slots directly builds the same object in about half the time, and extraction builds
    one per token. Falls back to the class itself if its shape ever changes (other fields, a
    ``__post_init__``, no slots), checked once here by comparing with a normally built one.
    """
    names = ("token", "bytes", "logprob", "top_logprobs")
    try:
        if (tuple(f.name for f in dataclasses.fields(TokenLogprob)) != names
                or hasattr(TokenLogprob, "__post_init__")):
            return TokenLogprob
        set_token, set_bytes, set_logprob, set_top = (TokenLogprob.__dict__[n].__set__ for n in names)
        new = object.__new__

        def make(token: str | None, raw: bytes | None, logprob: float,
                 top_logprobs: tuple[tuple[str | None, float], ...]) -> TokenLogprob:
            made: TokenLogprob = new(TokenLogprob)
            set_token(made, token)
            set_bytes(made, raw)
            set_logprob(made, logprob)
            set_top(made, top_logprobs)
            return made

        probe = ("a", b"a", -0.5, (("a", -0.5),))
        if make(*probe) != TokenLogprob(*probe):
            return TokenLogprob
        return make
    except Exception:  # any surprise: the plain constructor is always right
        return TokenLogprob


_new_token = _token_factory()
