"""The record file: every finished response as one line of JSON, to replay or render later.

The file holds content (the question, the response text and tokens), so it is only written when the user asks for
it: ``JsonlRecorder(path)`` or ``ConfidenceCallbackHandler(record_to=path)``. Lines are appended;
``python -m observability report FILE -o report.html`` renders them.

Format (one JSON object per line, one line per choice of each model run; ``FORMAT`` /
``FORMAT_VERSION`` identify it)::

    {"format": "langchain-confidence.record", "version": 1,
     "run_id": "uuid", "parent_run_id": "uuid" | null, "choice_index": 0,
     "kind": "chat" | "llm", "name": "ChatOpenAI", "provider": "openai" | null,
     "request_model": str | null, "response_model": str | null,
     "temperature": float | null, "max_tokens": int | null, "logprobs_requested": bool,
     "status": "ok" | "error" | "cancelled", "logprobs": "present" | "not_requested" | "not_returned",
     "error_type": str | null, "finish_reason": str | null, "response_id": str | null,
     "started_at_ns": int, "first_token_at_ns": int | null, "ended_at_ns": int,
     "duration_ns": int | null, "time_to_first_token_ns": int | null   (monotonic clock; absent in older lines),
     "input_tokens": int | null, "output_tokens": int | null,
     "trace": {"trace_id": hex, "span_id": hex} (empty when no tracing exporter ran first),
     "metadata": {str: JSON value}   (the LangChain run metadata; values JSON cannot hold are left out),
     "question": str | null   (the last human message, or the prompt; absent in older lines),
     "text": str | null,
     "report": {ConfidenceReport fields, "low_confidence_spans": [{start, end, min_probability,
                token_count}], "fields": [{path, start, end, token_count, sequence_logprob,
                mean_logprob, min_token_probability, alternatives: [[str | null, float]]}]} | null,
     "tokens": [{"token": str | null, "bytes": [int] | null, "logprob": float | null,
                 "top_logprobs": [[str | null, float | null], ...]}],
     "calibrated_probability": float | null   (with a calibration map on the handler; absent in older lines)}

A logprob of -infinity (probability 0) is written as null, so every line is strict JSON. Text is
written as UTF-8 as it is, except lone surrogates (a token cut inside a character, decoded with
``surrogateescape``/``surrogatepass``), which UTF-8 cannot hold: they are written as JSON ``\\uXXXX``
escapes and read back as the same code points (two that form a pair read back as the character).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any
from uuid import UUID

from observability.core.types import (
    ConfidenceReport,
    FieldConfidence,
    LowConfidenceSpan,
    ResponseRecord,
    RunStart,
    TokenLogprob,
)

FORMAT = "langchain-confidence.record"
FORMAT_VERSION = 1

_SURROGATE = re.compile("[\ud800-\udfff]")


class RecordFileError(ValueError):
    """A record file line that cannot be read; the message names the file and line."""


class JsonlRecorder:
    """An exporter that appends each ``ResponseRecord`` to a JSON-lines file (format above).

    Thread-safe; the file is opened on the first record and flushed after every run, so a
    reader sees complete lines. ``close()`` closes it (a later record reopens it).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise TypeError(f"JsonlRecorder needs a file path, got {path!r}")
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"record file {self.path} is a directory; give a file name such as responses.jsonl")
        self._file: IO[str] | None = None
        self._lock = threading.Lock()

    def export(self, records: Sequence[ResponseRecord]) -> None:
        lines = "".join(record_line(r) for r in records)
        with self._lock:
            if self._file is None:
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._file.write(lines)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def record_line(record: ResponseRecord) -> str:
    """One record as a line of the file: strict JSON, valid UTF-8 (lone surrogates escaped), newline."""
    text = json.dumps(record_to_json(record), ensure_ascii=False, allow_nan=False)
    # A surrogate can only stand inside a JSON string here, where its \\uXXXX escape means the same.
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n"


def record_to_json(record: ResponseRecord) -> dict[str, Any]:
    """One record as the JSON object described in the module docstring."""
    start = record.start
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "run_id": str(start.run_id),
        "parent_run_id": str(start.parent_run_id) if start.parent_run_id else None,
        "choice_index": record.choice_index,
        "kind": start.kind,
        "name": start.name,
        "provider": start.provider,
        "request_model": start.request_model,
        "response_model": record.response_model,
        "temperature": _finite(start.temperature),
        "max_tokens": start.max_tokens,
        "logprobs_requested": start.logprobs_requested,
        "status": record.status,
        "logprobs": record.logprobs,
        "error_type": record.error_type,
        "finish_reason": record.finish_reason,
        "response_id": record.response_id,
        "started_at_ns": start.started_at_ns,
        "first_token_at_ns": record.first_token_at_ns,
        "ended_at_ns": record.ended_at_ns,
        "duration_ns": record.duration_ns,
        "time_to_first_token_ns": record.time_to_first_token_ns,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "trace": {str(k): str(v) for k, v in record.trace.items()},
        "metadata": {str(k): v for k, v in start.metadata.items() if _is_json(v)},
        "question": start.question,
        "text": record.text,
        "report": _report_json(record.report),
        "tokens": [_token_json(t) for t in record.tokens],
        "calibrated_probability": _finite(record.calibrated_probability),
    }


def record_from_json(data: Mapping[str, Any]) -> ResponseRecord:
    """The inverse of ``record_to_json``. Raises ``KeyError``/``TypeError``/``ValueError`` on bad input."""
    if data.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} line (format={data.get('format')!r})")
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"unsupported record version {data.get('version')!r}; this reader knows {FORMAT_VERSION}")
    start = RunStart(
        run_id=UUID(data["run_id"]),
        parent_run_id=UUID(data["parent_run_id"]) if data.get("parent_run_id") else None,
        kind=str(data["kind"]),
        name=str(data["name"]),
        started_at_ns=int(data["started_at_ns"]),
        provider=data.get("provider"),
        request_model=data.get("request_model"),
        temperature=data.get("temperature"),
        max_tokens=data.get("max_tokens"),
        logprobs_requested=bool(data.get("logprobs_requested", False)),
        metadata=dict(data.get("metadata") or {}),
        question=_optional_str(data.get("question")),
    )
    status = data["status"]
    if status not in ("ok", "error", "cancelled"):
        raise ValueError(f"unknown status {status!r}")
    logprobs = data["logprobs"]
    if logprobs not in ("present", "not_requested", "not_returned"):
        raise ValueError(f"unknown logprobs value {logprobs!r}")
    return ResponseRecord(
        start=start,
        status=status,
        logprobs=logprobs,
        report=_report_from(data.get("report")),
        choice_index=int(data.get("choice_index", 0)),
        ended_at_ns=int(data["ended_at_ns"]),
        duration_ns=_optional_int(data.get("duration_ns")),
        time_to_first_token_ns=_optional_int(data.get("time_to_first_token_ns")),
        first_token_at_ns=data.get("first_token_at_ns"),
        response_model=data.get("response_model"),
        response_id=data.get("response_id"),
        finish_reason=data.get("finish_reason"),
        input_tokens=data.get("input_tokens"),
        output_tokens=data.get("output_tokens"),
        error_type=data.get("error_type"),
        text=data.get("text"),
        tokens=tuple(_token_from(t) for t in data.get("tokens") or ()),
        trace=dict(data.get("trace") or {}),
        calibrated_probability=_optional_probability(data.get("calibrated_probability")),
    )


def read_records(path: str | os.PathLike[str]) -> list[ResponseRecord]:
    """Every record in a record file, in file order. Blank lines are ignored.

    Raises ``FileNotFoundError`` for a missing file and ``RecordFileError`` (naming the line)
    for a line that is not a record.
    """
    records: list[ResponseRecord] = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                records.append(record_from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
                raise RecordFileError(f"{path}:{number}: not a response record: {detail}") from exc
    return records


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"question must be a string or null, got {value!r}")
    return value


def _optional_probability(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"calibrated_probability must be a probability in [0, 1] or null, got {value!r}")
    return float(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _is_json(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _logprob_json(value: float) -> float | None:
    return value if math.isfinite(value) else None  # -inf (probability 0) -> null


def _logprob_from(value: Any) -> float:
    if value is None:
        return -math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"logprob must be a number or null, got {value!r}")
    return float(value)


def _token_json(token: TokenLogprob) -> dict[str, Any]:
    return {
        "token": token.token,
        "bytes": list(token.bytes) if token.bytes is not None else None,
        "logprob": _logprob_json(token.logprob),
        "top_logprobs": [[text, _logprob_json(lp)] for text, lp in token.top_logprobs],
    }


def _token_from(data: Mapping[str, Any]) -> TokenLogprob:
    raw = data.get("bytes")
    return TokenLogprob(
        token=data.get("token"),
        bytes=bytes(raw) if raw is not None else None,
        logprob=_logprob_from(data.get("logprob")),
        top_logprobs=tuple((text, _logprob_from(lp)) for text, lp in data.get("top_logprobs") or ()),
    )


def _report_json(report: ConfidenceReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    data = asdict(report)
    data["low_confidence_spans"] = [asdict(span) for span in report.low_confidence_spans]
    data["fields"] = [{**asdict(f), "alternatives": [[text, _finite(p)] for text, p in f.alternatives]}
                      for f in report.fields]
    return {k: (_finite(v) if isinstance(v, float) else v) for k, v in data.items()}


def _report_from(data: Mapping[str, Any] | None) -> ConfidenceReport | None:
    if data is None:
        return None
    fields = dict(data)
    spans = tuple(LowConfidenceSpan(**span) for span in fields.pop("low_confidence_spans", ()) or ())
    leaves = tuple(FieldConfidence(**{**leaf, "alternatives": tuple(
        (text, 0.0 if p is None else float(p)) for text, p in leaf.get("alternatives") or ())})
        for leaf in fields.pop("fields", ()) or ())
    return ConfidenceReport(**fields, low_confidence_spans=spans, fields=leaves)
