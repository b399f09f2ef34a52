"""Per-field confidence of a JSON answer: ``TokenLogprob`` list -> one ``FieldConfidence`` per leaf.

Structured output (an extraction, a classification) is trusted field by field: "the name is
certain, the age is a guess". This module finds each leaf value (string, number, true, false,
null) of the JSON object or array in the response text and scores the tokens that produced it.
Pure, standard library only.

For a leaf whose characters are ``[start, end)`` of the response text (a string with its quotes):
    tokens                = every token whose character range overlaps [start, end); a token
                            holding part of a character covers that whole character
                            (``observability.core.text.token_offsets``), and a token that also holds
                            the next character (``31,``) still counts
    sequence_logprob      = sum(max(lp, LOGPROB_FLOOR)) over those tokens
    mean_logprob          = sequence_logprob / token_count
    min_token_probability = min(exp(lp))
    alternatives          = (text, exp(lp)) of ``top_logprobs`` of the token holding the first
                            character of the value's content (after a string's opening quote; for
                            an empty string, its closing quote)
Logprobs are read as ``score_confidence`` reads them: NaN and clearly positive values are skipped
(not counted), float noise above 0 reads as 0.

Offsets are in the text the tokens spell (``token_offsets(tokens)[0]``), which can differ from a
message's content (seen with llama.cpp: blank lines at the end, and a Markdown fence around the
JSON, are in the tokens but not in the content).

Which text is JSON: the answer itself when its first non-blank character is ``{`` or ``[``, else
the first Markdown code fence (```` ``` ```` or ```` ```json ````) whose content starts so. Leaves are
reported up to where the text stops being JSON (the end of a truncated answer, a syntax error);
a number at the very end of the text is not reported (it may have been cut). Text after the
complete top-level value (a closing fence, a remark) is ignored. Anything else gives ``()``.
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from observability.core.extract import LOGPROB_FLOOR, POSITIVE_NOISE
from observability.core.text import token_offsets
from observability.core.types import FieldConfidence, TokenLogprob, token_columns


def field_confidence(tokens: Sequence[TokenLogprob]) -> tuple[FieldConfidence, ...]:
    """One ``FieldConfidence`` per complete leaf value of the JSON in the response, in document
    order; ``()`` when the response holds no JSON object or array. See the module docstring."""
    if not tokens or not may_hold_json(tokens):
        return ()
    text, offsets = token_offsets(tokens)
    return fields_in(tokens, text, offsets)


def may_hold_json(tokens: Sequence[TokenLogprob]) -> bool:
    """False only when the answer surely holds no JSON object or array: the tokens' texts, joined,
    neither open with one nor hold a Markdown fence. Cheap (no decoding, no offsets): a plain
    answer skips ``token_offsets``. A token without text (bytes only) answers True."""
    texts = token_columns(tokens).texts
    if None in texts:
        return True
    text = "".join(texts)  # type: ignore[arg-type]  # no None, as just checked
    return text.lstrip(_BLANK).startswith(("{", "[")) or "```" in text


def fields_in(tokens: Sequence[TokenLogprob], text: str,
              offsets: Sequence[tuple[int, int]]) -> tuple[FieldConfidence, ...]:
    """``field_confidence`` given ``token_offsets(tokens)`` (``score_confidence`` has them already)."""
    leaves = json_leaves(text)
    if not leaves:
        return ()
    # Token ranges never move backwards (start and end both non-decreasing), so the first token
    # overlapping [start, end) is found by bisecting the ends.
    ends = [end for _, end in offsets]
    fields = []
    for path, start, end, content in leaves:
        first = bisect_right(ends, start)
        n = 0
        total = 0.0
        min_lp = 0.0
        alternatives: tuple[tuple[str | None, float], ...] = ()
        found_content = False
        index = first
        while index < len(offsets) and offsets[index][0] < end:
            token_start, token_end = offsets[index]
            tok = tokens[index]
            if not found_content and token_start <= content < token_end:
                found_content = True
                alternatives = _alternatives(tok)
            lp = tok.logprob
            if token_start < token_end and lp <= POSITIVE_NOISE:  # no characters; NaN, real positives
                if lp > 0.0:
                    lp = 0.0
                n += 1
                total += lp if lp > LOGPROB_FLOOR else LOGPROB_FLOOR
                if lp < min_lp:
                    min_lp = lp
            index += 1
        fields.append(FieldConfidence(
            path=path, start=start, end=end, token_count=n,
            sequence_logprob=total if n else None,
            mean_logprob=total / n if n else None,
            min_token_probability=math.exp(min_lp) if n else None,
            alternatives=alternatives,
        ))
    return tuple(fields)


def _alternatives(tok: TokenLogprob) -> tuple[tuple[str | None, float], ...]:
    out = []
    for text, lp in tok.top_logprobs:
        if lp <= POSITIVE_NOISE:
            out.append((text, math.exp(lp) if lp < 0.0 else 1.0))
    return tuple(out)


# --- the tolerant scanner -------------------------------------------------------------------

Leaf = tuple[str, int, int, int]
"""``(path, start, end, content_start)``: a leaf's JSON Pointer, its character range, and where
its content begins (after a string's opening quote)."""

_BLANK = " \t\n\r"
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_STRING = re.compile(r'"(?:[^"\\]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"')  # raw control characters allowed
_FENCE = re.compile(r"^[ \t]*```[^\n`]*\n", re.MULTILINE)
_FENCE_END = re.compile(r"^[ \t]*```", re.MULTILINE)
_LITERALS = ("true", "false", "null")
_AFTER_VALUE = _BLANK + ",}]"


def json_leaves(text: str) -> list[Leaf]:
    """The complete leaf values of the JSON object or array the answer holds, in document order.
    See the module docstring for which text counts as JSON."""
    start = _json_start(text)
    return [] if start is None else _scan(text, start)


def _json_start(text: str) -> int | None:
    """Where the answer's JSON object or array begins: the first non-blank character, else the
    content of the first Markdown fence that starts with one. None if neither."""
    index = _skip_blank(text, 0)
    if text.startswith(("{", "["), index):
        return index
    if "```" not in text:  # no fence: skip the regular expression's line-by-line search
        return None
    position = 0
    while (fence := _FENCE.search(text, position)) is not None:
        index = _skip_blank(text, fence.end())
        if text.startswith(("{", "["), index):
            return index
        closing = _FENCE_END.search(text, fence.end())
        if closing is None:
            return None
        position = closing.end()
    return None


def _skip_blank(text: str, index: int) -> int:
    length = len(text)
    while index < length and text[index] in _BLANK:
        index += 1
    return index


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


@dataclass(slots=True)
class _Open:
    """A container the scanner is inside: an object or array, its JSON Pointer, and for an array
    the index of its current element."""

    is_object: bool
    path: str
    index: int = 0


def _scan(text: str, index: int) -> list[Leaf]:
    """Walk the JSON object or array at ``index`` and record each complete leaf. Stops quietly
    where the text ends or stops being JSON. Iterative, so nesting depth is unbounded."""
    leaves: list[Leaf] = []
    length = len(text)
    stack: list[_Open] = []
    path = ""  # the JSON Pointer of the value expected next
    expect_value = True  # a value comes next (at the top, after `[`, `:`, or `,` in an array)
    while True:
        index = _skip_blank(text, index)
        if index >= length:
            return leaves
        char = text[index]
        if expect_value:
            if char in "{[":
                container = _Open(char == "{", path)
                stack.append(container)
                index = _skip_blank(text, index + 1)
                if text.startswith("}" if container.is_object else "]", index):  # empty: no leaves
                    stack.pop()
                    index += 1
                    expect_value = False
                    if not stack:
                        return leaves
                elif container.is_object:
                    key = _key(text, index)
                    if key is None:
                        return leaves
                    segment, index = key
                    path = f"{container.path}/{segment}"
                else:
                    path = f"{container.path}/0"
                continue
            end = _leaf_end(text, index)
            if end is None:
                return leaves
            leaves.append((path, index, end, index + 1 if char == '"' else index))
            index = end
            expect_value = False
            continue
        # After a value: `,` or the closing bracket of the innermost container.
        container = stack[-1]
        if char == ",":
            index += 1
            if container.is_object:
                key = _key(text, _skip_blank(text, index))
                if key is None:
                    return leaves
                segment, index = key
                path = f"{container.path}/{segment}"
            else:
                container.index += 1
                path = f"{container.path}/{container.index}"
            expect_value = True
        elif char == ("}" if container.is_object else "]"):
            stack.pop()
            index += 1
            if not stack:
                return leaves
        else:
            return leaves


def _key(text: str, index: int) -> tuple[str, int] | None:
    """At ``index`` an object key and its colon: ``(escaped key, index after the colon)``, or
    None if the text ends or is not JSON there."""
    match = _STRING.match(text, index)
    if match is None:
        return None
    colon = _skip_blank(text, match.end())
    if not text.startswith(":", colon):
        return None
    key: str = json.loads(match.group(), strict=False)
    return _escape(key), colon + 1


def _leaf_end(text: str, index: int) -> int | None:
    """Where the leaf value at ``index`` ends, or None if it is incomplete or not JSON. A number
    must be followed by something (a number at the very end of the text may have been cut)."""
    char = text[index]
    if char == '"':
        match = _STRING.match(text, index)
        return None if match is None else match.end()
    if char == "-" or "0" <= char <= "9":
        match = _NUMBER.match(text, index)
        if match is None:
            return None
        end = match.end()
        return end if end < len(text) and text[end] in _AFTER_VALUE else None
    for literal in _LITERALS:
        if text.startswith(literal, index):
            end = index + len(literal)
            return end if end == len(text) or text[end] in _AFTER_VALUE else None
    return None
