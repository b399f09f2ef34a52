"""ChatLiteLLM through the real ``langchain-litellm`` and ``litellm`` packages, in LiteLLM's own
virtualenv (``make litellm``; litellm pins ``importlib-metadata<9`` against the development
environment's 10). ``tests/litellm_app.py`` runs there with our handler writing a record file; its
``openai/`` route talks to the bundled model's server, which speaks the wire format LiteLLM sends
there. Every other address is routed to a closed loopback port (proxy variables), so the test
fails rather than reaching out. Expected figures come from a raw request to the same server."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from observability.demo.model_server import MODEL_NAME, LocalModelServer
from tests.conftest import raw_chat_completion

REPO = Path(__file__).resolve().parent.parent
QUESTION = "What is the capital of France?"


def litellm_python() -> str:
    configured = os.environ.get("LITELLM_PYTHON") or str(REPO / ".venv-litellm" / "bin" / "python")
    if not Path(configured).is_file():
        pytest.fail(f"LiteLLM's virtualenv is missing ({configured}): run `make litellm` "
                    "(or set LITELLM_PYTHON to its python)", pytrace=False)
    return configured


@pytest.mark.real_model
def test_chat_litellm_invoke_records_what_the_server_sent_and_stream_says_not_returned(
        local_model: LocalModelServer, tmp_path: Path) -> None:
    records_file = tmp_path / "records.jsonl"
    closed = "http://127.0.0.1:9"  # nothing listens there: any non-loopback request fails at once
    env = {**os.environ, "PYTHONPATH": str(REPO), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "HTTP_PROXY": closed, "HTTPS_PROXY": closed, "ALL_PROXY": closed, "NO_PROXY": "127.0.0.1,localhost"}
    run = subprocess.run([litellm_python(), str(REPO / "tests" / "litellm_app.py"), local_model.base_url,
                          str(records_file), MODEL_NAME, QUESTION], env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    invoked, streamed = run.stdout.splitlines()
    invoke_record, stream_record = (json.loads(line) for line in records_file.read_text().splitlines())

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
