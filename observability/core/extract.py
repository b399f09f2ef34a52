"""Provider payload -> ``TokenLogprobs``. Knows provider formats and nothing else.

The usual payload (JSON entries of the OpenAI chat shape) is read as columns, what scoring
reads, and its ``TokenLogprob`` objects are made only if something asks for them; every other
shape is read entry by entry. Standard library only. Never raises: a malformed entry is left out and counted in
``TokenLogprobs.skipped``; an unrecognised payload counts as one skipped entry.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from functools import partial
from itertools import chain, repeat
from typing import Any

from observability.core.types import TokenColumns, TokenLogprob, TokenLogprobs

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
    entries = _entry_list(payload)
    if entries:
        plain = _plain(entries)
        if plain is not None:
            return plain
    out = _Reading()
    try:
        _extract(payload, out, 0)
    except Exception:  # a payload we cannot even walk: count it, never raise
        out.skipped += 1
    return TokenLogprobs(out, out.skipped)


class _Reading(list[TokenLogprob]):
    """The general reader's tokens so far, and the entries it left out."""

    skipped = 0


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
    parts = [extract_token_logprobs(payload) for payload in streamed]
    from_chunks = TokenLogprobs([token for part in parts for token in part], sum(part.skipped for part in parts))
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


def _extract(payload: Any, out: _Reading, depth: int) -> None:
    if payload is None or depth > _MAX_DEPTH:
        out.skipped += payload is not None
        return
    if isinstance(payload, (list, tuple, TokenLogprobs)):
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


def _entries(entries: Sequence[Any], out: _Reading) -> None:
    for entry in entries:
        token = _entry(entry)
        if token is None:
            out.skipped += 1
        else:
            out.append(token)


def _plain(entries: list[Any]) -> TokenLogprobs | None:
    """The common payload, read as columns in whole-list passes (each a loop in C): JSON-decoded
    entries (dicts), each with a float logprob <= 0, a str or None token, bytes a list of ints or
    None, and a list (or None) of alternatives that are dicts with float logprobs. For these the
    columns hold what ``_entry`` gives, except that the alternatives stay in the order sent:
    scoring checks they are best first, as providers send them, and else reads the tokens
    ``_entry`` makes. The tokens are made by ``_entry``, when first read. None when an entry is
    not of this shape; the caller then reads entry by entry."""
    get = dict.get
    try:
        logprobs: list[Any] = list(map(get, entries, repeat("logprob")))
        if set(map(type, logprobs)) != _FLOAT or not all(map(operator.le, logprobs, repeat(0.0))):
            return None  # NaN, positive (maybe noise to read as 0), or not a float
        texts: list[Any] = list(map(get, entries, repeat("token")))
        raws: list[Any] = list(map(get, entries, repeat("bytes")))
        tops: list[Any] = list(map(get, entries, repeat("top_logprobs")))
        if not set(map(type, texts)) <= _TEXT_TYPES or not set(map(type, raws)) <= _LIST_OR_NONE:
            return None
        kinds = set(map(type, tops))
        if not kinds <= _LIST_OR_NONE:
            return None
        if _NONE_TYPE in kinds:
            tops = [top or () for top in tops]
        pieces = list(map(bytes, raws)) if _NONE_TYPE not in set(map(type, raws)) else [
            None if raw is None else bytes(raw) for raw in raws]
        flat = list(map(_LOGPROB, chain.from_iterable(tops)))  # KeyError / TypeError: not dicts
        if not set(map(type, flat)) <= _FLOAT:
            return None
    except (KeyError, TypeError, ValueError):
        return None
    columns = TokenColumns(texts, pieces, logprobs, flat, list(map(len, tops)))
    return TokenLogprobs.read_later(columns, partial(_entry_tokens, entries))


def _entry_tokens(entries: list[Any]) -> list[TokenLogprob]:
    """The tokens ``_entry`` reads from entries that ``_plain`` accepted (so none is left out)."""
    return list(map(_entry, entries))  # type: ignore[arg-type]


_FLOAT = {float}
_NONE_TYPE = type(None)
_TEXT_TYPES = {str, _NONE_TYPE}
_LIST_OR_NONE = {list, _NONE_TYPE}
_LOGPROB = operator.itemgetter("logprob")


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


def _legacy(payload: Any, out: _Reading) -> None:
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
