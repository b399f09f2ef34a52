"""Response text rebuilt from tokens, and each token's character range in it.

Providers split some characters across tokens (Korean and emoji often arrive as UTF-8 byte
pieces), so the text is rebuilt from the tokens' bytes where present; a token that holds part
of a character covers that whole character. Standard library only.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from itertools import accumulate

from observability.core.types import TokenLogprob, token_columns


def token_offsets(tokens: Sequence[TokenLogprob]) -> tuple[str, list[tuple[int, int]]]:
    """Return the response text and, per token, its character range ``[start, end)``.

    Bytes that are not valid UTF-8 become U+FFFD. A token whose bytes finish a character begun
    by an earlier token starts at that character.
    """
    columns = token_columns(tokens)
    pieces = columns.pieces
    if None in pieces:
        pieces = [token_bytes(text) if piece is None else piece
                  for piece, text in zip(pieces, columns.texts, strict=True)]
    return piece_offsets(pieces)  # type: ignore[arg-type]  # no None left


def token_bytes(text: str | None) -> bytes:
    """The UTF-8 of a token's text, for a token without bytes (lone surrogates kept as such)."""
    return (text or "").encode("utf-8", "surrogatepass")


def piece_offsets(pieces: Sequence[bytes]) -> tuple[str, list[tuple[int, int]]]:
    """``token_offsets`` over the tokens' raw UTF-8 pieces (their bytes, else ``token_bytes``)."""
    whole = _whole_characters(pieces)
    if whole is not None:
        return whole
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


def _whole_characters(pieces: Sequence[bytes]) -> tuple[str, list[tuple[int, int]]] | None:
    """The common case, fast: every piece decodes on its own (no character split across
    tokens, nothing invalid). Then the incremental decoder above would give each token exactly
    its own decoded text, so the ranges are running lengths. None otherwise."""
    try:
        parts = list(map(_DECODE, pieces))
    except (UnicodeDecodeError, TypeError):  # TypeError: a bytearray, which the decoder above reads
        return None
    ends = list(accumulate(map(len, parts)))
    return "".join(parts), list(zip([0, *ends], ends, strict=False))  # starts: 0, then each end


_DECODE = bytes.decode  # UTF-8, strict


def utf8_safe(text: str) -> str:
    """``text`` with every character UTF-8 cannot encode (a lone surrogate, as JSON ``"\\ud800"``
    decodes to) replaced by ``?``. Exported strings go through it: one such character would break
    a whole OTLP batch or every later Prometheus scrape."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")
