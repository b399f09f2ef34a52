"""ChatVertexAI through the real ``langchain-google-vertexai`` and ``google-cloud-aiplatform``
packages, in Vertex's own virtualenv (``make vertex``; google-cloud-aiplatform pins ``protobuf<7``
against the development environment's 7). Its REST transport talks to a loopback Vertex endpoint
(tests/provider_support.vertex_proxy) answered by the bundled model; every other address is routed
to a closed loopback port. Expected figures come from what that endpoint sent (Vertex carries
logprobs as float32: compared to 1e-6)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from observability.demo.model_server import LocalModelServer
from tests.provider_support import run_in_own_virtualenv, vertex_proxy

QUESTION = "What is the capital of France?"


@pytest.mark.real_model
def test_chat_vertexai_invoke_records_what_the_endpoint_sent_and_stream_says_not_returned(
        local_model: LocalModelServer, tmp_path: Path) -> None:
    with vertex_proxy(local_model.base_url) as endpoint:
        (invoked, streamed), (invoke_record, stream_record) = run_in_own_virtualenv(
            "vertex", "vertex_app.py", [endpoint["endpoint"], QUESTION], tmp_path / "records.jsonl",
            env={"GOOGLE_CLOUD_PROJECT": "loopback"})
        bodies, sent = endpoint["bodies"], endpoint["sent"]

    assert [b["generationConfig"].get("responseLogprobs") for b in bodies] == [True, True]
    assert invoked == streamed == invoke_record["text"] == "".join(e["token"] for e in sent[0])
    assert invoke_record["logprobs"] == "present" and invoke_record["logprobs_requested"] is True
    tokens = invoke_record["tokens"]
    assert [t["token"] for t in tokens] == [e["token"] for e in sent[0]]
    assert all(math.isclose(t["logprob"], e["logprob"], rel_tol=1e-6, abs_tol=1e-7)
               for t, e in zip(tokens, sent[0], strict=True))
    assert [[a for a, _ in t["top_logprobs"]] for t in tokens] == [
        [a["token"] for a in sorted(e["top_logprobs"], key=lambda a: -a["logprob"])] for e in sent[0]]
    assert math.isclose(invoke_record["report"]["sequence_logprob"], math.fsum(e["logprob"] for e in sent[0]),
                        rel_tol=1e-5)
    # langchain-google-vertexai drops logprobs while streaming, though the endpoint sent them
    assert sent[1] and stream_record["logprobs"] == "not_returned" and stream_record["logprobs_requested"] is True
