"""Confidence on MLflow's LLM span and as MLflow assessments, with ``mlflow.langchain.autolog()``.

MLflow's LangChain tracer (``mlflow.langchain.langchain_tracer.MlflowLangchainTracer``, which autolog
adds to every callback manager) keeps one live MLflow span per LangChain run in its private
``_run_span_mapping`` (run id as text → ``SpanWithToken``; read guarded, tested with MLflow 3.18).
``observability.langchain.peers`` moves MLflow's handler behind ours and finds the model run's span
there while it is still open; ``observability.langchain.tracer_runs``:

- sets the ``llm.confidence.*`` figures as span attributes (``LiveSpan.set_attributes``, in memory:
  MLflow exports them with the trace from its own queue);
- hands the headline figures to ``FEEDBACK``, which logs each as an MLflow feedback assessment on
  that trace and span (``mlflow.log_feedback``, public). That is a blocking HTTP request, and the
  server knows the trace only once its root run has ended and MLflow has exported it, so it never
  runs on the app's thread: a bounded queue and one daemon thread, which retries while the server
  answers that the trace does not exist yet (up to ``WAIT_FOR_TRACE_SECONDS``). A full queue drops
  the run's assessments (counted in ``dropped``); at exit it waits at most ``EXIT_FLUSH_SECONDS``.
  A span already queued (a second handler of ours with exporters of its own) is not queued again.
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from observability.langchain import peers as _peers

SOURCE_ID = "langchain-confidence"
"""The assessments' source (type ``CODE``), as MLflow's UI shows it."""
MAX_QUEUED = 1000
REMEMBERED_SPANS = 10_000
"""Spans whose assessments were queued lately, so that a second handler's are not logged twice."""
WAIT_FOR_TRACE_SECONDS = 60.0
RETRY_SECONDS = 0.5
EXIT_FLUSH_SECONDS = 2.0
_NOT_STORED_YET = "RESOURCE_DOES_NOT_EXIST"


@dataclass(frozen=True)
class _Assessments:
    trace_id: str
    span_id: str
    figures: dict[str, float]
    deadline: float


class FeedbackQueue:
    """Logs MLflow feedback assessments from one daemon thread (started on first use); ``put``
    never blocks. Counters: ``sent`` assessments, ``dropped`` runs (queue full), ``failed`` runs
    (MLflow refused or was unreachable, or the trace never reached the server in time)."""

    def __init__(self, maxsize: int = MAX_QUEUED, wait_for_trace: float = WAIT_FOR_TRACE_SECONDS,
                 retry_every: float = RETRY_SECONDS) -> None:
        self._queue: queue.Queue[_Assessments] = queue.Queue(maxsize)
        self._wait_for_trace = wait_for_trace
        self._retry_every = retry_every
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._queued: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.sent = self.dropped = self.failed = 0

    def put(self, trace_id: str, span_id: str, figures: dict[str, float]) -> None:
        with self._lock:
            if (trace_id, span_id) in self._queued:
                return
            self._queued[trace_id, span_id] = None
            if len(self._queued) > REMEMBERED_SPANS:
                self._queued.popitem(last=False)
        self._start()
        try:
            self._queue.put_nowait(_Assessments(trace_id, span_id, figures, time.monotonic() + self._wait_for_trace))
        except queue.Full:
            with self._lock:
                self.dropped += 1
            _peers.log_once(f"{_peers.MLFLOW} queue", f"more than {self._queue.maxsize} runs' MLflow assessments "
                            "were waiting", "further runs' assessments are dropped and counted while it is full")

    def flush(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for every queued run to be sent or given up; True when done."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._queue.unfinished_tasks

    def _start(self) -> None:
        """Start the thread on first use, and again in a forked child (where it is not running)."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is None:
                atexit.register(self.flush, EXIT_FLUSH_SECONDS)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="observability-mlflow-feedback", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                self._send(item)
            except Exception as exc:  # MLflow refused, or is not there: these assessments are lost
                with self._lock:
                    self.failed += 1
                _peers.log_once(f"{_peers.MLFLOW} feedback", f"logging an MLflow assessment failed "
                                f"({type(exc).__name__})", "such runs go without assessments (counted)")
            finally:
                self._queue.task_done()

    def _send(self, item: _Assessments) -> None:
        import mlflow
        from mlflow.entities import AssessmentSource

        source = AssessmentSource(source_type="CODE", source_id=SOURCE_ID)
        pending = list(item.figures.items())
        while pending:
            name, value = pending[0]
            try:
                mlflow.log_feedback(trace_id=item.trace_id, span_id=item.span_id, name=name, value=value,
                                    source=source)
            except Exception as exc:
                if getattr(exc, "error_code", None) != _NOT_STORED_YET or time.monotonic() >= item.deadline:
                    raise
                time.sleep(self._retry_every)  # the trace is exported when its root run ends
                continue
            pending.pop(0)
            with self._lock:
                self.sent += 1


FEEDBACK = FeedbackQueue()
