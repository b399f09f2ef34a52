"""ChatVertexAI through the real ``langchain-google-vertexai`` and ``google-cloud-aiplatform``
packages, in Vertex's own virtualenv (``make vertex``; google-cloud-aiplatform pins ``protobuf<7``
against the development environment's 7). Its REST transport talks to a loopback Vertex endpoint
(tests/provider_support.vertex_proxy) answered by the bundled model; every other address is routed
to a closed loopback port, so the test fails rather than reaching out. Expected figures come from
what that endpoint sent (Vertex carries logprobs as float32: compared to 1e-6)."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from observability.demo.model_server import LocalModelServer
from tests.provider_support import vertex_proxy

REPO = Path(__file__).resolve().parent.parent
QUESTION = "What is the capital of France?"


def vertex_python() -> str:
    configured = os.environ.get("VERTEX_PYTHON") or str(REPO / ".venv-vertex" / "bin" / "python")
    if not Path(configured).is_file():
        pytest.fail(f"Vertex's virtualenv is missing ({configured}): run `make vertex` "
                    "(or set VERTEX_PYTHON to its python)", pytrace=False)
    return configured


@pytest.mark.real_model
def test_chat_vertexai_invoke_records_what_the_endpoint_sent_and_stream_says_not_returned(
        local_model: LocalModelServer, tmp_path: Path) -> None:
    records_file = tmp_path / "records.jsonl"
    closed = "http://127.0.0.1:9"  # nothing listens there: any non-loopback request fails at once
    env = {**os.environ, "PYTHONPATH": str(REPO), "HTTP_PROXY": closed, "HTTPS_PROXY": closed, "ALL_PROXY": closed,
           "NO_PROXY": "127.0.0.1,localhost", "GOOGLE_CLOUD_PROJECT": "loopback"}
    with vertex_proxy(local_model.base_url) as endpoint:
        run = subprocess.run([vertex_python(), str(REPO / "tests" / "vertex_app.py"), endpoint["endpoint"],
                              str(records_file), QUESTION], env=env, capture_output=True, text=True, timeout=600,
                             check=False)
        bodies, sent = endpoint["bodies"], endpoint["sent"]
    assert run.returncode == 0, run.stderr[-3000:]
    invoked, streamed = run.stdout.splitlines()
    invoke_record, stream_record = (json.loads(line) for line in records_file.read_text().splitlines())

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
