"""Provider payload -> ``TokenLogprobs``: the core's reading step, the one place that knows provider formats.

The usual payload (JSON entries of the OpenAI chat shape) is read in one pass, ``read_columns``,
into the columns scoring reads: each token's text, raw bytes and logprob, and the per-token
arithmetic over its alternatives (entropy, negentropy, top margin, top-k mass) added up on the way,
because that pass is where each alternative's logprob is in hand (reading the entries is most of
the cost; a second pass over them would double it). Its ``TokenLogprob`` objects are made only if
something asks for them. Every other shape is read entry by entry into tokens, whose columns come
from the same pass. Standard library only. Never raises: a malformed entry is left out and counted in
``TokenLogprobs.skipped``; an unrecognised payload counts as one skipped entry.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from functools import partial
from itertools import repeat
from typing import Any

from observability.core.types import (
    EntryColumn,
    TokenColumns,
    TokenLogprob,
    TokenLogprobs,
    TokenSums,
    connect_column_reader,
)

POSITIVE_NOISE = 1e-4
"""Logprobs in (0, POSITIVE_NOISE] are float noise around 0 and read as 0; larger positive
values are malformed."""

LOGPROB_FLOOR = math.log(2.2250738585072014e-308)
"""About -708.4, the log of the smallest normal float. Sums of logprobs (``score``,
``fields``) use max(lp, floor) so that a token of probability 0 (lp = -inf) keeps every
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
        columns, left_out = read_columns(entries)
        return TokenLogprobs.read_later(columns, partial(_entry_tokens, entries), left_out)
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
    if end_entries is not None:
        lists = _chat_lists(streamed)
        if lists is not None and sum(map(len, lists)) <= len(end_entries):  # a plain stream: the end event
            return extract_token_logprobs(end_entries) if end_payload is not None else None
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


def _chat_lists(payloads: Sequence[object]) -> list[Any] | None:
    """Each payload's entry list, read in C when every payload is a chat-shaped dict (as each chunk
    of an OpenAI stream carries: ``{"content": [entry], "refusal": None}``); None otherwise. So a
    plain stream's chunks are counted, not joined, before its end event is read (for two thousand
    chunks, about a quarter of what joining them costs)."""
    if list(map(type, payloads)).count(dict) != len(payloads):
        return None
    lists = list(map(dict.get, payloads, repeat("content")))  # type: ignore[arg-type]
    if list(map(type, lists)).count(list) != len(lists):
        return None
    legacy = list(map(dict.get, payloads, repeat("token_logprobs")))  # type: ignore[arg-type]
    return lists if legacy.count(None) == len(legacy) else None


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


def read_columns(entries: Sequence[Any], *, exact: bool = False) -> tuple[TokenColumns, int]:
    """One pass over a response's entries: the token columns, and how many entries were left out.

    An entry is a JSON-decoded dict of the chat shape (``token``, ``bytes``, ``logprob``,
    ``top_logprobs``: dicts with a ``logprob``, best first) or a ``TokenLogprob``. A dict of that
    shape with float logprobs <= 0 is read inline; anything else (a ``TokenLogprob``, another
    provider's object, an entry with alternatives out of order, NaN, positive or missing values) is
    cleaned alone (``_cleaned``) and read by the same pass as a one-entry response, so that a
    defect costs only its own token. A dict entry ``_entry`` would refuse is left out and counted;
    a ``TokenLogprob`` is always kept, a NaN or clearly positive logprob counting as skipped.

    Per token with k alternatives of logprobs l_i (p_i = exp(l_i), z = sum p_i, w = sum p_i l_i
    over p_i > 0): entropy H = ln z - w / z (>= 0), top-k mass min(z, 1), and for k >= 2
    negentropy 1 - H / ln k (in [0, 1]) and top margin p_1 - p_2, each expression as ``score``'s
    module docstring gives it. Summed in token order (see ``TokenSums``), except entropy and
    negentropy of the usual tokens (5 alternatives, each of probability > 0): as H = ln(z / p_1) -
    (w / z - l_1), their entropies' sum is taken as ln(prod z / p_1) - sum(w / z - l_1), one ``log``
    per block of 256 tokens (where the product cannot overflow), and their negentropies' as their count
    less that over ln 5. That differs from the per-token sum by rounding only; where it could differ
    by more than 1e-12 relative (a mean entropy or negentropy near 0, where the per-token clamps
    act) the response is read again with ``exact=True``, every token alone (docs/confidence.md,
    "How exact").

    This runs once per response on every model call (benchmarks/RESULTS.md), so it is inline: the
    clamps are written ``x = 0.0 if x < 0.0 else x`` (min/max without the call), each ``exp`` is
    taken once and reused for z, w and the margin."""
    exp, log, log_k, tabled, log_5, size = math.exp, math.log, _LOG_K, len(_LOG_K), _LOG_K[5], len
    fast_above = math.inf if exact else 0.0  # the least probability of a 5th alternative read the fast way
    logprobs: list[Any] = []
    add_logprob = logprobs.append
    left_out = skipped = bare = 0
    entropy_sum = mass_sum = negentropy_sum = margin_sum = ratio_sum = log_product = 0.0
    product = 1.0
    entropy_n = negentropy_n = 0
    defects: dict[int, dict[str, Any] | tuple[TokenLogprob, list[dict[str, Any]]] | None] = {}
    # In blocks of _BLOCK tokens: the product of z / p_1 (each at most 5) cannot overflow within one,
    # so its log is taken once a block instead of a check per token.
    for block in range(0, len(entries), _BLOCK):
        for entry in entries[block:block + _BLOCK]:
            try:
                lp = entry["logprob"]
                top = entry["top_logprobs"]
                if not lp <= 0.0:  # NaN, positive (maybe noise to read as 0), None: cleaned below
                    raise _Defect
                if not top:
                    bare += 1
                elif size(top) == 5:  # the usual count: unrolled (each exp once, reused for z, w and the margin)
                    a, b, c, d, e = top
                    # (one statement each: a five-name assignment builds and unpacks a tuple)
                    la = a["logprob"]
                    lb = b["logprob"]
                    lc = c["logprob"]
                    ld = d["logprob"]
                    le = e["logprob"]
                    # best first, none above 0, no NaN (a logprob of 0 is checked where z >= 1, below)
                    if not 0.0 >= la >= lb >= lc >= ld >= le:
                        raise _Defect
                    p1 = exp(la)
                    p2 = exp(lb)
                    pc = exp(lc)
                    pd = exp(ld)
                    pe = exp(le)
                    z = p1 + p2 + pc + pd + pe
                    if z >= 1.0:  # (so l_1 may be 0: JSON's `false` is not a logprob)
                        if not la and type(la) is not float:
                            raise _Defect
                        mass_sum += 1.0
                    else:
                        mass_sum += z
                    margin_sum += p1 - p2
                    if pe > fast_above:  # H = ln(z / p_1) - (w / z - l_1), summed apart (see above)
                        ratio_sum += (p1 * la + p2 * lb + pc * lc + pd * ld + pe * le) / z - la
                        product *= z / p1
                    else:
                        # (an alternative of probability 0 adds nothing: its ln is -inf, 0 * -inf is NaN)
                        weighted = p1 * la + p2 * lb + pc * lc + pd * ld + pe * le if pe else _weighted(top)
                        # H = -sum (p/z) ln(p/z) = ln z - (sum p ln p) / z, at least 0
                        entropy = log(z) - weighted / z if z > 0.0 else 0.0
                        if entropy < 0.0:
                            entropy = 0.0
                        entropy_sum += entropy
                        # 1 - H / ln k, clamped to [0, 1] (H >= 0 already)
                        negentropy_sum += 1.0 - entropy / log_5 if entropy < log_5 else 0.0
                        entropy_n += 1
                        negentropy_n += 1
                else:
                    k = len(top)
                    z = weighted = previous = 0.0
                    for alternative in top:
                        alp = alternative["logprob"]
                        if not alp <= previous or (not alp and type(alp) is not float):  # out of order, NaN, ...
                            raise _Defect
                        previous = alp
                        p = exp(alp)
                        z += p
                        if p:
                            weighted += p * alp
                    entropy = log(z) - weighted / z if z > 0.0 else 0.0
                    if entropy < 0.0:
                        entropy = 0.0
                    entropy_sum += entropy
                    entropy_n += 1
                    mass_sum += 1.0 if z > 1.0 else z
                    if k >= 2:
                        log_of_k = log_k[k] if k < tabled else log(k)
                        negentropy_sum += 1.0 - entropy / log_of_k if entropy < log_of_k else 0.0
                        negentropy_n += 1
                        margin_sum += exp(top[0]["logprob"]) - exp(top[1]["logprob"])
                add_logprob(lp)
            except Exception:
                position = len(logprobs) + left_out  # (each entry before it added a logprob or was left out)
                cleaned = _cleaned(entry)
                if cleaned is None:
                    defects[position] = None
                    left_out += 1
                    continue
                if isinstance(cleaned, TokenLogprob):  # a NaN or clearly positive logprob: kept, not scored
                    skipped += 1
                    add_logprob(cleaned.logprob)
                    defects[position] = (cleaned, _kept(cleaned.top_logprobs))
                    continue
                defects[position] = cleaned
                if type(entry) is dict and entry.get("_cleaned") is _CLEANED:
                    raise  # a cleaned entry the inline reading refused: a bug here, never a loop
                _, _, (lp_1,), one, _ = read_columns([cleaned], exact=True)[0]
                add_logprob(lp_1)
                entropy_sum += one.entropy_sum
                mass_sum += one.mass_sum
                entropy_n += one.entropy_n
                bare += 1 - one.entropy_n
                negentropy_sum += one.negentropy_sum
                margin_sum += one.margin_sum
                negentropy_n += one.negentropy_n
        log_product += log(product)
        product = 1.0

    fast = len(logprobs) - skipped - bare - entropy_n  # the tokens read the fast way
    if fast:
        entropy = log_product - ratio_sum
        negentropy = fast - entropy / log_5
        if not (entropy > _TRUSTED * fast and negentropy > _TRUSTED * fast):
            return read_columns(entries, exact=True)  # near 0: rounding and the per-token clamps matter
        entropy_sum += entropy
        negentropy_sum += negentropy
        entropy_n += fast
        negentropy_n += fast
    read = _texts_and_pieces(entries, defects) if entries else ([], [], [])
    if read is None or list(map(type, logprobs)).count(float) != len(logprobs):  # (cheaper than a set of types)
        # An int or bool logprob or an entry that is not a dict, read inline: read every entry
        # cleaned instead (rare, so the common pass checks types once, here, not per token).
        tokens = [entry if isinstance(entry, TokenLogprob) else _read_entry(entry) for entry in entries]
        kept = [token for token in tokens if token is not None]
        columns, _ = read_columns(kept)
        return columns, len(tokens) - len(kept)
    # The logprobs' sum and minimum in C; in Python when some are NaN or positive (skipped) or
    # below LOGPROB_FLOOR (each counts as the floor). The same additions, in the same order.
    min_lp = min(logprobs, default=0.0) if not skipped else math.nan
    if min_lp >= LOGPROB_FLOOR:
        total = sum(logprobs, 0.0)
        min_lp = min_lp if min_lp < 0.0 else 0.0
    else:
        total, min_lp = _total_and_least(logprobs)
    texts, pieces, alternatives = read
    return TokenColumns(texts, pieces, logprobs, TokenSums(
        skipped, len(logprobs) - skipped, total, min_lp, entropy_sum, mass_sum, entropy_n,
        negentropy_sum, margin_sum, negentropy_n), alternatives), left_out


def _texts_and_pieces(entries: Sequence[Any], defects: dict[int, Any]) -> tuple[list[Any], list[Any], list[Any]] | None:
    """The ``token``, ``bytes`` and ``top_logprobs`` of each entry read, in C when every entry was
    read inline (``defects`` holds the others: their cleaned form, None for one left out, a kept
    NaN token with its cleaned alternatives). None when an entry read inline is not a dict (another
    mapping, an object with items): the caller reads it again."""
    if not defects:  # read when used (``EntryColumn``): a column nobody reads costs nothing
        if list(map(type, entries)).count(dict) != len(entries):
            return None
        return (EntryColumn(entries, "token", strings=True), EntryColumn(entries, "bytes"),  # type: ignore[return-value]
                EntryColumn(entries, "top_logprobs"))
    texts: list[Any] = []
    pieces: list[Any] = []
    alternatives: list[Any] = []
    for position, entry in enumerate(entries):
        if position in defects:
            entry = defects[position]
            if entry is None:
                continue
            if type(entry) is tuple:  # (a kept TokenLogprob, its cleaned alternatives)
                token, cleaned = entry
                texts.append(token.token)
                pieces.append(token.bytes)
                alternatives.append(cleaned)
                continue
            texts.append(entry["token"])
            pieces.append(entry["bytes"])
            alternatives.append(entry["_in_order"])
            continue
        if type(entry) is not dict:
            return None
        text = entry.get("token")
        texts.append(text if isinstance(text, str) else None)
        pieces.append(entry.get("bytes"))
        alternatives.append(entry.get("top_logprobs"))
    return texts, pieces, alternatives


def _total_and_least(logprobs: list[float]) -> tuple[float, float]:
    """The sum of the scored logprobs (each at least LOGPROB_FLOOR) and the least of them (at
    most 0), NaN and positive ones (skipped tokens) left out."""
    total = least = 0.0
    floor = LOGPROB_FLOOR
    for lp in logprobs:
        if lp <= 0.0:
            total += lp if lp > floor else floor
            if lp < least:
                least = lp
    return total, least


class _Defect(Exception):
    """An entry the inline reading does not take as it is."""


_CLEANED = object()


def _cleaned(entry: Any) -> dict[str, Any] | TokenLogprob | None:
    """A defective entry as ``read_columns`` reads it inline: its token's text, bytes, logprob and
    alternatives, the alternatives' logprobs cleaned as ``_best_first`` cleans them. A
    ``TokenLogprob`` whose logprob is NaN or clearly positive comes back as is (kept, not scored);
    None when ``_entry`` leaves the entry out."""
    token = entry if isinstance(entry, TokenLogprob) else _read_entry(entry)
    if token is None:
        return None
    text, piece, lp, alternatives = token
    if not lp <= POSITIVE_NOISE:
        return TokenLogprob(text, piece, lp, alternatives)
    kept = _kept(alternatives)
    return {"token": text, "bytes": piece, "logprob": float(0.0 if lp > 0.0 else lp), "_cleaned": _CLEANED,
            "top_logprobs": sorted(kept, key=_LOGPROB, reverse=True), "_in_order": kept}


def _kept(alternatives: Sequence[tuple[str | None, float]]) -> list[dict[str, Any]]:
    """A token's alternatives as the inline reading takes them (``{"token", "logprob"}``), in the
    order the token holds them (best first for every entry read here; a hand-made token's in its
    own): NaN and clearly positive ones left out, float noise above 0 read as 0. (Sorted stably,
    ties keep their order, for the reading.)"""
    return [{"token": text, "logprob": float(0.0 if lp > 0.0 else lp)}
            for text, lp in alternatives if lp <= POSITIVE_NOISE]


_LOGPROB = operator.itemgetter("logprob")


def _weighted(top: list[Any]) -> float:
    """sum p ln p over alternatives (best first), those of probability 0 left out, in order."""
    weighted = 0.0
    for alternative in top:
        alp = alternative["logprob"]
        p = math.exp(alp)
        if p:
            weighted += p * alp
    return weighted


_BLOCK = 256
"""``read_columns`` takes the log of its product of z / p_1 (each in [1, 5]) every this many tokens:
5 ** 256 is about 1e179, far from overflow."""
_TRUSTED = 1e-3
"""``read_columns`` trusts its fast sums of entropy and of negentropy when their mean per token is
above this: both terms, ln(prod z / p_1) and -sum(w / z - l_1), are >= 0 (no cancellation), so the
rounding is that of the product, at most n ulps of ln, about 1e-13 relative of a sum that large."""
_LOG_K = [0.0, 0.0, *(math.log(k) for k in range(2, 33))]  # ln k for the usual alternative counts


def _entry_tokens(entries: list[Any]) -> list[TokenLogprob]:
    """The tokens ``_entry`` reads from the entries (those it refuses left out, as the pass did)."""
    return [token for token in map(_read_entry, entries) if token is not None]


def _read_entry(entry: Any) -> TokenLogprob | None:
    """``_entry``, an entry that raises when read (a hostile object) left out like a malformed one."""
    try:
        return _entry(entry)
    except Exception:
        return None




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


connect_column_reader(lambda tokens: read_columns(tokens)[0])
