"""Provider payload -> ``TokenLogprob`` list. Knows provider formats and nothing else.

Standard library only. Never raises: a malformed entry is left out and counted in
``TokenLogprobs.skipped``; an unrecognised payload counts as one skipped entry.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

from observability._types import TokenLogprob, TokenLogprobs

POSITIVE_NOISE = 1e-4
"""Logprobs in (0, POSITIVE_NOISE] are float noise around 0 and read as 0; larger positive
values are malformed."""

LOGPROB_FLOOR = math.log(2.2250738585072014e-308)
"""About -708.4, the log of the smallest normal float. Sums of logprobs (``_score``,
``_field_confidence``) use max(lp, floor) so that a token of probability 0 (lp = -inf) keeps every
figure finite; its probability still reads as 0. Defined here, beside ``POSITIVE_NOISE``, so that
both readers of logprobs take the two constants from the module every logprob comes through."""

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


def extract_response(end_payload: object, streamed: Sequence[object]) -> TokenLogprobs | None:
    """The tokens of one streamed or non-streamed response: ``end_payload`` is the logprobs the run's
    end (or error) event holds, ``streamed`` the logprobs each streamed chunk carried, in order.
    None when neither holds any.

    Reconciling rule: the longer list wins when it is consistent with the shorter, i.e. the shorter
    is its beginning or its end (entry for entry); otherwise the end event wins. So a plain stream
    (end event = every chunk's entries merged) reads the end event; a stream whose end event keeps
    only the last chunk's entries (langchain-core 1.8's v3 events) or a partial result that misses
    the last chunk reads the chunks; a non-streamed call reads the end event.
    """
    if not streamed:
        return None if end_payload is None else extract_token_logprobs(end_payload)
    end_entries = [] if end_payload is None else _entry_list(end_payload)
    chunk_entries = _concatenated(streamed)
    if end_entries is not None and chunk_entries is not None:  # plain shapes: compare the raw entries
        if len(chunk_entries) > len(end_entries) and _consistent(end_entries, chunk_entries):
            return extract_token_logprobs(chunk_entries)
        return extract_token_logprobs(end_entries) if end_payload is not None else None
    from_chunks = TokenLogprobs()
    for payload in streamed:
        tokens = extract_token_logprobs(payload)
        from_chunks += tokens
        from_chunks.skipped += tokens.skipped
    from_end = extract_token_logprobs(end_payload) if end_payload is not None else TokenLogprobs()
    if len(from_chunks) > len(from_end) and _consistent(from_end, from_chunks):
        return from_chunks
    return from_end if end_payload is not None else None


def _entry_list(payload: object) -> list[Any] | None:
    """The entry list of a chat-shaped payload (``{"content": [...], ...}`` or the bare list)."""
    if type(payload) is list:
        return payload
    if type(payload) is dict:
        content = payload.get("content")
        if type(content) is list and not isinstance(payload.get("token_logprobs"), (list, tuple)):
            return content
    return None


def _concatenated(payloads: Sequence[object]) -> list[Any] | None:
    entries: list[Any] = []
    for payload in payloads:
        listed = _entry_list(payload)
        if listed is None:
            return None
        entries += listed
    return entries


def _consistent(shorter: Sequence[Any], longer: Sequence[Any]) -> bool:
    n = len(shorter)
    return not n or list(shorter) == list(longer[:n]) or list(shorter) == list(longer[-n:])


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
    """Entries of the chat shape. JSON-decoded entries (plain dicts, float logprobs <= 0, string
    texts, alternatives best first), what every OpenAI-compatible provider sends, are read inline
    with the same outcome as ``_entry``; any other entry goes through ``_entry``."""
    append = out.append
    new, pair, token_type = _new_token, _TEXT_AND_LOGPROB, TokenLogprob
    for entry in entries:
        if type(entry) is dict:
            logprob = entry.get("logprob")
            text = entry.get("token")
            if type(logprob) is float and logprob <= 0.0 and (text is None or type(text) is str):
                tops = entry.get("top_logprobs")
                alternatives: tuple[tuple[str | None, float], ...] | None = ()
                if tops:
                    # The alternatives as (text, logprob) pairs, built in C, then checked in one pass:
                    # float logprobs, best first (so <= 0 and no NaN), string texts. Anything else
                    # (not a dict, a key missing, not sorted) goes through _entry, which drops and
                    # sorts as it must.
                    try:
                        alternatives = tuple(map(pair, tops)) if type(tops) is list else None
                    except (KeyError, TypeError):
                        alternatives = None
                    if alternatives is not None:
                        previous = 0.0
                        for alt_text, alt_lp in alternatives:
                            if type(alt_lp) is not float or not alt_lp <= previous or type(alt_text) is not str:
                                alternatives = None
                                break
                            previous = alt_lp
                if alternatives is not None:
                    raw = entry.get("bytes")
                    if raw is not None:
                        try:  # JSON's list of ints, as _bytes reads it, without the call
                            raw = bytes(raw) if type(raw) is list else _bytes(raw)
                        except (TypeError, ValueError):
                            raw = None
                    append(new(token_type, (text, raw, logprob, alternatives)))
                    continue
        token = _entry(entry)
        if token is None:
            out.skipped += 1
        else:
            append(token)


def _entry(entry: Any) -> TokenLogprob | None:
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
_TEXT_AND_LOGPROB = operator.itemgetter("token", "logprob")


_new_token = tuple.__new__
"""``TokenLogprob(*fields)`` without the named tuple's Python-level ``__new__``."""
