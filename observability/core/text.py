"""Response text rebuilt from tokens, and each token's character range in it.

Providers split some characters across tokens (Korean and emoji often arrive as UTF-8 byte
pieces), so the text is rebuilt from the tokens' bytes where present; a token that holds part
of a character covers that whole character. Standard library only.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from contextlib import suppress
from functools import reduce
from itertools import accumulate, repeat
from operator import iadd, sub
from typing import Any

from observability.core.types import TokenColumns, TokenLogprob, token_columns


def token_offsets(tokens: Sequence[TokenLogprob]) -> tuple[str, list[tuple[int, int]]]:
    """Return the response text and, per token, its character range ``[start, end)``.

    Bytes that are not valid UTF-8 become U+FFFD. A token whose bytes finish a character begun
    by an earlier token starts at that character.
    """
    located = Located(token_columns(tokens))
    starts, ends = located.ranges()
    return located.text, list(zip(starts, ends, strict=True))


def may_hold_json(texts: Sequence[str | None]) -> bool:
    """False only when the answer surely holds no JSON object or array: the tokens' texts, joined,
    neither open with one nor hold a Markdown fence. Cheap (no decoding, no offsets): a plain
    answer skips ``locate``. A token without text (bytes only) answers True."""
    if None in texts:
        return True
    text = "".join(texts)  # type: ignore[arg-type]  # no None, as just checked
    return text.lstrip(_BLANK).startswith(("{", "[")) or "```" in text


_BLANK = " \t\n\r"


def json_start(text: str) -> int | None:
    """Where the answer's JSON object or array begins: the first non-blank character, else the
    content of the first Markdown fence that starts with one. None if neither (then nothing needs
    every token's range: see ``observability.core.fields``)."""
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
    return _BLANKS.match(text, index).end()  # type: ignore[union-attr]  # `*` always matches


_BLANKS = re.compile(r"[ \t\n\r]*")
_FENCE = re.compile(r"^[ \t]*```[^\n`]*\n", re.MULTILINE)
_FENCE_END = re.compile(r"^[ \t]*```", re.MULTILINE)


def locate(columns: TokenColumns, *, low: bool) -> Located | None:
    """Where the tokens' characters are, when something needs it: low-confidence tokens (``low``,
    for their spans) or an answer that may hold JSON (for its fields). None otherwise."""
    if not low and not may_hold_json(columns.texts):
        return None
    return Located(columns)


class Located:
    """The text one response's tokens spell (``text``) and each token's character range in it:
    ``edges(...)`` for a few runs of tokens (the low-confidence spans), or ``ranges()`` for all
    of them.

    The tokens' raw pieces are joined and decoded once. In valid UTF-8 a character position is the
    byte position less the continuation bytes before it, so the positions of a few tokens cost a
    count of continuation bytes up to them and nothing per token; an ASCII text needs not even
    that. Text that is not valid UTF-8 (invalid bytes, a character cut at the very end) is decoded
    token by token (``piece_offsets``), as before."""

    __slots__ = ("_byte_ends", "_continuation", "_ranges", "text")

    def __init__(self, columns: TokenColumns) -> None:
        pieces: Sequence[Any] = columns.pieces
        whole: bytes | bytearray | None = None
        # JSON's lists of ints: each piece's ints copied onto one list, then to a bytearray (faster
        # than chain's per-int step, and half the cost of bytes). Anything else (None, bytes, a
        # string, a malformed list) is read as ``_piece`` reads it. (The type count comes first:
        # ``+=`` takes any iterable, and an empty string would pass for no bytes where the reader
        # takes the token's text.)
        if list(map(type, pieces)).count(list) == len(pieces):
            with suppress(TypeError, ValueError):  # an int out of range
                whole = bytearray(reduce(iadd, pieces, []))
        if whole is None:
            pieces = list(map(_piece, pieces, columns.texts))
            whole = b"".join(pieces)
        self._byte_ends = list(accumulate(map(len, pieces)))
        self._ranges: tuple[list[int], list[int]] | None = None
        self._continuation: bytes | bytearray = b""
        try:
            self.text = whole.decode()
        except UnicodeDecodeError:
            self.text, offsets = piece_offsets([bytes(piece) for piece in pieces])
            self._ranges = [start for start, _ in offsets], [end for _, end in offsets]
            return
        if not self.text.isascii():
            self._continuation = whole.translate(_CONTINUATION)

    def edges(self, firsts: Sequence[int], lasts: Sequence[int]) -> tuple[list[int], list[int]]:
        """The character ranges of a few runs of tokens (``firsts[i]`` .. ``lasts[i]``, runs in
        increasing order, as spans are): where each first token starts (a token finishing a
        character begun by an earlier one starts at that character) and where each last token ends
        (a token beginning a character that a later one finishes covers it). Only these tokens are
        located: the continuation bytes are counted between consecutive edges, in C."""
        if self._ranges is not None:
            starts, ends = self._ranges
            return [starts[i] for i in firsts], [ends[i] for i in lasts]
        byte_ends = self._byte_ends
        begins = [byte_ends[i - 1] if i else 0 for i in firsts]
        finishes = list(map(byte_ends.__getitem__, lasts))
        continuation = self._continuation
        if not continuation:
            return begins, finishes
        # Edges in byte order: begin, finish, begin, finish ... (runs are disjoint and increasing).
        positions = [0] * (2 * len(begins))
        positions[0::2], positions[1::2] = begins, finishes
        before = list(accumulate(map(continuation.count, repeat(1), [0, *positions[:-1]], positions)))
        starts = list(map(sub, begins, before[0::2]))
        if begins[-1] < len(continuation):  # a token finishing a character starts at that character
            starts = list(map(sub, starts, map(continuation.__getitem__, begins)))
        else:
            starts = [start - (continuation[at] if at < len(continuation) else 0) for start, at in zip(starts, begins,
                                                                                                     strict=True)]
        return starts, list(map(sub, finishes, before[1::2]))

    def ranges(self) -> tuple[list[int], list[int]]:
        """Every token's character range, as a list of starts and a list of ends."""
        if self._ranges is None:
            byte_ends = self._byte_ends
            byte_starts = [0, *byte_ends[:-1]] if byte_ends else []
            continuation = self._continuation
            if not continuation:
                self._ranges = byte_starts, byte_ends
            else:
                # through[b]: the continuation bytes in the first b + 1 bytes (the last repeated, for
                # an empty token at the very end); before[b], those in the first b. A token ending at
                # byte e ends at character e - before[e]; one starting at byte s (perhaps inside a
                # character: then at that character) starts at s - through[s]. In C, per byte.
                through = list(accumulate(continuation))
                through.append(through[-1])
                before = [0, *through]
                self._ranges = (list(map(sub, byte_starts, map(through.__getitem__, byte_starts))),
                                list(map(sub, byte_ends, map(before.__getitem__, byte_ends))))
        return self._ranges


_CONTINUATION = bytes(1 if 0x80 <= byte < 0xC0 else 0 for byte in range(256))
"""``bytes.translate`` table: 1 for a UTF-8 continuation byte (10xxxxxx), else 0."""


def _piece(piece: Any, text: Any) -> bytes:
    """A token's raw UTF-8 as ``extract`` reads it: its bytes (a list of ints, bytes), else the
    UTF-8 of its text (a piece it cannot read counts as none)."""
    if isinstance(piece, (bytes, bytearray, list, tuple)):
        try:
            return bytes(piece)
        except (TypeError, ValueError):
            pass
    return token_bytes(text if isinstance(text, str) else None)


def token_bytes(text: str | None) -> bytes:
    """The UTF-8 of a token's text, for a token without bytes (lone surrogates kept as such)."""
    return (text or "").encode("utf-8", "surrogatepass")


def piece_offsets(pieces: Sequence[bytes]) -> tuple[str, list[tuple[int, int]]]:
    """``token_offsets`` over the tokens' raw UTF-8 pieces, decoded token by token."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    parts: list[str] = []
    offsets: list[tuple[int, int]] = []
    length = 0
    for raw in pieces:
        start = length
        text = decoder.decode(raw)
        parts.append(text)
        length += len(text)
        pending = 1 if decoder.getstate()[0] else 0
        offsets.append((start, length + pending))
    tail = decoder.decode(b"", final=True)
    parts.append(tail)
    if tail:  # a truncated character at the very end: its pieces cover the replacement char(s)
        end = length + len(tail)
        offsets = [(s, end if e > length else e) for s, e in offsets]
    return "".join(parts), offsets
