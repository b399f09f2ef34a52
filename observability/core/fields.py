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

A key written twice in one object (``{"age": 31, "age": 7}``) is judged on the value a JSON parser
keeps, the last: the earlier value's leaves are not reported, and the kept value's leaves have
``duplicate_key`` set (also for the leaves inside a kept object or array).

Cost: linear in the answer's length whatever the nesting. An open object or array keeps a few
numbers and a link to the one enclosing it; a leaf's JSON Pointer is built only when the leaf is
reported (from the pointer of its container, made once per container that holds a reported leaf).
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from observability.core.extract import LOGPROB_FLOOR, POSITIVE_NOISE
from observability.core.text import json_start, locate, may_hold_json
from observability.core.types import FieldConfidence, TokenColumns, TokenLogprob, token_columns

__all__ = ["field_confidence", "fields_in", "json_leaves", "may_hold_json"]


def field_confidence(tokens: Sequence[TokenLogprob]) -> tuple[FieldConfidence, ...]:
    """One ``FieldConfidence`` per complete leaf value of the JSON in the response, in document
    order; ``()`` when the response holds no JSON object or array. See the module docstring."""
    columns = token_columns(tokens)
    located = locate(columns, low=False)
    start = None if located is None else json_start(located.text)
    if located is None or start is None:
        return ()
    return fields_in(columns, located.text, start, *located.ranges())


def fields_in(columns: TokenColumns, text: str, start: int, token_starts: Sequence[int],
              token_ends: Sequence[int]) -> tuple[FieldConfidence, ...]:
    """``field_confidence`` given the text the tokens spell, where its JSON begins
    (``text.json_start``) and each token's character range (``text.Located.ranges``):
    ``score_confidence`` has them already. Reads the token columns only: no token object is made,
    and nothing is located again."""
    leaves = _scan(text, start)
    if not leaves:
        return ()
    starts, ends = token_starts, token_ends
    # Token ranges never move backwards (start and end both non-decreasing), so the first token
    # overlapping [start, end) is found by bisecting the ends.
    logprobs, alternatives_column = columns.logprobs, columns.alternatives
    count = len(logprobs)
    fields = []
    alternatives_of = -1
    token_alternatives: tuple[tuple[str | None, float], ...] = ()
    for path, start, end, content, duplicate in leaves:
        index = bisect_right(ends, start)
        n = 0
        total = 0.0
        min_lp = 0.0
        alternatives: tuple[tuple[str | None, float], ...] = ()
        found_content = False
        while index < count and starts[index] < end:
            token_start, token_end = starts[index], ends[index]
            if not found_content and token_start <= content < token_end:
                found_content = True
                if index != alternatives_of:  # (one long token may hold many values: made once)
                    alternatives_of, token_alternatives = index, _alternatives(alternatives_column[index])
                alternatives = token_alternatives
            lp = logprobs[index]
            if token_start < token_end and lp <= POSITIVE_NOISE:  # no characters; NaN, real positives
                if lp > 0.0:
                    lp = 0.0
                n += 1
                total += lp if lp > LOGPROB_FLOOR else LOGPROB_FLOOR
                if lp < min_lp:
                    min_lp = lp
            index += 1
        # (filled slot by slot: a frozen dataclass's __init__ costs a microsecond or two a field)
        field = _new_field(FieldConfidence)
        _set_path(field, path)
        _set_start(field, start)
        _set_end(field, end)
        _set_token_count(field, n)
        _set_sequence_logprob(field, total if n else None)
        _set_mean_logprob(field, total / n if n else None)
        _set_min_token_probability(field, math.exp(min_lp) if n else None)
        _set_alternatives(field, alternatives)
        _set_duplicate_key(field, duplicate)
        fields.append(field)
    return tuple(fields)


_new_field = object.__new__
_slots = vars(FieldConfidence)  # the slots' descriptors (``FieldConfidence`` has no __post_init__)
_set_path, _set_start, _set_end = _slots["path"].__set__, _slots["start"].__set__, _slots["end"].__set__
_set_token_count, _set_sequence_logprob = _slots["token_count"].__set__, _slots["sequence_logprob"].__set__
_set_mean_logprob, _set_min_token_probability = _slots["mean_logprob"].__set__, _slots["min_token_probability"].__set__
_set_alternatives, _set_duplicate_key = _slots["alternatives"].__set__, _slots["duplicate_key"].__set__


def _alternatives(read: Sequence[Mapping[str, object]] | None) -> tuple[tuple[str | None, float], ...]:
    """A token's alternatives column (``TokenColumns.alternatives``: logprobs <= 0, so exp() is
    at most 1) as ``(text, probability)`` pairs, a text that is not a string read as None."""
    if not read:
        return ()
    out = []
    for alternative in read:
        text = alternative.get("token")
        if type(text) is not str and not isinstance(text, str):
            text = None
        out.append((text, math.exp(alternative["logprob"])))  # type: ignore[arg-type]  # a number, read
    return tuple(out)


# --- the tolerant scanner -------------------------------------------------------------------

Leaf = tuple[str, int, int, int, bool]
"""``(path, start, end, content_start, duplicate_key)``: a leaf's JSON Pointer, its character
range, where its content begins (after a string's opening quote), and whether its key or an
enclosing one was written twice in its object (see the module docstring)."""

_BLANK = " \t\n\r"
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_STRING = re.compile(r'"(?:[^"\\]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"')  # raw control characters allowed
_BLANKS = re.compile(r"[ \t\n\r]*")
# An object key, with the blanks around it and after its colon (the scanner's most common step).
_KEY = re.compile(r'[ \t\n\r]*("(?:[^"\\]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*")[ \t\n\r]*:[ \t\n\r]*')
_LITERALS = ("true", "false", "null")
_AFTER_VALUE = _BLANK + ",}]"


def json_leaves(text: str) -> list[Leaf]:
    """The complete leaf values of the JSON object or array the answer holds, in document order,
    a value whose key comes again later in its object left out. See the module docstring for which
    text counts as JSON."""
    start = json_start(text)
    return [] if start is None else _scan(text, start)


def _skip_blank(text: str, index: int) -> int:
    return _BLANKS.match(text, index).end()  # type: ignore[union-attr]  # `*` always matches


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


@dataclass(slots=True)
class _Open:
    """An object or array the scanner is inside. ``segment`` is its own last pointer segment (in
    ``parent``); ``member`` the segment of the value being read in it (an object's escaped key, an
    array's index); ``path`` its JSON Pointer, made when a leaf in it is first reported. For an
    object, ``first_leaf`` is where the current member's leaves begin in the leaf list and
    ``members`` the leaf range of each key read so far; ``duplicate`` says whether the current
    member's key, or an enclosing one, was written twice."""

    is_object: bool
    parent: _Open | None
    segment: str
    inherited_duplicate: bool
    member: str = ""
    index: int = 0
    path: str | None = None
    first_leaf: int = 0
    members: dict[str, tuple[int, int]] | None = None
    duplicate: bool = False

    def pointer(self) -> str:
        """This container's JSON Pointer: its segments up to the top, joined (made once)."""
        if self.path is None:
            segments = []
            container: _Open | None = self
            while container is not None and container.path is None:
                segments.append(container.segment)
                container = container.parent
            prefix = "" if container is None or container.path is None else container.path
            self.path = prefix + "".join(f"/{segment}" for segment in reversed(segments[:-1] if container is None
                                                                                else segments))
        return self.path

    def begin_member(self, key: str, leaves: list[Leaf | None]) -> None:
        """An object's next member, ``key`` (escaped): a key seen before drops the leaves of its
        earlier value (a parser keeps the last)."""
        self.member = key
        self.first_leaf = len(leaves)
        earlier = None if self.members is None else self.members.get(key)
        self.duplicate = self.inherited_duplicate or earlier is not None
        if earlier is not None:
            leaves[earlier[0]:earlier[1]] = [None] * (earlier[1] - earlier[0])

    def end_member(self, leaves: list[Leaf | None]) -> None:
        if self.members is None:
            self.members = {}
        self.members[self.member] = (self.first_leaf, len(leaves))


def _scan(text: str, index: int) -> list[Leaf]:
    """Walk the JSON object or array at ``index`` and record each complete leaf. Stops quietly
    where the text ends or stops being JSON. Iterative, so nesting depth is unbounded; nothing kept
    per open level grows with the depth (see ``_Open``)."""
    leaves: list[Leaf | None] = []
    length = len(text)
    container: _Open | None = None  # the innermost open container
    expect_value = True  # a value comes next (at the top, after `[`, `:`, or `,` in an array)
    while True:
        if index >= length:
            break
        char = text[index]
        if char in _BLANK:
            index = _skip_blank(text, index)
            if index >= length:
                break
            char = text[index]
        if expect_value:
            if char in "{[":
                container = _Open(char == "{", container, "" if container is None else container.member,
                                  container is not None and container.duplicate)
                container.duplicate = container.inherited_duplicate
                index = _skip_blank(text, index + 1)
                if text.startswith("}" if container.is_object else "]", index):  # empty: no leaves
                    container = container.parent
                    index += 1
                    expect_value = False
                    if container is None:
                        break
                elif container.is_object:
                    key = _key(text, index)
                    if key is None:
                        break
                    container.begin_member(key[0], leaves)
                    index = key[1]
                else:
                    container.member = "0"
                continue
            end = _leaf_end(text, index)
            if end is None or container is None:
                break
            leaves.append((f"{container.pointer()}/{container.member}", index, end,
                           index + 1 if char == '"' else index, container.duplicate))
            index = end
            expect_value = False
            continue
        # After a value: `,` or the closing bracket of the innermost container.
        if container is None:
            break
        if char == ",":
            index += 1
            if container.is_object:
                container.end_member(leaves)
                key = _key(text, index)
                if key is None:
                    break
                container.begin_member(key[0], leaves)
                index = key[1]
            else:
                container.index += 1
                container.member = str(container.index)
            expect_value = True
        elif char == ("}" if container.is_object else "]"):
            container = container.parent
            index += 1
            if container is None:
                break
        else:
            break
    return [leaf for leaf in leaves if leaf is not None]


def _key(text: str, index: int) -> tuple[str, int] | None:
    """At ``index`` (blanks may come first) an object key and its colon: ``(escaped key, index
    after the colon and the blanks after it)``, or None if the text ends or is not JSON there."""
    match = _KEY.match(text, index)
    if match is None:
        return None
    quoted = match.group(1)
    key: str = json.loads(quoted, strict=False) if "\\" in quoted else quoted[1:-1]  # escapes: decode them
    return (_escape(key) if "~" in key or "/" in key else key), match.end()


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
