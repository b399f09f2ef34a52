"""Confidence on the LLM span of OpenInference or OpenLLMetry, with the real packages and the real model.

The peers are the versions pinned in pyproject's ``test`` extra (openinference-instrumentation-langchain
0.1.80, opentelemetry-instrumentation-langchain 0.62.4), instrumented onto the test's in-memory tracer
provider and uninstrumented after each test (they patch ``BaseCallbackManager.__init__``; the teardown
checks it is LangChain's own again). Expected values are the records ``on_report`` received.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
from opentelemetry.sdk.trace import ReadableSpan

from observability import ConfidenceCallbackHandler, ResponseRecord, observe_confidence
from observability.exporters import PeerSpans, _peer_spans, default_exporters
from observability.exporters._definitions import INSTRUMENTATION_SCOPE
from observability.exporters._otel_spans import EVALUATION_EVENT, HEADLINE_SCORES, REPORT_FIELDS
from observability.langchain import peers as _peers
from observability.testing import InMemoryTelemetry

pytestmark = pytest.mark.real_model

QUESTION = "What is the capital of France? One word."
MAX_TOKENS = 8
PEER_SPAN_NAMES = {"openinference": "ChatOpenAI", "openllmetry": "ChatOpenAI.chat",
                   "opentelemetry-genai": "chat smollm2-135m"}  # the official one names it as we do
PEERS = list(PEER_SPAN_NAMES)


def instrumentor(peer: str) -> Any:
    if peer == "openinference":
        from openinference.instrumentation.langchain import LangChainInstrumentor

        return LangChainInstrumentor()
    if peer == "opentelemetry-genai":
        from opentelemetry.instrumentation.genai.langchain import LangChainInstrumentor as OfficialInstrumentor

        return OfficialInstrumentor()
    from opentelemetry.instrumentation.langchain import LangchainInstrumentor

    return LangchainInstrumentor()


def patched_by_peers() -> list[tuple[type, str]]:
    """What the peers wrap: LangChain's manager init; OpenLLMetry also ChatOpenAI and LangGraph methods."""
    from langchain_openai.chat_models.base import BaseChatOpenAI
    from langchain_openai.llms.base import BaseOpenAI
    from langgraph.pregel import Pregel

    return [(BaseCallbackManager, "__init__"), *((BaseChatOpenAI, n) for n in ("_generate", "_agenerate")),
            *((BaseOpenAI, n) for n in ("_generate", "_agenerate", "_stream", "_astream")),
            (Pregel, "stream"), (Pregel, "astream")]


@pytest.fixture
def instrument(telemetry: InMemoryTelemetry) -> Iterator[Any]:
    """``instrument(peer[, tracer_provider])`` turns the peer's LangChain instrumentation on for this
    test only (onto the in-memory provider unless another is given).

    OpenLLMetry 0.62.4's ``uninstrument()`` leaves its ``BaseCallbackManager.__init__`` wrapper in
    place (it asks ``unwrap`` for the attribute "BaseCallbackManager.__init__" of the module), so
    every attribute a peer wraps is put back as it was after the test."""
    saved = [(owner, name, vars(owner).get(name)) for owner, name in patched_by_peers()]
    original_init = BaseCallbackManager.__init__
    active: list[Any] = []

    def start(peer: str, tracer_provider: Any = None) -> None:
        peer_instrumentor = instrumentor(peer)
        peer_instrumentor.instrument(tracer_provider=tracer_provider or telemetry.tracer_provider)
        active.append(peer_instrumentor)
        assert BaseCallbackManager.__init__ is not original_init, f"{peer} did not instrument"

    yield start
    for peer_instrumentor in reversed(active):
        peer_instrumentor.uninstrument()
    for owner, name, value in saved:
        if value is None:
            if name in vars(owner):
                delattr(owner, name)
        else:
            setattr(owner, name, value)
    _peers.uninstall()
    _peer_spans._logged.clear()
    assert BaseCallbackManager.__init__ is original_init


def call(llm: Any, how: str, config: dict[str, Any]) -> None:
    if how == "invoke":
        llm.invoke(QUESTION, config=config)
    elif how == "stream":
        for _ in llm.stream(QUESTION, config=config):
            pass
    elif how == "ainvoke":
        asyncio.run(llm.ainvoke(QUESTION, config=config))
    else:
        async def consume() -> None:
            async for _ in llm.astream(QUESTION, config=config):
                pass

        asyncio.run(consume())


def run_once(chat_model: Any, telemetry: InMemoryTelemetry, *, how: str = "invoke", attach: str = "explicit",
             peer_spans: PeerSpans = "auto", **model_options: Any) -> list[ResponseRecord]:
    """One model call observed by our handler (passed in ``config`` or by ``observe_confidence()``)."""
    records: list[ResponseRecord] = []
    exporters = default_exporters(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
                                  registry=telemetry.registry, peer_spans=peer_spans)
    llm = chat_model(max_tokens=MAX_TOKENS, **model_options).bind(logprobs=True, top_logprobs=2)
    if attach == "explicit":
        call(llm, how, {"callbacks": [ConfidenceCallbackHandler(exporters=exporters, on_report=records.append)]})
    else:
        with observe_confidence(exporters=exporters, on_report=records.append):
            call(llm, how, {})
    return records


def is_ours(span: ReadableSpan) -> bool:
    return span.instrumentation_scope is not None and span.instrumentation_scope.name == INSTRUMENTATION_SCOPE


def confidence(span: ReadableSpan) -> dict[str, Any]:
    return {k: v for k, v in (span.attributes or {}).items() if k.startswith("llm.confidence.")}


def assert_carries(span: ReadableSpan, record: ResponseRecord) -> None:
    attributes = confidence(span)
    assert attributes["llm.confidence.status"] == record.status
    assert attributes["llm.confidence.logprobs"] == record.logprobs
    report = record.report
    assert report is not None and report.token_count > 0
    for name in REPORT_FIELDS:
        value = getattr(report, name)
        if value is not None:
            assert attributes[f"llm.confidence.{name}"] == pytest.approx(value), name
    scores = {e.attributes["gen_ai.evaluation.name"]: e.attributes["gen_ai.evaluation.score.value"]
              for e in span.events if e.name == EVALUATION_EVENT and e.attributes}
    assert scores == {name: pytest.approx(getattr(report, name)) for name in HEADLINE_SCORES}
    assert record.trace == {"trace_id": format(span.context.trace_id, "032x"),
                            "span_id": format(span.context.span_id, "016x")}


def assert_is_peers(span: ReadableSpan, peer: str) -> None:
    assert span.name == PEER_SPAN_NAMES[peer]
    attributes = span.attributes or {}
    if peer == "openinference":
        assert attributes["openinference.span.kind"] == "LLM"
        assert "output.value" in attributes  # the peer's own attributes are all there
    elif peer == "opentelemetry-genai":
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "opentelemetry.instrumentation.genai.langchain"
    else:
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.response.finish_reasons"] == ("stop",) or "gen_ai.request.model" in attributes
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name != INSTRUMENTATION_SCOPE


@pytest.mark.parametrize("attach", ["explicit", "observe_confidence"])
@pytest.mark.parametrize("how", ["invoke", "stream", "ainvoke", "astream"])
@pytest.mark.parametrize("peer", PEERS)
def test_one_call_gives_one_llm_span_the_peers_with_our_confidence(
        peer: str, how: str, attach: str, instrument: Any, telemetry: InMemoryTelemetry, chat_model: Any) -> None:
    instrument(peer)
    records = run_once(chat_model, telemetry, how=how, attach=attach)
    (span,) = telemetry.spans()
    assert_is_peers(span, peer)
    (record,) = records
    assert record.status == "ok"
    assert_carries(span, record)
    assert telemetry.sample("llm_responses_total", status="ok") == 1  # metrics as without a peer


@pytest.mark.parametrize("peer", PEERS)
def test_a_failed_call_gives_the_peers_span_our_error_record(
        peer: str, instrument: Any, telemetry: InMemoryTelemetry, chat_model: Any) -> None:
    instrument(peer)
    with pytest.raises(Exception, match="Connection"):
        run_once(chat_model, telemetry, base_url="http://127.0.0.1:9/v1")
    (span,) = telemetry.spans()
    assert span.name == PEER_SPAN_NAMES[peer]
    assert confidence(span) == {"llm.confidence.status": "error", "llm.confidence.logprobs": "not_returned"}
    assert telemetry.sample("llm_responses_total", status="error") == 1


@pytest.mark.parametrize("how", ["invoke", "stream"])
def test_without_a_peer_our_own_span(how: str, instrument: Any, telemetry: InMemoryTelemetry,
                                     chat_model: Any) -> None:
    (record,) = run_once(chat_model, telemetry, how=how, attach="observe_confidence")
    (span,) = telemetry.spans()
    assert span.name.startswith("chat ") and span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == INSTRUMENTATION_SCOPE
    assert_carries(span, record)


@pytest.mark.parametrize("peer", PEERS)
def test_never_keeps_our_own_span_beside_the_peers(peer: str, instrument: Any, telemetry: InMemoryTelemetry,
                                                   chat_model: Any) -> None:
    instrument(peer)
    (record,) = run_once(chat_model, telemetry, attach="observe_confidence", peer_spans="never")
    spans = telemetry.spans()
    assert len(spans) == 2
    (ours,) = [span for span in spans if is_ours(span)]
    (theirs,) = [span for span in spans if not is_ours(span)]
    assert theirs.name == PEER_SPAN_NAMES[peer] and confidence(theirs) == {}
    assert_carries(ours, record)


def test_always_makes_no_span_of_ours_without_a_peer(instrument: Any, telemetry: InMemoryTelemetry,
                                                     chat_model: Any) -> None:
    (record,) = run_once(chat_model, telemetry, peer_spans="always")
    assert telemetry.spans() == ()
    assert record.report is not None and record.trace == {}
    assert telemetry.sample("llm_responses_total", status="ok") == 1


def test_a_renamed_peer_map_falls_back_to_our_span_and_warns_once(
        instrument: Any, telemetry: InMemoryTelemetry, chat_model: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from openinference.instrumentation.langchain._tracer import OpenInferenceTracer

    instrument("openinference")
    # A future release that renames its run → span lookup (the tracer itself still works).
    monkeypatch.setattr(OpenInferenceTracer, "span_of_run", OpenInferenceTracer.get_span, raising=False)
    monkeypatch.delattr(OpenInferenceTracer, "get_span")
    with caplog.at_level(logging.WARNING, logger="observability"):
        records = run_once(chat_model, telemetry) + run_once(chat_model, telemetry, how="stream")
    spans = telemetry.spans()
    ours = [span for span in spans if span.name.startswith("chat ")]
    peers = [span for span in spans if span.name == "ChatOpenAI"]
    assert len(ours) == 2 and len(peers) == 2
    for span, record in zip(ours, records, strict=True):
        assert_carries(span, record)
    assert all(confidence(span) == {} for span in peers)
    warnings = [r for r in caplog.records if r.name == "observability" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "openinference" in warnings[0].getMessage() and "AttributeError" in warnings[0].getMessage()


@pytest.mark.parametrize("peer", ["openllmetry", "opentelemetry-genai"])
def test_a_renamed_peer_handler_class_falls_back_to_our_span_and_warns_once(
        peer: str, instrument: Any, telemetry: InMemoryTelemetry, chat_model: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    from opentelemetry.instrumentation.genai.langchain.callback_handler import OpenTelemetryLangChainCallbackHandler
    from opentelemetry.instrumentation.langchain.callback_handler import TraceloopCallbackHandler

    handler_class = TraceloopCallbackHandler if peer == "openllmetry" else OpenTelemetryLangChainCallbackHandler
    name = handler_class.__name__
    instrument(peer)
    handler_class.__name__ = f"{name}V2"  # a release that renames its handler
    try:
        with caplog.at_level(logging.WARNING, logger="observability"):
            records = run_once(chat_model, telemetry, attach="observe_confidence") + run_once(chat_model, telemetry)
    finally:
        handler_class.__name__ = name
    spans = telemetry.spans()
    ours = [span for span in spans if is_ours(span)]
    assert len(spans) == 4 and len(ours) == 2
    for span, record in zip(ours, records, strict=True):
        assert_carries(span, record)
    assert all(confidence(span) == {} for span in spans if not is_ours(span))
    warnings = [r for r in caplog.records if r.name == "observability" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and peer in warnings[0].getMessage()


@pytest.mark.parametrize("peers", [*([peer] for peer in PEERS), PEERS], ids=[*PEERS, "all"])
def test_a_model_inside_a_chain_puts_confidence_on_each_peers_llm_span_only(
        peers: list[str], instrument: Any, telemetry: InMemoryTelemetry, chat_model: Any) -> None:
    from langchain_core.prompts import ChatPromptTemplate

    for peer in peers:
        instrument(peer)
    records: list[ResponseRecord] = []
    chain = ChatPromptTemplate.from_messages([("human", "{question}")]) | chat_model(max_tokens=MAX_TOKENS).bind(
        logprobs=True, top_logprobs=2)
    with observe_confidence(exporters=telemetry.exporters(), on_report=records.append):
        chain.invoke({"question": QUESTION})
    spans = telemetry.spans()
    assert not any(is_ours(span) for span in spans)
    # Each peer's spans: OpenInference and OpenLLMetry trace prompt, model and sequence; the official
    # instrumentation the model and the sequence (a workflow span).
    assert len(spans) == sum(2 if peer == "opentelemetry-genai" else 3 for peer in peers)
    carrying = {span.name: span for span in spans if confidence(span)}
    assert set(carrying) == {PEER_SPAN_NAMES[peer] for peer in peers}
    (record,) = records
    for span in carrying.values():
        assert confidence(span)["llm.confidence.sequence_probability"] == pytest.approx(
            record.report.sequence_probability if record.report else None)


@pytest.mark.real_backend
def test_in_phoenix_one_llm_span_with_openinferences_attributes_and_ours(
        phoenix: Any, instrument: Any, chat_model: Any) -> None:
    """Through a real Phoenix, read back over its REST API: the OpenInference LLM span carries ours."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    project = f"peers-{uuid.uuid4().hex[:8]}"
    provider = TracerProvider(resource=Resource.create({"openinference.project.name": project}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=phoenix.traces_endpoint, timeout=10)))
    instrument("openinference", provider)
    records: list[ResponseRecord] = []
    handler = ConfidenceCallbackHandler(exporters=default_exporters(tracer_provider=provider), on_report=records.append)
    llm = chat_model(max_tokens=MAX_TOKENS).bind(logprobs=True, top_logprobs=2)
    llm.invoke(QUESTION, config={"callbacks": [handler]})
    assert provider.force_flush(30_000)
    deadline = time.monotonic() + 60
    while not (spans := phoenix.spans(project)) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1)  # anything else that was exported arrives too
    spans = phoenix.spans(project)
    provider.shutdown()

    (span,) = spans
    (record,) = records
    attributes = span["attributes"]
    assert span["name"] == "ChatOpenAI" and span["context"]["span_id"] == record.trace["span_id"]
    assert span["span_kind"] == "LLM" and "output.value" in attributes and attributes["llm.token_count.total"] > 0
    report = record.report
    assert report is not None and attributes["llm.confidence.status"] == "ok"
    for name in REPORT_FIELDS:
        if getattr(report, name) is not None:
            assert attributes[f"llm.confidence.{name}"] == pytest.approx(getattr(report, name)), name
    evaluations = {e["attributes"]["gen_ai.evaluation.name"]: e["attributes"]["gen_ai.evaluation.score.value"]
                   for e in span["events"] if e["name"] == EVALUATION_EVENT}
    assert evaluations == {name: pytest.approx(getattr(report, name)) for name in HEADLINE_SCORES}


class EndOrder(BaseCallbackHandler):
    """An app's own handler: notes when it saw the model run end."""

    def __init__(self, name: str, seen: list[str]) -> None:
        self.name, self.seen = name, seen

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.seen.append(self.name)


@pytest.mark.parametrize("attach", ["explicit", "observe_confidence"])
@pytest.mark.parametrize("peer", [None, *PEERS])
def test_a_peer_does_not_change_the_order_of_the_apps_handlers(
        peer: str | None, attach: str, instrument: Any, telemetry: InMemoryTelemetry, chat_model: Any) -> None:
    """Issue 25 item 11: only the peer moves behind us; the app's handlers around ours keep their places."""
    if peer is not None:
        instrument(peer)
    seen: list[str] = []
    exporters = default_exporters(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
                                  registry=telemetry.registry)
    ours = ConfidenceCallbackHandler(exporters=exporters, on_report=lambda record: seen.append("ours"))
    before, after = EndOrder("app before", seen), EndOrder("app after", seen)
    llm = chat_model(max_tokens=MAX_TOKENS).bind(logprobs=True, top_logprobs=2)
    if attach == "explicit":
        llm.invoke(QUESTION, config={"callbacks": [before, ours, after]})
        expected = ["app before", "ours", "app after"]
    else:
        with observe_confidence(exporters=exporters, on_report=lambda record: seen.append("ours")):
            llm.invoke(QUESTION, config={"callbacks": [before, after]})
        expected = ["app before", "app after", "ours"]  # configure() adds the hook's handler last
    assert seen == expected
    (span,) = telemetry.spans()
    assert confidence(span)["llm.confidence.status"] == "ok"  # the peer still ends its span after us
    if peer is not None:
        assert span.name == PEER_SPAN_NAMES[peer]
