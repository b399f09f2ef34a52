"""Live feedback: the recent responses a verdict can join, each kept at a fixed small size, and one
verdict counted per response.

A kept response is what the feedback counters read and nothing more: the run and choice ids, the
provider and model (the labels), the allowlisted metadata label values of the handler's exporters
(a value that could not be a label is kept as a marker that reads ``other``, as it would), and
the report's scalar figures (the bucket is the sequence probability). No prompt, text, tokens,
fields, low-confidence spans, other metadata, trace ids or response ids.

One verdict per response, the first: a counter cannot take a count back, so counting the last
would mean holding every verdict until its response leaves the window, and the dashboards would
lag by that long. Later verdicts on the same response return False and are counted in the
handler's ``repeated_feedback``. This holds process-wide: a handler attached twice (explicitly and
by zero-code activation) keeps every response it saw, also the runs whose export it left to the
other (``dedupe``), and a verdict given to either counts once, marked in every window that holds
the response.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from observability.core.types import ResponseRecord, RunStart
from observability.exporters._labels import MAX_LABEL_VALUE_LENGTH

Key = tuple[UUID, int]
NOT_A_LABEL: tuple[()] = ()
"""Kept instead of a provider, model or metadata value that could not be a label value (too long,
not a scalar): it reads ``other`` at export, like the value it stands for."""


def label_keys(exporters: Iterable[Any]) -> frozenset[str]:
    """The metadata keys the exporters turn into labels (``MetricLabels.metadata_keys``)."""
    return frozenset(key for e in exporters for key in getattr(getattr(e, "labels", None), "metadata_keys", ()))


def _label(value: Any) -> Any:
    if value is None or isinstance(value, (int, float)):  # bool is an int
        return value
    if isinstance(value, str) and len(value) <= MAX_LABEL_VALUE_LENGTH:
        return value
    return NOT_A_LABEL


def slim(record: ResponseRecord, keys: frozenset[str]) -> ResponseRecord:
    """The record as a verdict needs it: a fixed small size, whatever the prompt and the answer."""
    start = record.start
    metadata = {key: _label(start.metadata[key]) for key in keys if key in start.metadata}
    report = record.report
    if report is not None:
        report = dataclasses.replace(report, low_confidence_spans=(), fields=())
    return ResponseRecord(
        start=RunStart(run_id=start.run_id, parent_run_id=None, kind=start.kind, name="",
                       started_at_ns=start.started_at_ns, provider=_label(start.provider),
                       request_model=_label(start.request_model), metadata=metadata),
        status=record.status, logprobs=record.logprobs, report=report, choice_index=record.choice_index,
        ended_at_ns=record.ended_at_ns, response_model=_label(record.response_model),
        calibrated_probability=record.calibrated_probability)


class FeedbackWindow:
    """The last ``size`` responses one handler saw, slimmed, each with whether it was judged."""

    def __init__(self, size: int, exporters: Sequence[Any]) -> None:
        self.size = size
        self.exporters = tuple(exporters)  # the keeping handler's: a verdict is exported where its response was
        self._keys = label_keys(exporters)
        self._kept: dict[Key, list[Any]] = {}  # key -> [slim record, judged]
        self._lock = threading.Lock()
        if size:
            _WINDOWS.add(self)

    def keep(self, records: Iterable[ResponseRecord]) -> None:
        slimmed = [slim(record, self._keys) for record in records]
        with self._lock:
            for record in slimmed:
                self._kept[(record.start.run_id, record.choice_index)] = [record, False]
            while len(self._kept) > self.size:
                del self._kept[next(iter(self._kept))]

    def __len__(self) -> int:
        return len(self._kept)

    def records(self) -> list[ResponseRecord]:
        with self._lock:
            return [record for record, _ in self._kept.values()]

    def _judge(self, key: Key) -> tuple[ResponseRecord | None, bool]:
        """(the kept record or None, whether this call is the first verdict on it here)."""
        with self._lock:
            entry = self._kept.get(key)
            if entry is None:
                return None, False
            first = not entry[1]
            entry[1] = True
            return entry[0], first


_WINDOWS: weakref.WeakSet[FeedbackWindow] = weakref.WeakSet()
_judging = threading.Lock()


def judge(key: Key, own: FeedbackWindow) -> tuple[ResponseRecord | None, FeedbackWindow | None, bool]:
    """Mark ``key`` judged in every window that keeps it. Returns the record and the window to
    export through (``own`` when it keeps the response, else the first other that does), and
    whether this is the response's first verdict anywhere; (None, None, False) when no window keeps it."""
    with _judging:  # one verdict at a time: two handlers judging one response count it once
        found: tuple[ResponseRecord | None, FeedbackWindow | None] = (None, None)
        first_anywhere = True
        for window in [own, *(w for w in list(_WINDOWS) if w is not own)]:
            record, first = window._judge(key)
            if record is None:
                continue
            first_anywhere = first_anywhere and first
            if found[1] is None:
                found = (record, window)
        return found[0], found[1], found[1] is not None and first_anywhere
