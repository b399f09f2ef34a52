"""ChatLiteLLM through the real ``langchain-litellm`` and ``litellm`` packages, in LiteLLM's own
virtualenv (``make litellm``; litellm pins ``importlib-metadata<9`` against the development
environment's 10). ``tests/litellm_app.py`` runs there with our handler writing a record file; its
``openai/`` route talks to the bundled model's server, which speaks the wire format LiteLLM sends
there. Every other address is routed to a closed loopback port. Expected figures come from a raw
request to the same server."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from observability.demo.model_server import MODEL_NAME, LocalModelServer
from tests.conftest import raw_chat_completion
from tests.provider_support import run_in_own_virtualenv

QUESTION = "What is the capital of France?"


@pytest.mark.real_model
def test_chat_litellm_invoke_records_what_the_server_sent_and_stream_says_not_returned(
        local_model: LocalModelServer, tmp_path: Path) -> None:
    (invoked, streamed), (invoke_record, stream_record) = run_in_own_virtualenv(
        "litellm", "litellm_app.py", [local_model.base_url, MODEL_NAME, QUESTION], tmp_path / "records.jsonl",
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True"})  # its model price list from the package, not fetched

    raw = raw_chat_completion(local_model.base_url, {
        "model": MODEL_NAME, "messages": [{"role": "user", "content": QUESTION}], "temperature": 0,
        "max_tokens": 12, "logprobs": True, "top_logprobs": 3})
    sent = raw["choices"][0]["logprobs"]["content"]
    assert invoked == streamed == raw["choices"][0]["message"]["content"] == invoke_record["text"]
    assert invoke_record["logprobs"] == "present" and invoke_record["logprobs_requested"] is True
    tokens = invoke_record["tokens"]
    assert [(t["token"], t["bytes"]) for t in tokens] == [(e["token"], e["bytes"]) for e in sent]
    assert all(math.isclose(t["logprob"], e["logprob"], abs_tol=1e-4) for t, e in zip(tokens, sent, strict=True))
    assert [[a for a, _ in t["top_logprobs"]] for t in tokens] == [
        [a["token"] for a in sorted(e["top_logprobs"], key=lambda a: -a["logprob"])] for e in sent]
    report = invoke_record["report"]
    assert report["token_count"] == len(sent)
    assert math.isclose(report["sequence_logprob"], math.fsum(e["logprob"] for e in sent), abs_tol=1e-3)
    # langchain-litellm drops logprobs while streaming: asked, none came back
    assert stream_record["logprobs"] == "not_returned" and stream_record["logprobs_requested"] is True
    assert stream_record["text"] == streamed
