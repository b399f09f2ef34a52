"""Issue 8.5: privacy. With default settings no prompt, response or token text leaves the process:
every exported byte is searched (spans and their events as OTLP protobuf, OpenTelemetry metrics as
OTLP protobuf, the Prometheus exposition with exemplars, the record file, log output). With capture
enabled the response and token text appear. Secrets (the API key, an authorization header,
credentials in the base URL) never appear in any mode. Runs the real client against the real model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from observability import ConfidenceCallbackHandler, ResponseRecord
from observability.demo.model_server import LocalModelServer
from observability.testing import FakeLogprobChatModel, InMemoryTelemetry

API_KEY = f"sk-privacy-{uuid4().hex}"
HEADER_SECRET = f"Bearer hdr-{uuid4().hex}"
URL_PASSWORD = f"pw{uuid4().hex}"
PROMPT_MARKER = "zebra-marmalade-7361"
PROMPTS = (f"Reply with a short sentence about apples. ({PROMPT_MARKER})",
           f"List three colours of the rainbow. ({PROMPT_MARKER})")


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter("%(name)s %(levelname)s %(message)s").format(record))


@contextmanager
def our_log_output() -> Iterator[Collect]:
    """Everything our package and the OpenTelemetry SDK log, at every level."""
    collect = Collect()
    loggers = [logging.getLogger(name) for name in ("observability", "opentelemetry")]
    saved = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(collect)
        logger.setLevel(logging.DEBUG)
    try:
        yield collect
    finally:
        for logger, level in zip(loggers, saved, strict=True):
            logger.removeHandler(collect)
            logger.setLevel(level)


class Failing:
    """An exporter that fails, so our own failure logging is part of the searched output."""

    def export(self, records: Any) -> None:
        raise RuntimeError("sink unavailable")


def exported_bytes(sinks: InMemoryTelemetry, logs: Collect, record_file: Path | None) -> bytes:
    """Every byte that would leave the process, in the encodings it would leave in."""
    metrics = sinks.metrics()
    assert metrics is not None
    parts = [
        encode_spans(sinks.spans()).SerializeToString(),
        encode_metrics(metrics).SerializeToString(),
        sinks.prometheus_text(openmetrics=True).encode(),
        sinks.prometheus_text(openmetrics=False).encode(),
        "\n".join(logs.lines).encode(),
    ]
    if record_file is not None and record_file.exists():
        parts.append(record_file.read_bytes())
    return b"\n".join(parts)


def run_real_calls(chat_model: Any, local_model: LocalModelServer, capture: bool,
                   tmp_path: Path) -> tuple[bytes, list[ResponseRecord], list[str], Path | None]:
    sinks = InMemoryTelemetry()
    records: list[ResponseRecord] = []
    record_file = tmp_path / "records.jsonl" if capture else None
    handler = ConfidenceCallbackHandler(
        exporters=[Failing(), *sinks.exporters(capture_content=capture, metadata_labels=["route"])],
        on_report=records.append, record_to=record_file)
    # Secrets where real apps keep them: the key, a custom auth header, credentials in the URL.
    base_url = local_model.base_url.replace("http://", f"http://alice:{URL_PASSWORD}@")
    llm = chat_model(api_key=API_KEY, base_url=base_url, default_headers={"X-Proxy-Authorization": HEADER_SECRET},
                     max_tokens=32).bind(logprobs=True, top_logprobs=3)
    config = {"callbacks": [handler], "metadata": {"route": "/privacy"}}
    with our_log_output() as logs:
        answers = [str(llm.invoke(PROMPTS[0], config=config).content),
                   "".join(str(chunk.content) for chunk in llm.stream(PROMPTS[1], config=config))]
        sinks.tracer_provider.force_flush()
        data = exported_bytes(sinks, logs, record_file)
    sinks.shutdown()
    assert dict(handler.errors) == {"Failing.export": 2}
    assert len(records) == 2 and all(r.status == "ok" and r.report for r in records)
    assert any("Failing.export failed" in line for line in logs.lines)  # the log output is really searched
    return data, records, answers, record_file


def vocabulary_control() -> bytes:
    """What the same exporters export for a different, fake answer: our schema's own words."""
    sinks = InMemoryTelemetry()
    handler = ConfidenceCallbackHandler(exporters=sinks.exporters(metadata_labels=["route"]))
    FakeLogprobChatModel(tokens=["q"], token_logprobs=[-0.1]).invoke("x", config={"callbacks": [handler],
                                                                                  "metadata": {"route": "/privacy"}})
    with our_log_output() as logs:
        data = exported_bytes(sinks, logs, None)
    sinks.shutdown()
    return data


def content_needles(records: list[ResponseRecord], answers: list[str], control: bytes) -> set[str]:
    """Strings that can only come from the response: each answer, runs of three consecutive
    tokens, and single tokens of five or more characters our exports do not otherwise contain."""
    needles = {answer.strip() for answer in answers if len(answer.strip()) >= 6}
    for record in records:
        texts = [t.token or "" for t in record.tokens]
        for i in range(len(texts)):
            run = "".join(texts[i:i + 3]).strip()
            if len(run) >= 6:
                needles.add(run)
            word = texts[i].strip()
            if len(word) >= 5 and word.encode() not in control:
                needles.add(word)
    return needles


def forms(needle: str) -> list[bytes]:
    """A string as it may appear in the exports: UTF-8, JSON-escaped, Prometheus-escaped."""
    escaped = json.dumps(needle)[1:-1]
    prometheus = needle.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return list({needle.encode(), escaped.encode(), prometheus.encode()})


def found(needle: str, data: bytes) -> bool:
    return any(form in data for form in forms(needle))


SECRETS = (API_KEY, HEADER_SECRET.split()[1], URL_PASSWORD)


@pytest.mark.real_model
def test_defaults_export_no_prompt_response_or_token_text_and_no_secrets(
        chat_model: Any, local_model: LocalModelServer, tmp_path: Path) -> None:
    data, records, answers, _ = run_real_calls(chat_model, local_model, capture=False, tmp_path=tmp_path)
    # The exports are real: both spans with their confidence figures, both responses counted.
    assert data.count(b"llm.confidence.sequence_probability") >= 2
    assert b'llm_responses_total{' in data
    needles = content_needles(records, answers, vocabulary_control())
    assert len(needles) >= 5, needles  # the search has something to find
    leaked = sorted(n for n in needles if found(n, data))
    assert leaked == [], f"content in the default exports: {leaked}"
    assert not found(PROMPT_MARKER, data)
    assert [s for s in SECRETS if found(s, data)] == []
    assert list(tmp_path.iterdir()) == []  # no record file unless asked for


@pytest.mark.real_model
def test_capture_enabled_exports_response_and_token_text_but_never_secrets(
        chat_model: Any, local_model: LocalModelServer, tmp_path: Path) -> None:
    data, records, answers, record_file = run_real_calls(chat_model, local_model, capture=True, tmp_path=tmp_path)
    assert record_file is not None
    lines = [json.loads(line) for line in record_file.read_text(encoding="utf-8").splitlines()]
    assert [line["text"] for line in lines] == answers  # the record file holds the answers
    # Spans carry the low-confidence tokens' text as events.
    low = [t.token for r in records for t in r.tokens
           if t.token and t.token.strip() and t.logprob < -0.6931471805599453]  # p < 0.5
    assert low, "the model answered with no low-confidence token; the prompt needs changing"
    assert all(found(token, data) for token in low)
    assert [s for s in SECRETS if found(s, data)] == []
    # The record file (asked for, like capture) keeps each question; spans, metrics and logs never
    # hold the prompt, in any mode.
    assert [line["question"] for line in lines] == list(PROMPTS)
    assert not found(PROMPT_MARKER, data.replace(record_file.read_bytes(), b""))


PROVIDER_MARKER = f"provider-secret-{uuid4().hex}"


def test_the_refusal_path_and_every_debug_log_hold_no_credential_or_provider_text() -> None:
    # Issue 15: the refusal warning quoted openai_api_base (with user:password@) and the provider's error text.
    import asyncio

    import httpx
    import openai
    from langchain_core.runnables import RunnableConfig
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    from observability.langchain import enable_logprobs as patch
    from tests.provider_support import ANSWER, APP_ERROR_MODEL, canned_provider

    sinks = InMemoryTelemetry()
    # A failing exporter, so the handler logs its own failure at DEBUG on every run, the provider's
    # failed runs included (where a traceback would chain the provider's exception and its text).
    handler = ConfidenceCallbackHandler(exporters=[Failing(), *sinks.exporters(capture_content=False)])
    config: RunnableConfig = {"callbacks": [handler]}
    with canned_provider(marker=PROVIDER_MARKER, refuse_logprobs=True) as provider, our_log_output() as logs:
        base_url = provider["base_url"].replace("http://", f"http://alice:{URL_PASSWORD}@")

        def model(name: str) -> ChatOpenAI:
            return ChatOpenAI(model=name, base_url=base_url, api_key=SecretStr(API_KEY), max_retries=0, timeout=60,
                              default_headers={"X-Proxy-Authorization": HEADER_SECRET},
                              http_async_client=httpx.AsyncClient(timeout=60))

        before = patch.stats()["refusals"]
        with patch.logprobs_enabled(top_logprobs=2):
            answers = [model("refuser-invoke").invoke("q", config=config).text,
                       "".join(chunk.text for chunk in model("refuser-stream").stream("q", config=config)),
                       asyncio.run(model("refuser-async").ainvoke("q", config=config)).text]
            with pytest.raises(openai.BadRequestError, match=PROVIDER_MARKER):  # the app's own error, untouched
                model(APP_ERROR_MODEL).invoke("q", config=config)
        sinks.tracer_provider.force_flush()
        data = exported_bytes(sinks, logs, None)
        port = provider["base_url"].split(":")[2].split("/")[0]
    sinks.shutdown()
    assert answers == [ANSWER] * 3
    assert patch.stats()["refusals"] - before == 3
    refusals = [line for line in logs.lines if "refused the logprobs we added" in line]
    assert refusals == [f"observability WARNING observability: model {name!r} at http://127.0.0.1:{port}/v1 refused "
                        "the logprobs we added (OpenAIInvalidRequestError); the call was retried without them and "
                        "this model will not be asked again."
                        for name in ("refuser-invoke", "refuser-stream", "refuser-async")]
    assert any(line.startswith("observability DEBUG") for line in logs.lines)  # DEBUG is really searched
    assert b"llm_responses_total{" in data and data.count(b"error.type") >= 1  # the error run was exported
    assert [s for s in (*SECRETS, PROVIDER_MARKER) if found(s, data)] == []


JSON_VALUES = (f"Zebedee-{uuid4().hex[:8]}", "86753091", f"lapis-{uuid4().hex[:6]}")


def json_answer_bytes(capture: bool) -> bytes:
    """Every exported byte for a JSON answer whose fields are allowlisted for the metrics."""
    from tests.export_support import json_record

    name, age, tag = JSON_VALUES
    record = json_record(['{"name": "', name, '", "age": ', age, ', "tags": ["', tag, '"]}'],
                         response_id="chatcmpl-json", metadata={"route": "/privacy"})
    sinks = InMemoryTelemetry()
    with our_log_output() as logs:
        for exporter in sinks.exporters(capture_content=capture, metadata_labels=["route"],
                                        field_paths=("/name", "/age", "/tags/*")):
            exporter.export([record])
        sinks.tracer_provider.force_flush()
        data = exported_bytes(sinks, logs, None)
    sinks.shutdown()
    # the exports are real: one event and one series per field
    assert data.count(b"llm.confidence.field.path") >= 3 and b'path="/tags/0"' in data
    return data


def test_json_field_values_never_leave_by_default() -> None:
    data = json_answer_bytes(capture=False)
    assert [value for value in JSON_VALUES if found(value, data)] == []
    assert not found("zqx", data)  # the alternatives' text neither


def test_json_field_values_only_on_span_events_with_capture() -> None:
    data = json_answer_bytes(capture=True)
    assert all(found(value, data) for value in JSON_VALUES)
