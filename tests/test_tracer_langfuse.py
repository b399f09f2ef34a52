"""Confidence in Langfuse: the real ``langfuse`` SDK and its LangChain ``CallbackHandler``, exporting
to a loopback Langfuse API (tests/tracer_support.py) that decodes the OTLP protobuf spans and the
score batches it receives; the bundled model behind the real ``ChatOpenAI``.

Langfuse and our span exporter share one tracer provider, as they do when both use the global one:
one model call gives one observation in Langfuse, its generation, carrying ``llm.confidence.*``,
the ``llm_confidence`` metadata and one score per headline figure keyed to that generation.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from observability import ResponseRecord, observe_confidence
from observability.exporters import _peer_spans, default_exporters
from observability.exporters._otel_spans import HEADLINE_SCORES, REPORT_FIELDS
from observability.langchain import peers as _peers
from tests.tracer_support import Received, call, langfuse_endpoint

pytestmark = pytest.mark.real_model

MAX_TOKENS = 8


class Langfuse:
    """A Langfuse client of its own for one test (its own public key and tracer provider)."""

    def __init__(self, received: Received) -> None:
        from langfuse import Langfuse as Client

        self.received = received
        self.public_key = f"pk-lf-{uuid.uuid4().hex[:8]}"
        self.provider = TracerProvider(shutdown_on_exit=False)
        self.client = Client(public_key=self.public_key, secret_key="sk-lf-loopback", base_url=received.url,
                             tracer_provider=self.provider, flush_interval=0.2)

    def handler(self) -> Any:
        from langfuse.langchain import CallbackHandler

        return CallbackHandler(public_key=self.public_key)

    def flushed(self, generations: int, scored: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The spans and scores Langfuse received after a flush (which sends both queues), once
        ``generations`` generations (and, if ``scored``, their scores) are in."""
        self.client.flush()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with self.received.lock:
                spans = [value for name, value in self.received.parts if name == "span"]
                scores = [value for name, value in self.received.parts if name == "score"]
            if len(generations_of(spans)) >= generations and len(scores) >= scored * generations * len(HEADLINE_SCORES):
                return spans, scores
            time.sleep(0.1)
            self.client.flush()
        return spans, scores

    def shutdown(self) -> None:
        self.client.shutdown()
        self.provider.shutdown()


@pytest.fixture
def langfuse() -> Iterator[Langfuse]:
    with langfuse_endpoint() as received:
        client = Langfuse(received)
        yield client
        client.shutdown()
        _peers.uninstall()
        _peer_spans._logged.clear()


def generations_of(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in spans if s["attributes"].get("langfuse.observation.type") == "generation"]


def run(langfuse: Langfuse, chat_model: Any, how: str = "invoke", **model_options: Any) -> list[ResponseRecord]:
    """Calls with Langfuse's handler in ``config`` and ours attached by ``observe_confidence()``."""
    records: list[ResponseRecord] = []
    llm = chat_model(max_tokens=MAX_TOKENS, **model_options).bind(logprobs=True, top_logprobs=2)
    with observe_confidence(exporters=default_exporters(tracer_provider=langfuse.provider), on_report=records.append):
        call(llm, how, {"callbacks": [langfuse.handler()]})
    return records


def assert_carries(generation: dict[str, Any], scores: list[dict[str, Any]], record: ResponseRecord) -> None:
    attributes = generation["attributes"]
    report = record.report
    assert report is not None and attributes["llm.confidence.status"] == "ok"
    metadata = json.loads(attributes["langfuse.observation.metadata.llm_confidence"])
    for name in REPORT_FIELDS:
        if getattr(report, name) is not None:
            assert float(attributes[f"llm.confidence.{name}"]) == pytest.approx(getattr(report, name)), name
            assert metadata[name] == pytest.approx(getattr(report, name)), name
    assert "gen_ai.evaluation.result" in generation["events"]
    mine = {s["name"]: s for s in scores if s.get("observationId") == generation["span_id"]}
    assert {name: s["value"] for name, s in mine.items()} == {
        name: pytest.approx(getattr(report, name)) for name in HEADLINE_SCORES}
    assert all(s["traceId"] == generation["trace_id"] and s["dataType"] == "NUMERIC" for s in mine.values())


@pytest.mark.parametrize("how", ["invoke", "stream", "async"])
def test_one_generation_per_call_carrying_our_figures_and_scores(how: str, langfuse: Langfuse,
                                                                 chat_model: Any) -> None:
    records = run(langfuse, chat_model, how)
    spans, scores = langfuse.flushed(len(records))
    generations = generations_of(spans)
    assert len(generations) == len(records) == (2 if how == "async" else 1)
    assert not [s for s in spans if s["scope"] == "langchain-confidence"]  # no observation of ours
    by_span = {record.trace["span_id"]: record for record in records}
    for generation in generations:
        assert generation["attributes"]["langfuse.observation.model.name"]  # Langfuse's own fields stay
        assert_carries(generation, scores, by_span[generation["span_id"]])
    assert len(scores) == len(records) * len(HEADLINE_SCORES)


def test_a_failed_call_marks_the_generation_and_scores_nothing(langfuse: Langfuse, chat_model: Any) -> None:
    with pytest.raises(Exception, match="Connection"):
        run(langfuse, chat_model, base_url="http://127.0.0.1:9/v1")
    spans, scores = langfuse.flushed(1, scored=False)
    (generation,) = generations_of(spans)
    assert generation["attributes"]["llm.confidence.status"] == "error"
    assert json.loads(generation["attributes"]["langfuse.observation.metadata.llm_confidence"]) == {
        "status": "error", "logprobs": "not_returned"}
    assert scores == []


class RunMap:
    """A run map that is no longer a dict (what a Langfuse release could change it to); Langfuse's
    own handler still works with it."""

    def __init__(self) -> None:
        self._items: dict[Any, Any] = {}

    def __getitem__(self, key: Any) -> Any:
        return self._items[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._items[key] = value

    def __contains__(self, key: Any) -> bool:
        return key in self._items

    def __getattr__(self, name: str) -> Any:
        return getattr(self._items, name)


def test_a_changed_run_map_falls_back_to_our_span_and_warns_once(
        langfuse: Langfuse, chat_model: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from langfuse.langchain.CallbackHandler import LangchainCallbackHandler

    original_init = LangchainCallbackHandler.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._runs = RunMap()

    monkeypatch.setattr(LangchainCallbackHandler, "__init__", init)
    with caplog.at_level(logging.WARNING, logger="observability"):
        records = run(langfuse, chat_model) + run(langfuse, chat_model)
    assert [record.status for record in records] == ["ok", "ok"]
    spans, scores = langfuse.flushed(2, scored=False)
    assert len(generations_of(spans)) == 2  # Langfuse itself still works
    ours = [s for s in spans if s["scope"] == "langchain-confidence"]
    assert len(ours) == 2 and all(float(s["attributes"]["llm.confidence.sequence_probability"]) > 0 for s in ours)
    assert scores == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "observability" and r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("langfuse" in w and "TypeError" in w for w in warnings)
