"""``observability.testing``: the fake model behaves like ChatOpenAI where the handler looks, and
the example of it in docs/guarantees.md runs as pasted."""

from __future__ import annotations

import math

import pytest

from observability import ConfidenceCallbackHandler, extract_token_logprobs
from observability.testing import FakeLogprobChatModel, FakeModelError, RecordingExporter, openai_logprobs
from tests.docs_support import DOCS, code_blocks, section


def test_the_documented_example_runs() -> None:
    [code] = code_blocks(section(DOCS / "guarantees.md", "testing"), "python")
    exec(compile(code, "docs/guarantees.md", "exec"), {})


def test_fake_model_streams_one_logprob_entry_per_text_chunk_like_chatopenai() -> None:
    model = FakeLogprobChatModel(tokens=["A", "ß", "c"], token_logprobs=[-0.1, -2.0, 0.0])
    chunks = list(model.stream("hi"))
    # Text chunks, the finish chunk, and the empty last chunk LangChain adds itself.
    assert [c.content for c in chunks] == ["A", "ß", "c", "", ""]
    entries = [c.response_metadata.get("logprobs") for c in chunks]
    assert [len(e["content"]) if e else 0 for e in entries] == [1, 1, 1, 0, 0]
    assert entries[1] is not None and entries[1]["content"][0]["bytes"] == list("ß".encode())
    assert chunks[3].response_metadata["finish_reason"] == "stop"


def test_fake_model_alternatives_never_sum_past_one() -> None:
    payload = openai_logprobs(["x"], [-0.01], alternatives=5)
    [entry] = payload["content"]
    assert sum(math.exp(alt["logprob"]) for alt in entry["top_logprobs"]) <= 1.0
    assert [t.logprob for t in extract_token_logprobs(payload)] == [-0.01]


def test_fake_model_fails_where_told_and_the_handler_sees_the_partial_answer() -> None:
    recorder = RecordingExporter()
    handler = ConfidenceCallbackHandler(exporters=[recorder])
    with pytest.raises(FakeModelError):
        for _ in FakeLogprobChatModel(error_after=2).stream("hi", config={"callbacks": [handler]}):
            pass
    [record] = recorder.records
    assert record.status == "error" and record.report is not None and record.report.token_count == 2
