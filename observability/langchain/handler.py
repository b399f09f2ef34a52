"""The LangChain glue: callbacks in, ``ResponseRecord``s out to ``on_report`` and exporters.

Per-run state lives in one dict keyed by run id, bounded, popped on end and on error. The
per-chunk path keeps a reference to the chunk's logprobs payload (nothing is read there); at the
end, one call into the core, ``score.score_response``, reads and scores the response (its reading,
``extract.extract_response``, reconciles the chunks' entries with the end event's: the longer,
consistent list wins; see there): some streaming paths (langchain-core 1.8's v3 events) end with
only the last chunk's logprobs, and a stream that fails may hand over a partial result or none.
Durations use a monotonic clock; the wall clock only gives timestamps. Nothing here raises into
the app: every callback is guarded, and our own failures are logged once per place and counted in
``errors``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from observability.core.calibration import CalibrationMap, load_calibration
from observability.core.score import (
    DEFAULT_LOW_CONFIDENCE_THRESHOLD,
    ScoredResponse,
    check_threshold,
    score_response,
)
from observability.core.types import (
    ConfidenceReport,
    Exporter,
    LogprobsStatus,
    ResponseRecord,
    RunEvicted,
    RunStart,
    Status,
)
from observability.exporters._peer_spans import RUN_PEERS
from observability.langchain import tracer_runs as _tracer_runs  # noqa: F401  (adds its exporter to default_exporters)
from observability.langchain.dedupe import NOTHING, ExportGroups, Exporting
from observability.langchain.feedback import FeedbackWindow, judge
from observability.langchain.payload import (
    Choice,
    as_int,
    as_number,
    as_text,
    logprobs_requested,
    read_response,
    response_id,
    run_name,
)
from observability.langchain.peers import find_records

logger = logging.getLogger("observability")
logger.addHandler(logging.NullHandler())

DEFAULT_MAX_OPEN_RUNS = 10_000
_CANCELLED = (GeneratorExit, asyncio.CancelledError, KeyboardInterrupt)

F = TypeVar("F", bound=Callable[..., Any])


def _guarded(method: F) -> F:
    """Run a callback; any exception of ours is logged once, counted and swallowed."""

    @functools.wraps(method)
    def wrapper(self: ConfidenceCallbackHandler, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:  # never break the host app
            self._failed(method.__name__, exc)
            return None

    return cast(F, wrapper)


class _Run:
    __slots__ = ("exporting", "first_token_ns", "response_id", "start", "started_ns", "streamed")

    def __init__(self, start: RunStart, exporting: Exporting) -> None:
        self.start = start
        self.exporting = exporting  # the exporters this run goes to (see observability.langchain.dedupe)
        self.started_ns = time.monotonic_ns()
        self.first_token_ns: int | None = None  # monotonic
        self.streamed: list[Any] = []  # each streamed chunk's logprobs payload, as received
        self.response_id: str | None = None  # the provider's, from the first chunks of a stream


class ConfidenceCallbackHandler(BaseCallbackHandler):
    """Scores the confidence of every model response from its token logprobs.

    Args:
        exporters: where finished records go (see ``Exporter``). None (the default) means the
            standard set: OpenTelemetry spans and metrics on the global providers and Prometheus
            metrics on the global registry. ``()`` scores without exporting.
        on_report: called with each ``ResponseRecord`` (one per choice), e.g. to retry or flag
            low-confidence answers. Runs inline; keep it quick. Its exceptions are swallowed.
        low_confidence_threshold: token probability below which a token counts as
            low-confidence (default 0.5).
        max_open_runs: how many unfinished runs are tracked at once; beyond it the oldest is
            dropped and counted in ``evicted_runs``, so runs that never end cannot grow memory.
        record_to: a file path; when given, every record is also appended to it as one JSON line
            (``observability.exporters.JsonlRecorder``, after the other exporters). The file holds
            response text and tokens: content, written only because you asked.
        feedback_window: how many recent responses ``record_feedback`` can join a verdict to
            (default 0: none kept). Each costs a fixed ~1.2 KB, whatever the prompt and answer
            (ids, labels and scalar figures only: see ``observability.langchain.feedback``).
        calibration: a calibration map (a file written by ``python -m observability evaluate ...
            --calibration OUT.json``, or a ``CalibrationMap``): each record then carries
            ``calibrated_probability``, the probability that the answer is right, which the
            exporters send next to the raw figures. Read here: a missing or invalid file raises
            ``CalibrationError`` naming the fix.

    Attached twice (explicitly and by a hook): each exporter gets each run once, even when two
    handlers that share it (or that both use the default exporters) see the run; the handler
    that leaves a run to the other counts it in ``duplicate_runs``, and still calls its own
    ``on_report`` (see ``observability.langchain.dedupe``).
    """

    run_inline = True  # an executor hop per token would cost ~100 µs in async code
    raise_error = False
    _before_peer_tracers = True  # moved before OpenInference's / OpenLLMetry's handler (observability.langchain.peers)

    def __init__(
        self,
        *,
        exporters: Sequence[Exporter] | None = None,
        on_report: Callable[[ResponseRecord], None] | None = None,
        low_confidence_threshold: float = DEFAULT_LOW_CONFIDENCE_THRESHOLD,
        max_open_runs: int = DEFAULT_MAX_OPEN_RUNS,
        record_to: str | os.PathLike[str] | None = None,
        feedback_window: int = 0,
        calibration: str | os.PathLike[str] | CalibrationMap | None = None,
    ) -> None:
        super().__init__()
        self.calibration = None if calibration is None else load_calibration(calibration)
        default_count = 0  # the default exporters are one share group (see observability.langchain.dedupe)
        if exporters is None:
            from observability.exporters import default_exporters

            exporters = default_exporters()
            default_count = len(exporters)
        if record_to is not None:
            from observability.exporters._jsonl import JsonlRecorder

            exporters = [*exporters, JsonlRecorder(record_to)]
        for exporter in exporters:
            if not callable(getattr(exporter, "export", None)):
                raise TypeError(f"exporter {exporter!r} has no export(records) method; see observability.Exporter")
        if on_report is not None and not callable(on_report):
            raise TypeError(f"on_report must be a callable taking a ResponseRecord, got {on_report!r}")
        if isinstance(max_open_runs, bool) or not isinstance(max_open_runs, int) or max_open_runs < 1:
            raise ValueError(f"max_open_runs must be a positive int, got {max_open_runs!r}")
        self.exporters: tuple[Exporter, ...] = tuple(exporters)
        self.on_report = on_report
        self.low_confidence_threshold = check_threshold(low_confidence_threshold)
        self.max_open_runs = max_open_runs
        self.errors: Counter[str] = Counter()
        self.evicted_runs = 0
        self.duplicate_runs = 0  # runs left (in part) to another handler sharing an exporter
        self._export_groups = ExportGroups(self.exporters, default_count)
        self._runs: dict[UUID, _Run] = {}
        if isinstance(feedback_window, bool) or not isinstance(feedback_window, int) or feedback_window < 0:
            raise ValueError(f"feedback_window must be a non-negative int, got {feedback_window!r}")
        self.feedback_window = feedback_window
        self._feedback = FeedbackWindow(feedback_window, self.exporters)  # recent responses, for record_feedback
        self.unknown_feedback = 0
        self.repeated_feedback = 0  # verdicts on a response that already had one (observability.langchain.feedback)
        self._last: tuple[UUID | None, _Run | None] = (None, None)  # the previous chunk's run
        self._lock = threading.Lock()
        self._logged: set[str] = set()
        # Chain/tool/retriever events cost a dispatch each; take them only for an exporter that
        # traces the whole run tree (an exporter attribute ``trace_run_tree = True``).
        self._run_tree = any(getattr(e, "trace_run_tree", False) is True for e in self.exporters)

    # LangChain skips dispatching chain/tool/retriever events to us unless an exporter wants them.
    @property
    def ignore_chain(self) -> bool:
        return not self._run_tree

    @property
    def ignore_agent(self) -> bool:
        return True

    @property
    def ignore_retriever(self) -> bool:
        return not self._run_tree

    @property
    def open_runs(self) -> int:
        """Runs started and not yet ended (what the bounded state currently holds)."""
        return len(self._runs)

    # ---- model runs -------------------------------------------------------------------------
    @_guarded
    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[Any]], *,
                            run_id: UUID, parent_run_id: UUID | None = None,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._model_start("chat", serialized, run_id, parent_run_id, metadata, kwargs, messages)

    @_guarded
    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *,
                     run_id: UUID, parent_run_id: UUID | None = None,
                     metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._model_start("llm", serialized, run_id, parent_run_id, metadata, kwargs, prompts)

    def on_llm_new_token(self, token: Any, *, chunk: Any = None, run_id: UUID, parent_run_id: UUID | None = None,
                         tags: list[str] | None = None, logprobs: Any = None, **kwargs: Any) -> None:
        # The hot path, once per chunk: a reference to the chunk's logprobs is kept, nothing is read
        # (benchmarks/RESULTS.md, per-chunk cost). The keywords LangChain passes are named so that
        # no **kwargs dict is built for them; a UUID's hash is Python code, so the previous chunk's
        # run is reused when LangChain passes the very same UUID object, as it does for each chunk.
        try:
            last = self._last  # one read: another thread may replace it meanwhile
            run = last[1] if last[0] is run_id else None
            if run is None:  # another run's chunk, or this run's first: found once, then remembered
                run = self._runs.get(run_id)
                if run is None:
                    return
                self._last = (run_id, run)
            if run.first_token_ns is None:  # until the first token: its time, the provider's id
                if token:
                    run.first_token_ns = time.monotonic_ns()
                if run.response_id is None and chunk is not None:
                    run.response_id = response_id({}, {}, getattr(chunk, "message", None))
            if logprobs is None and chunk is not None:
                info = chunk.generation_info
                logprobs = info.get("logprobs") if info else None
                if logprobs is None:
                    message = getattr(chunk, "message", None)
                    meta = getattr(message, "response_metadata", None) if message is not None else None
                    logprobs = meta.get("logprobs") if meta else None
            if logprobs is not None:
                run.streamed.append(logprobs)
        except Exception as exc:
            self._failed("on_llm_new_token", exc)

    @_guarded
    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._pop(run_id)
        if run is not None:
            self._finish(run, response, "ok", None)

    @_guarded
    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._pop(run_id)
        if run is not None:
            status: Status = "cancelled" if isinstance(error, _CANCELLED) else "error"
            self._finish(run, kwargs.get("response"), status, error)

    # ---- other runs: only forwarded to exporters that trace the whole run tree -------------
    @_guarded
    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, metadata: dict[str, Any] | None = None,
                       **kwargs: Any) -> None:
        self._other_start("chain", serialized, run_id, parent_run_id, metadata, kwargs)

    @_guarded
    def on_tool_start(self, serialized: dict[str, Any] | None, input_str: str, *, run_id: UUID,
                      parent_run_id: UUID | None = None, metadata: dict[str, Any] | None = None,
                      **kwargs: Any) -> None:
        self._other_start("tool", serialized, run_id, parent_run_id, metadata, kwargs)

    @_guarded
    def on_retriever_start(self, serialized: dict[str, Any] | None, query: str, *, run_id: UUID,
                           parent_run_id: UUID | None = None, metadata: dict[str, Any] | None = None,
                           **kwargs: Any) -> None:
        self._other_start("retriever", serialized, run_id, parent_run_id, metadata, kwargs)

    @_guarded
    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._other_end(run_id, None)

    @_guarded
    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._other_end(run_id, error)

    @_guarded
    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._other_end(run_id, None)

    @_guarded
    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._other_end(run_id, error)

    @_guarded
    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._other_end(run_id, None)

    @_guarded
    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._other_end(run_id, error)

    # ---- internals ---------------------------------------------------------------------------
    def _model_start(self, kind: str, serialized: Mapping[str, Any] | None, run_id: UUID,
                     parent_run_id: UUID | None, metadata: Mapping[str, Any] | None,
                     kwargs: Mapping[str, Any], inputs: Sequence[Any] = ()) -> None:
        metadata = metadata or {}
        params = kwargs.get("invocation_params") or {}
        # The question (content; only the record file writes it): the first input's, as the run's
        # choices are the first input's. A reference to the string, nothing copied.
        question = first = inputs[0] if inputs else None
        if isinstance(first, list):
            human = next((m for m in reversed(first) if getattr(m, "type", None) == "human"), None)
            question = content = getattr(human, "content", None)
            if isinstance(content, list):  # content blocks: the text parts
                question = "\n".join(b if isinstance(b, str) else str(b.get("text", "")) for b in content
                                     if isinstance(b, str) or (isinstance(b, dict) and b.get("type") == "text"))
        start = RunStart(
            run_id=run_id,
            parent_run_id=parent_run_id,
            kind=kind,
            name=run_name(serialized, kwargs),
            started_at_ns=time.time_ns(),
            provider=as_text(metadata.get("ls_provider")),
            request_model=as_text(metadata.get("ls_model_name") or params.get("model") or params.get("model_name")),
            temperature=as_number(metadata.get("ls_temperature", params.get("temperature"))),
            max_tokens=as_int(metadata.get("ls_max_tokens", params.get("max_tokens"))),
            logprobs_requested=logprobs_requested(params, serialized),
            metadata=metadata,
            question=question if isinstance(question, str) else None,
            stream_requested=params.get("stream") is True,
        )
        self._track(start, reports=True)

    def _other_start(self, kind: str, serialized: Mapping[str, Any] | None, run_id: UUID,
                     parent_run_id: UUID | None, metadata: Mapping[str, Any] | None,
                     kwargs: Mapping[str, Any]) -> None:
        if self._run_tree:
            start = RunStart(run_id=run_id, parent_run_id=parent_run_id, kind=kind,
                             name=run_name(serialized, kwargs), started_at_ns=time.time_ns(),
                             metadata=metadata or {})
            self._track(start)

    def _other_end(self, run_id: UUID, error: BaseException | None) -> None:
        run = self._pop(run_id)
        if run is not None:
            self._run_end(run_id, error, run.exporting)

    def _track(self, start: RunStart, *, reports: bool = False) -> None:
        exporting = self._export_groups.claim(start.run_id, self)
        if exporting is not self._export_groups.everything:
            self.duplicate_runs += 1  # another handler exports this run to the shared exporters
            # Still scored when it has to reach on_report, or be kept for a verdict given to us.
            if exporting is NOTHING and not (reports and (self.on_report is not None or self.feedback_window)):
                return
        evicted: list[tuple[UUID, _Run]] = []
        with self._lock:
            while len(self._runs) >= self.max_open_runs:
                oldest = next(iter(self._runs))
                evicted.append((oldest, self._runs.pop(oldest)))
            self._runs[start.run_id] = _Run(start, exporting)
            self._forget_last([run_id for run_id, _ in evicted])
        for run_id, run in evicted:
            self._export_groups.release(run_id, self)
            self.evicted_runs += 1
            self._log_once("evicted", "more than %d runs open at once; dropping the oldest (counted in "
                           "evicted_runs). Raise max_open_runs if your app really runs that many.",
                           self.max_open_runs)
            self._run_end(run_id, RunEvicted(f"more than max_open_runs={self.max_open_runs} runs were open at "
                                             "once; this run was dropped before it ended"), run.exporting)
        for hook in exporting.start_hooks:
            try:
                hook(start)
            except Exception as exc:
                self._failed(f"{_owner(hook)}.on_run_start", exc)

    def _pop(self, run_id: UUID) -> _Run | None:
        with self._lock:
            run = self._runs.pop(run_id, None)
            self._forget_last([run_id])
        if run is not None:
            self._export_groups.release(run_id, self)
        return run

    def _forget_last(self, run_ids: list[UUID]) -> None:
        """Under the lock: the per-chunk shortcut must not outlive its run."""
        if self._last[0] in run_ids:
            self._last = (None, None)

    def _run_end(self, run_id: UUID, error: BaseException | None, exporting: Exporting) -> None:
        ended = time.time_ns()
        for hook in exporting.end_hooks:
            try:
                hook(run_id, ended, error)
            except Exception as exc:
                self._failed(f"{_owner(hook)}.on_run_end", exc)

    def _finish(self, run: _Run, response: Any, status: Status, error: BaseException | None) -> None:
        ended = time.time_ns()
        duration = time.monotonic_ns() - run.started_ns
        choices = read_response(response)
        # Streamed chunks belong to the one choice a stream has.
        streamed = run.streamed if len(choices) == 1 else ()
        records = [self._record(run, choice, score_response(choice.logprobs, streamed,
                                                            low_confidence_threshold=self.low_confidence_threshold),
                                status, error, index, ended, duration)
                   for index, choice in enumerate(choices)]
        self._deliver(records, run.exporting.exporters)

    def _record(self, run: _Run, choice: Choice, scored: ScoredResponse | None, status: Status,
                error: BaseException | None, index: int, ended: int, duration: int) -> ResponseRecord:
        start = run.start
        tokens, report = (None, None) if scored is None else (scored.tokens, scored.report)
        logprobs: LogprobsStatus = ("present" if tokens is not None
                                    else "not_returned" if start.logprobs_requested else "not_requested")
        first = None if run.first_token_ns is None else max(0, run.first_token_ns - run.started_ns)
        text = choice.text
        if text is None or (tokens and not text):
            text = scored.text if scored is not None and tokens else None
        return ResponseRecord(
            start=start,
            status=status,
            logprobs=logprobs,
            report=report,
            choice_index=index,
            ended_at_ns=ended,
            first_token_at_ns=None if first is None else start.started_at_ns + first,
            response_model=choice.response_model,
            response_id=choice.response_id or run.response_id,
            finish_reason=choice.finish_reason,
            input_tokens=choice.input_tokens,
            output_tokens=choice.output_tokens,
            error_type=_error_type(error) if status == "error" else None,
            text=text,
            tokens=tokens or (),
            duration_ns=duration,
            time_to_first_token_ns=first,
            calibrated_probability=self._calibrated(report),
        )

    def _calibrated(self, report: ConfidenceReport | None) -> float | None:
        """The calibration map applied to the report (None without a map or a figure); a failure is ours."""
        if self.calibration is None or report is None:
            return None
        try:
            return self.calibration.apply(report)
        except Exception as exc:  # never break the host app
            self._failed("calibration", exc)
            return None

    def record_feedback(self, run_id: UUID | str, correct: bool, *, choice_index: int = 0) -> bool:
        """Join a verdict (a user's thumbs, a grader's check) to a recent response and export it:
        ``{prefix}_feedback_total{outcome, confidence}`` counts verdicts by the response's
        sequence-probability bucket, so accuracy per bucket is a live reliability diagram.

        The last ``feedback_window`` responses can be joined (the handler option; 0, the default,
        keeps none and makes this call an error naming the option); an unknown or older ``run_id``
        is counted in ``unknown_feedback`` and returns False (nothing raises for it). One verdict
        per response counts, the first, process-wide (a handler attached twice included); a later
        one returns False and is counted in ``repeated_feedback`` (see ``observability.langchain.feedback``).
        """
        if not self.feedback_window:
            raise RuntimeError("record_feedback needs recent responses: create the handler with "
                               "ConfidenceCallbackHandler(feedback_window=N), N the responses to keep for joining")
        if isinstance(run_id, str):
            try:
                run_id = UUID(run_id)
            except ValueError:
                raise ValueError(f"run_id must be a UUID (record.start.run_id), got {run_id!r}") from None
        if not isinstance(run_id, UUID):
            raise TypeError(f"run_id must be a UUID or its string (record.start.run_id), got {run_id!r}")
        if not isinstance(correct, bool):
            raise TypeError(f"correct must be True or False, got {correct!r}")
        if isinstance(choice_index, bool) or not isinstance(choice_index, int) or choice_index < 0:
            raise ValueError(f"choice_index must be a non-negative int, got {choice_index!r}")
        record, window, first = judge((run_id, choice_index), self._feedback)
        if record is None or window is None or not first:
            with self._lock:
                if record is None:
                    self.unknown_feedback += 1
                else:
                    self.repeated_feedback += 1
            return False
        for exporter in window.exporters:
            export_feedback = getattr(exporter, "export_feedback", None)
            if export_feedback is not None:
                try:
                    export_feedback(record, correct)
                except Exception as exc:
                    self._failed(f"{type(exporter).__name__}.export_feedback", exc)
        return True

    def _deliver(self, records: list[ResponseRecord], exporters: Sequence[Exporter]) -> None:
        if self.feedback_window:  # kept for record_feedback, slimmed to a fixed size (observability.langchain.feedback)
            self._feedback.keep(records)
        if self.on_report is not None:
            for record in records:
                try:
                    self.on_report(record)
                except Exception as exc:
                    self._failed("on_report", exc)
        try:  # other tracers' records of this run, found once for every exporter (observability.langchain.peers)
            peers = find_records(records[0].start.run_id)
        except Exception as exc:
            self._failed("peer tracers", exc)
            peers = None
        token = RUN_PEERS.set(peers)
        try:
            for exporter in exporters:
                try:
                    exporter.export(records)
                except Exception as exc:
                    self._failed(f"{type(exporter).__name__}.export", exc)
        finally:
            RUN_PEERS.reset(token)

    def _failed(self, where: str, exc: BaseException) -> None:
        self.errors[where] += 1
        # Type and code location only, never the message: it may quote content (a token, a prompt
        # in the user's on_report, a provider's error text chained as the cause).
        self._log_once(where, "observability: %s failed (%s); the app's call goes on. Further "
                       "failures here are counted in handler.errors, not logged. Enable DEBUG on "
                       "the 'observability' logger for where it failed.", where, type(exc).__name__)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("observability: %s failed (%s) at\n%s", where, type(exc).__name__,
                         "".join(traceback.format_tb(exc.__traceback__)))

    def _log_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(message, *args)


def _owner(hook: Callable[..., Any]) -> str:
    return type(getattr(hook, "__self__", hook)).__name__


def _error_type(error: BaseException | None) -> str | None:
    """The exception's fully qualified class name (OTel's ``error.type``)."""
    if error is None:
        return None
    cls = type(error)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
