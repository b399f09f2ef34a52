"""The data that flows through the pipeline: tokens in, reports and records out.

Standard library only. Everything here is immutable except ``ResponseRecord.trace``,
the one slot a tracing exporter fills so later exporters (Prometheus exemplars, the
record file) can point at the span it made.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Literal, NamedTuple, Protocol, overload, runtime_checkable
from uuid import UUID

Status = Literal["ok", "error", "cancelled"]
"""How a run ended: ``ok``; ``error`` (the model call raised); ``cancelled`` (a stream broken off)."""

LogprobsStatus = Literal["present", "not_requested", "not_returned"]
"""Whether logprobs came back: ``present``; ``not_requested`` (the call did not ask for them);
``not_returned`` (asked, none came: provider without logprobs, or the Responses API path)."""



# The reading pass (``core.extract.read_columns``) makes the columns of hand-made tokens; extract
# imports this module, so it connects itself here on import instead of being imported back.
_column_reader: Callable[[list[TokenLogprob]], TokenColumns] | None = None


def connect_column_reader(read: Callable[[list[TokenLogprob]], TokenColumns]) -> None:
    global _column_reader
    _column_reader = read

class TokenLogprob(NamedTuple):
    """One generated token.

    ``token`` is the provider's text for it (may be None); ``bytes`` its raw UTF-8 bytes when
    the provider sends them (a token may hold part of a character); ``logprob`` its natural-log
    probability; ``top_logprobs`` the returned alternatives as ``(text, logprob)`` pairs, best first.
    A named tuple: extraction builds one per token, and a tuple is the cheapest object to build
    and to unpack.
    """

    token: str | None
    bytes: builtins.bytes | None
    logprob: float
    top_logprobs: tuple[tuple[str | None, float], ...] = ()


class TokenSums(NamedTuple):
    """What the reading pass adds up over one response's tokens (see ``extract.read_columns``):
    ``skipped``, tokens whose logprob is NaN or clearly positive (only a hand-made token list has
    them: extraction leaves such entries out); ``n`` the tokens scored; ``total`` the sum of their
    logprobs (each at least ``LOGPROB_FLOOR``) and ``min_logprob`` the least; then, over the tokens
    with alternatives, the sums of entropy, of top-k mass and their count, and over those with two
    or more, the sums of negentropy and of top margin and their count."""

    skipped: int = 0
    n: int = 0
    total: float = 0.0
    min_logprob: float = 0.0
    entropy_sum: float = 0.0
    mass_sum: float = 0.0
    entropy_n: int = 0
    negentropy_sum: float = 0.0
    margin_sum: float = 0.0
    negentropy_n: int = 0


class TokenColumns(NamedTuple):
    """One response's tokens as parallel lists, what scoring reads: each token's ``text``, its raw
    UTF-8 ``piece`` as the provider sent it (bytes or a list of ints; None where it sent none) and
    its ``logprob``; ``sums``, what the reading pass added up over the tokens and their
    alternatives; and each token's ``alternatives`` as the pass read them: mappings with a
    ``logprob`` (a number <= 0, best first, no NaN) and a ``token`` (its text; anything but a
    string reads as none), or None / empty for a token without. (Columns, not an object per token:
    scoring a response makes none; the alternatives are the provider's own entries, never copied.)"""

    texts: Sequence[str | None]
    pieces: Sequence[builtins.bytes | Sequence[int] | None]
    logprobs: Sequence[float]
    sums: TokenSums
    alternatives: Sequence[Sequence[Mapping[str, object]] | None] = ()


class EntryColumn(Sequence[object]):
    """One column of a response's tokens, read from the provider's JSON entries (dicts) when first
    used: ``entries[i].get(key)`` for each entry. The reading pass makes one per column it does not
    need for the sums (texts, pieces, alternatives), so a column nobody reads costs nothing. With
    ``strings=True`` a value that is not a string reads as None (a token's text)."""

    __slots__ = ("_entries", "_key", "_strings", "_values")

    def __init__(self, entries: Sequence[dict[str, object]], key: str, *, strings: bool = False) -> None:
        self._entries, self._key, self._strings = entries, key, strings
        self._values: list[object] | None = None

    def _list(self) -> list[object]:
        if self._values is None:
            values = list(map(dict.get, self._entries, repeat(self._key)))
            if self._strings and not _TEXT_TYPES.issuperset(map(type, values)):
                values = [value if isinstance(value, str) else None for value in values]
            self._values = values
        return self._values

    def __len__(self) -> int:
        return len(self._entries)

    @overload
    def __getitem__(self, index: int) -> object: ...
    @overload
    def __getitem__(self, index: slice) -> list[object]: ...
    def __getitem__(self, index: int | slice) -> object | list[object]:
        return self._list()[index]

    def __iter__(self) -> Iterator[object]:
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        return self._list() == list(other) if isinstance(other, (EntryColumn, list, tuple)) else NotImplemented

    __hash__ = None  # type: ignore[assignment]  # a list's

    def __repr__(self) -> str:
        return repr(self._list())


_TEXT_TYPES = {str, type(None)}


class TokenLogprobs(Sequence[TokenLogprob]):
    """What ``extract_token_logprobs`` returns: one response's tokens, and ``skipped``, the number
    of malformed entries left out.

    Scoring reads ``columns``. For the common payload (JSON entries of the chat shape) extraction
    fills the columns straight from the payload and builds the ``TokenLogprob`` objects only when
    something reads them (the record file, the heatmap, content capture), so that a response is
    scored and exported without an object per token and per alternative.
    """

    __slots__ = ("_build", "_columns", "_tokens", "skipped")

    def __init__(self, tokens: Iterable[TokenLogprob] = (), skipped: int = 0) -> None:
        self._tokens: list[TokenLogprob] | None = list(tokens)
        self._columns: TokenColumns | None = None
        self._build: Callable[[], list[TokenLogprob]] | None = None
        self.skipped = skipped

    @classmethod
    def read_later(cls, columns: TokenColumns, build: Callable[[], list[TokenLogprob]],
                   skipped: int = 0) -> TokenLogprobs:
        """Tokens known by their ``columns``; ``build()`` makes the same tokens as objects, on first
        access."""
        tokens = cls(skipped=skipped)
        tokens._tokens, tokens._columns, tokens._build = None, columns, build
        return tokens

    @property
    def columns(self) -> TokenColumns:
        if self._columns is None:
            assert _column_reader is not None, "observability.core.extract connects the reading pass on import"
            self._columns = _column_reader(self._list())
        return self._columns

    def _list(self) -> list[TokenLogprob]:
        if self._tokens is None:
            assert self._build is not None
            self._tokens, self._build = self._build(), None
        return self._tokens

    def __len__(self) -> int:
        return len(self._tokens) if self._tokens is not None else len(self.columns.logprobs)

    @overload
    def __getitem__(self, index: int) -> TokenLogprob: ...
    @overload
    def __getitem__(self, index: slice) -> list[TokenLogprob]: ...
    def __getitem__(self, index: int | slice) -> TokenLogprob | list[TokenLogprob]:
        return self._list()[index]

    def __iter__(self) -> Iterator[TokenLogprob]:
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        """Equal to the same tokens in a list, a tuple (as a record read back holds) or another one."""
        if isinstance(other, (TokenLogprobs, list, tuple)):
            return self._list() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, like the list it was

    def __repr__(self) -> str:
        return f"TokenLogprobs({self._list()!r}, skipped={self.skipped})"


def token_columns(tokens: Sequence[TokenLogprob]) -> TokenColumns:
    """The columns of ``tokens``: kept by ``TokenLogprobs``, made for any other sequence."""
    return (tokens if isinstance(tokens, TokenLogprobs) else TokenLogprobs(tokens)).columns


@dataclass(frozen=True, slots=True)
class LowConfidenceSpan:
    """A run of adjacent low-confidence tokens, as a character range ``[start, end)`` of the
    response text, with the lowest token probability inside it."""

    start: int
    end: int
    min_probability: float
    token_count: int


@dataclass(frozen=True, slots=True)
class FieldConfidence:
    """Confidence figures for one leaf value of a JSON answer. See observability.core.fields.

    ``path`` is the value's RFC 6901 JSON Pointer (``/name``, ``/tags/0``, ``/a~1b`` for the key
    ``a/b``, ``/a~0b`` for ``a~b``). ``start`` and ``end`` are character offsets of the value in
    the text the tokens spell, a string value with its quotes: ``text[start:end]`` is the value
    as the model wrote it. ``token_count`` counts the scored tokens overlapping it; a figure that cannot
    be computed (no scored token) is None, never NaN. ``alternatives`` are ``(text, probability)``
    pairs, best first: for an enum or a yes/no field, the label distribution the model saw.
    """

    path: str
    start: int
    end: int
    token_count: int
    sequence_logprob: float | None
    mean_logprob: float | None
    min_token_probability: float | None
    alternatives: tuple[tuple[str | None, float], ...] = ()
    duplicate_key: bool = False
    """True when the value's key, or the key of an object member holding it, was written more than
    once in its object: the value reported is the last one, the one a JSON parser keeps."""


@dataclass(frozen=True, slots=True)
class ConfidenceReport:
    """Confidence figures for one response. See the README for every formula.

    A field that cannot be computed (no tokens, no alternatives) is None, never NaN.
    """

    token_count: int
    skipped: int
    low_confidence_threshold: float
    sequence_logprob: float | None
    mean_logprob: float | None
    perplexity: float | None
    sequence_probability: float | None
    min_token_probability: float | None
    low_confidence_ratio: float | None
    mean_token_entropy: float | None
    mean_token_negentropy: float | None
    mean_top_margin: float | None
    top_k_mass: float | None
    low_confidence_spans: tuple[LowConfidenceSpan, ...] = ()
    fields: tuple[FieldConfidence, ...] = ()
    """Per leaf value of a JSON answer (``field_confidence``); ``()`` for any other answer."""


@dataclass(frozen=True, slots=True)
class RunStart:
    """What the handler knows when a LangChain run starts; given to exporters' ``on_run_start``.

    ``kind`` is ``chat`` or ``llm`` for model runs, else the LangChain run type
    (``chain``, ``tool``, ``retriever``). Times are ``time.time_ns()``. ``question`` is content: the
    last human message of a chat model run (its text parts) or the prompt of a completion run;
    only the record file writes it.
    """

    run_id: UUID
    parent_run_id: UUID | None
    kind: str
    name: str
    started_at_ns: int
    provider: str | None = None
    request_model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    logprobs_requested: bool = False
    metadata: Mapping[str, object] = field(default_factory=dict)
    question: str | None = None
    stream_requested: bool = False
    """The request asked to stream, as the run's start says (``stream=True`` passed to the call, or
    ``ChatOpenAI(streaming=True)``). ``.stream()`` and a streaming handler decide after the start:
    those runs are known to stream from their first chunk on."""


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    """One scored response (one choice of one model run): what exporters and ``on_report`` get.

    ``report`` is None when no logprobs were scored (see ``logprobs``). ``tokens`` and ``text``
    are content: exporters send them only when the user opted in to content capture.
    """

    start: RunStart
    status: Status
    logprobs: LogprobsStatus
    report: ConfidenceReport | None
    choice_index: int
    ended_at_ns: int
    first_token_at_ns: int | None = None
    response_model: str | None = None
    response_id: str | None = None
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    error_type: str | None = None
    text: str | None = None
    tokens: Sequence[TokenLogprob] = ()
    trace: dict[str, str] = field(default_factory=dict)
    duration_ns: int | None = None
    """The run's duration on a monotonic clock (the wall-clock fields are for timestamps)."""
    time_to_first_token_ns: int | None = None
    """From the run's start to its first streamed token, on a monotonic clock."""
    calibrated_probability: float | None = None
    """With a calibration map (``ConfidenceCallbackHandler(calibration=...)``): the probability that
    this answer is right, the map applied to the report's figure; else None."""

    @property
    def run_id(self) -> UUID:
        return self.start.run_id

    @property
    def parent_run_id(self) -> UUID | None:
        return self.start.parent_run_id

    @property
    def provider(self) -> str | None:
        return self.start.provider

    @property
    def model(self) -> str | None:
        """The model that answered, else the one requested."""
        return self.response_model or self.start.request_model

    @property
    def duration_seconds(self) -> float:
        if self.duration_ns is not None:
            return self.duration_ns / 1e9
        return max(0, self.ended_at_ns - self.start.started_at_ns) / 1e9

    @property
    def time_to_first_token_seconds(self) -> float | None:
        if self.time_to_first_token_ns is not None:
            return self.time_to_first_token_ns / 1e9
        if self.first_token_at_ns is None:
            return None
        return max(0, self.first_token_at_ns - self.start.started_at_ns) / 1e9


class RunEvicted(Exception):
    """The ``error`` given to ``on_run_end`` for a run dropped by the handler's ``max_open_runs``
    bound before it ended; its message says so (no content)."""


@runtime_checkable
class Exporter(Protocol):
    """Anything the handler hands finished responses to.

    ``export`` gets all choices of one model run at once (one record per choice, at least one).
    An exporter may also define ``on_run_start(start: RunStart) -> None`` (called for every run,
    model or not, before it starts) and ``on_run_end(run_id, ended_at_ns, error) -> None``
    (called when a non-model run ends, or when a model run is dropped without a record).
    Chain/tool/retriever runs reach these hooks only when some exporter has the attribute
    ``trace_run_tree = True``; otherwise the handler asks LangChain not to send those events.
    Exporters run in the order given; an exception in one is logged once, counted, and does not
    stop the others.
    """

    def export(self, records: Sequence[ResponseRecord]) -> None: ...
