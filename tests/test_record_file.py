"""The JSON-lines record file: what ``record_to=`` writes, and reading it back."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from observability import ConfidenceCallbackHandler, ResponseRecord, TokenLogprob
from observability.core.types import TokenLogprobs
from observability.demo.model_server import MODEL_NAME, LocalModelServer
from observability.exporters._jsonl import FORMAT, JsonlRecorder, RecordFileError, read_records
from tests.conftest import raw_chat_completion
from tests.demo_support import korean_tokens, record_for

QUESTION = "Name three colours."


def test_a_record_survives_the_round_trip(tmp_path: Path) -> None:
    last = TokenLogprob(token="!", bytes=b"!", logprob=-math.inf, top_logprobs=(("?", -0.1), ("!", -math.inf)))
    tokens = TokenLogprobs([*korean_tokens(), last])
    record = replace(record_for(tokens, question="대한민국의 수도는?"),
                     trace={"trace_id": "ab" * 16, "span_id": "cd" * 8})
    path = tmp_path / "records.jsonl"
    recorder = JsonlRecorder(path)
    recorder.export([record, replace(record, choice_index=1, status="cancelled")])
    recorder.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0], parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert first["format"] == FORMAT and first["version"] == 1
    assert first["text"] == "대한민국의 수도는 서울입니다.!"  # readable UTF-8, not \u escapes
    assert "대한민국" in lines[0]
    assert first["tokens"][2] == {"token": "\\xeb\\xaf", "bytes": [235, 175], "logprob": -1.8624639e-06,
                                  "top_logprobs": []}
    assert first["tokens"][-1]["logprob"] is None  # probability 0 is written as null
    assert first["question"] == "대한민국의 수도는?"
    back = read_records(path)
    assert back[0] == record
    assert back[1].status == "cancelled" and back[1].choice_index == 1


@pytest.mark.real_model
def test_record_to_writes_one_line_per_response(tmp_path: Path, chat_model: Any,
                                                local_model: LocalModelServer) -> None:
    path = tmp_path / "out" / "records.jsonl"
    path.parent.mkdir()
    seen: list[ResponseRecord] = []
    handler = ConfidenceCallbackHandler(exporters=(), on_report=seen.append, record_to=path)
    model = chat_model(max_tokens=12).bind(logprobs=True, top_logprobs=3)
    model.invoke(QUESTION, config={"callbacks": [handler]})
    model.batch(["Say hi.", "Say bye.", "Count to three."], config={"callbacks": [handler]})
    for _ in model.stream(QUESTION, config={"callbacks": [handler]}):
        pass
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(seen) == 5
    assert [json.loads(line)["run_id"] for line in lines] == [str(r.run_id) for r in seen]
    # the non-streamed answer, token for token, as the server itself returned it
    raw = raw_chat_completion(local_model.base_url, {
        "model": MODEL_NAME, "messages": [{"role": "user", "content": QUESTION}], "temperature": 0,
        "max_tokens": 12, "logprobs": True, "top_logprobs": 3})
    expected = [entry["token"] for entry in raw["choices"][0]["logprobs"]["content"]]
    first = json.loads(lines[0])
    assert [t["token"] for t in first["tokens"]] == expected
    assert [len(t["top_logprobs"]) for t in first["tokens"]] == [3] * len(expected)
    assert first["status"] == "ok" and first["logprobs"] == "present" and first["text"] == raw["choices"][0][
        "message"]["content"]
    assert read_records(path) == seen


def test_without_record_to_nothing_is_written(tmp_path: Path) -> None:
    handler = ConfidenceCallbackHandler(exporters=())
    assert not any(isinstance(e, JsonlRecorder) for e in handler.exporters)
    with_file = ConfidenceCallbackHandler(exporters=(), record_to=tmp_path / "r.jsonl")
    assert [type(e) for e in with_file.exporters] == [JsonlRecorder]
    assert not (tmp_path / "r.jsonl").exists()  # opened on the first record only


def test_a_directory_is_not_a_record_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a directory"):
        ConfidenceCallbackHandler(exporters=(), record_to=tmp_path)


@pytest.mark.parametrize(("line", "message"), [
    pytest.param("{not json", "not a response record", id="not-json"),
    pytest.param('{"format": "something-else"}', "not a langchain-confidence.record line", id="other-format"),
    pytest.param(json.dumps({"format": FORMAT, "version": 99}), "unsupported record version 99", id="version"),
    pytest.param(json.dumps({"format": FORMAT, "version": 1}), "missing field 'run_id'", id="missing"),
])
def test_a_bad_line_is_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    good = JsonlRecorder(path)
    good.export([record_for(korean_tokens())])
    good.close()
    with path.open("a", encoding="utf-8") as file:
        file.write("\n" + line + "\n")
    with pytest.raises(RecordFileError, match=rf"bad.jsonl:3: .*{message}"):
        read_records(path)


def test_lone_surrogates_in_token_text_are_kept_and_read_back(tmp_path: Path) -> None:
    # Issue 15: `ensure_ascii=False` on a UTF-8 file raised UnicodeEncodeError and the response was lost.
    # A byte-level token decoded with surrogateescape holds a lone surrogate, as text and alternatives do.
    broken = b"\xeb\xaf".decode("utf-8", "surrogateescape")
    tokens = TokenLogprobs([*korean_tokens(), TokenLogprob(token=broken, bytes=b"\xeb\xaf", logprob=-0.5,
                                                           top_logprobs=((broken, -0.5), ("\udfff", -2.0)))])
    record = replace(record_for(tokens), text="ok " + broken)
    path = tmp_path / "records.jsonl"
    recorder = JsonlRecorder(path)
    recorder.export([record])
    recorder.close()
    line = path.read_bytes()
    line.decode("utf-8")  # strict UTF-8: the file stays readable by any JSON-lines tool
    assert b"\\udceb\\udcaf" in line and b"\\udfff" in line
    back = read_records(path)
    assert back == [record]
    assert back[0].tokens[-1].token == broken and back[0].text == "ok " + broken


def test_the_handler_records_a_response_with_a_lone_surrogate(tmp_path: Path) -> None:
    import uuid

    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, LLMResult

    path = tmp_path / "r.jsonl"
    seen: list[ResponseRecord] = []
    handler = ConfidenceCallbackHandler(exporters=(), on_report=seen.append, record_to=path)
    texts = ["fine", "\ud800", "!"]
    entries = [{"token": t, "logprob": -0.5, "bytes": None, "top_logprobs": [{"token": t, "logprob": -0.5}]}
               for t in texts]
    generation = ChatGeneration(message=AIMessage("".join(texts)), generation_info={"logprobs": {"content": entries}})
    run = uuid.uuid4()
    handler.on_chat_model_start({}, [[]], run_id=run, invocation_params={"logprobs": True})
    handler.on_llm_end(LLMResult(generations=[[generation]]), run_id=run)
    assert dict(handler.errors) == {}  # before: {"JsonlRecorder.export": 1}, the response lost
    [back] = read_records(path)
    assert [t.token for t in back.tokens] == texts and back == seen[0]


def test_field_confidence_survives_the_round_trip(tmp_path: Path) -> None:
    from observability import score_confidence
    from observability.core.fields import field_confidence

    pieces = ['{"', "city", '":', ' "', "Se", "oul", '",', ' "', "sure", '":', " true", "}"]
    tokens = TokenLogprobs(TokenLogprob(p, p.encode(), -0.05 * (i + 1), ((p, -0.05 * (i + 1)), ("x", -3.0)))
                           for i, p in enumerate(pieces))
    report = replace(score_confidence(tokens), fields=field_confidence(tokens))
    assert [f.path for f in report.fields] == ["/city", "/sure"]
    record = replace(record_for(tokens, question="Where?"), report=report)
    path = tmp_path / "records.jsonl"
    JsonlRecorder(path).export([record])
    assert read_records(path) == [record]


# ---- the question: captured at the start of a run, written to the record file only -------------
def _recorded(path: Path) -> list[str | None]:
    return [json.loads(line)["question"] for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_question_is_the_last_human_message_or_the_prompt(tmp_path: Path) -> None:
    from langchain_core.language_models.fake import FakeListLLM
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    from observability.testing import FakeLogprobChatModel

    path = tmp_path / "r.jsonl"
    handler = ConfidenceCallbackHandler(exporters=(), record_to=path)
    config: Any = {"callbacks": [handler]}
    chat = FakeLogprobChatModel()
    chat.invoke([SystemMessage("Be brief."), HumanMessage("First question?"), AIMessage("An answer."),
                 HumanMessage("Second question?"), AIMessage("(prefilled)")], config=config)
    chat.invoke([HumanMessage(content=[{"type": "text", "text": "What is in"},
                                       {"type": "image_url", "image_url": {"url": "data:,"}},
                                       {"type": "text", "text": "this picture?"}])], config=config)
    for _ in chat.stream("A streamed question?", config=config):
        pass
    chat.invoke([SystemMessage("No human message here.")], config=config)
    FakeListLLM(responses=["Paris."]).invoke("The prompt of a completion run", config=config)
    assert _recorded(path) == ["Second question?", "What is in\nthis picture?", "A streamed question?", None,
                               "The prompt of a completion run"]
    assert [r.start.question for r in read_records(path)] == _recorded(path)


def test_the_question_goes_to_the_record_file_and_nowhere_else_by_default(tmp_path: Path) -> None:
    """Content: spans, both metric systems and every log line (DEBUG included) must not hold it;
    the record file (opt-in) must. The check can fail: the marker is searched as UTF-8 bytes."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from observability.testing import FakeLogprobChatModel, InMemoryTelemetry
    from tests.test_privacy import our_log_output

    marker = "quokka-lantern-5521 대답"

    class Failing:  # our failure path logs too: it must not quote the question either
        def export(self, records: Any) -> None:
            raise RuntimeError(records[0].start.question)

    sinks = InMemoryTelemetry()
    path = tmp_path / "r.jsonl"
    with our_log_output() as logs:
        handler = ConfidenceCallbackHandler(exporters=[*sinks.exporters(), Failing()], record_to=path)
        config: Any = {"callbacks": [handler], "metadata": {"route": "faq"}}
        FakeLogprobChatModel().invoke(f"Tell me about {marker}.", config=config)
        for _ in FakeLogprobChatModel().stream(f"Stream about {marker}.", config=config):
            pass
        with pytest.raises(Exception, match="fake"):
            FakeLogprobChatModel(error_after=2).invoke(f"Fail on {marker}.", config=config)
    lines = logs.lines
    metrics = sinks.metrics()
    assert metrics is not None and sinks.spans()
    elsewhere = {
        "spans": encode_spans(sinks.spans()).SerializeToString(),
        "otel metrics": encode_metrics(metrics).SerializeToString(),
        "prometheus": sinks.prometheus_text().encode(),
        "logs": "\n".join(lines).encode(),
    }
    assert lines, "the failing exporter was logged"
    needle = marker.encode()
    assert {where for where, data in elsewhere.items() if needle in data} == set()
    assert [marker in (q or "") for q in _recorded(path)] == [True, True, True]
    sinks.shutdown()
