"""Loopback providers for the real integration packages, on 127.0.0.1.

``canned_provider``, for the fast tier: real HTTP for the real ``ChatOpenAI`` client, no model:
``POST /v1/chat/completions`` answers ``ANSWER`` (streamed as server-sent events when asked). With
``refuse_logprobs`` a request carrying ``logprobs``/``top_logprobs`` gets HTTP 400 naming logprobs,
as providers without them answer; a request for the model ``app-error`` gets HTTP 400 about
something else (the app's own mistake). Both error bodies carry ``marker``, so tests can search
every output for it.

``responses_proxy`` and ``ollama_proxy`` speak the OpenAI Responses API and Ollama's ``/api/chat``,
answered by the bundled model: its Chat Completions logprobs, translated into that provider's
shape, and kept in ``state["sent"]`` for the tests to compare with.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import math
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import raw_chat_stream
from tests.http_support import QuietHandler, serving

ANSWER = "Paris."
APP_ERROR_MODEL = "app-error"


class JsonHandler(QuietHandler):
    """A request handler reading JSON bodies and sending whole answers (HTTP/1.1, with a length)."""

    protocol_version = "HTTP/1.1"

    def read_json(self) -> Any:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

    def send(self, status: int, kind: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def every_way(model: Any, question: str, config: Any) -> list[str]:
    """The answer's text by ``invoke``, ``stream``, ``ainvoke`` and ``astream``, in that order (the
    two async calls in one event loop: langchain-openai's async client belongs to one)."""
    async def asynchronous() -> list[str]:
        answer = await model.ainvoke(question, config=config)
        return [answer.text, "".join([chunk.text async for chunk in model.astream(question, config=config)])]

    invoked = model.invoke(question, config=config).text
    streamed = "".join(chunk.text for chunk in model.stream(question, config=config))
    return [invoked, streamed, *asyncio.run(asynchronous())]


def assert_record_is(record: Any, sent: list[dict[str, Any]], top: int, abs_tol: float = 0.0) -> None:
    """The record holds exactly the entries a provider sent (logprobs within ``abs_tol``), best
    alternative first, and its figures are theirs, computed here."""
    assert sent, "the provider sent no logprobs: nothing to compare"
    assert record.logprobs == "present" and record.start.logprobs_requested
    assert [t.token for t in record.tokens] == [e["token"] for e in sent]
    assert all(math.isclose(t.logprob, e["logprob"], rel_tol=1e-12, abs_tol=abs_tol)
               for t, e in zip(record.tokens, sent, strict=True))
    assert all(len(t.top_logprobs) == top for t in record.tokens)
    for token, entry in zip(record.tokens, sent, strict=True):  # every alternative, best first
        expected = sorted(entry["top_logprobs"], key=lambda a: -a["logprob"])
        assert [text for text, _ in token.top_logprobs] == [a["token"] for a in expected]
        assert all(math.isclose(lp, a["logprob"], rel_tol=1e-12, abs_tol=abs_tol)
                   for (_, lp), a in zip(token.top_logprobs, expected, strict=True))
    logprobs = [e["logprob"] for e in sent]
    report = record.report
    assert report is not None and report.token_count == len(sent)
    assert math.isclose(report.sequence_logprob, math.fsum(logprobs), rel_tol=1e-9, abs_tol=abs_tol * len(sent))
    assert math.isclose(report.min_token_probability, math.exp(min(logprobs)), rel_tol=1e-9, abs_tol=abs_tol)
    assert math.isclose(report.sequence_probability, math.exp(math.fsum(logprobs) / len(logprobs)),
                        rel_tol=1e-9, abs_tol=abs_tol)


@contextmanager
def canned_provider(marker: str = "", refuse_logprobs: bool = False) -> Iterator[dict[str, Any]]:
    """Yields ``{"base_url": "http://127.0.0.1:PORT/v1", "bodies": [each request body, parsed]}``."""
    state: dict[str, Any] = {"bodies": []}

    class Handler(JsonHandler):
        def do_POST(self) -> None:
            body = self.read_json()
            state["bodies"].append(body)
            if body.get("model") == APP_ERROR_MODEL:
                self._error(f"Invalid value for 'messages' ({marker})", "messages")
            elif refuse_logprobs and ("logprobs" in body or "top_logprobs" in body):
                self._error(f"logprobs is not supported with this model ({marker})", "logprobs")
            elif body.get("stream"):
                self._stream(body["model"])
            else:
                self.send(200, "application/json", json.dumps({
                    "id": "chatcmpl-canned", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                                 "finish_reason": "stop", "logprobs": None}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}).encode())

        def _error(self, message: str, param: str) -> None:
            self.send(400, "application/json", json.dumps({"error": {
                "message": message, "type": "invalid_request_error", "param": param, "code": None}}).encode())

        def _stream(self, model: str) -> None:
            def chunk(delta: dict[str, str], finish: str | None) -> str:
                return "data: " + json.dumps({"id": "chatcmpl-canned", "object": "chat.completion.chunk", "created": 0,
                                              "model": model, "choices": [{"index": 0, "delta": delta,
                                                                           "finish_reason": finish}]}) + "\n\n"
            events = chunk({"role": "assistant", "content": ANSWER}, None) + chunk({}, "stop") + "data: [DONE]\n\n"
            self.send(200, "text/event-stream", events.encode())

    with serving(Handler) as root:
        state["base_url"] = f"{root}/v1"
        yield state


# ---- translating proxies: the bundled model's real logprobs in another provider's wire format ----
def _chat_request(body: dict[str, Any], messages: list[dict[str, Any]], *, max_tokens: Any,
                  top_logprobs: int | None) -> dict[str, Any]:
    request: dict[str, Any] = {"model": body.get("model"), "messages": messages,
                               "temperature": body.get("temperature", 0)}
    if max_tokens is not None:
        request["max_tokens"] = max_tokens
    if top_logprobs is not None:
        request.update(logprobs=True, top_logprobs=top_logprobs)
    return request


def _upstream_events(upstream: str, request: dict[str, Any]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(content delta, logprobs entries) of each chunk of the model's streamed Chat Completion."""
    for event in raw_chat_stream(upstream, request):
        for choice in event.get("choices") or ():
            content = (choice.get("delta") or {}).get("content") or ""
            entries = (choice.get("logprobs") or {}).get("content") or []
            if content or entries:
                yield content, entries


def _without_bytes(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries as OpenAI streams them in Responses API deltas, and as Ollama sends them: no bytes."""
    return [{"token": e["token"], "logprob": e["logprob"],
             "top_logprobs": [{"token": t["token"], "logprob": t["logprob"]} for t in e.get("top_logprobs") or ()]}
            for e in entries]


def _responses_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


@contextmanager
def responses_proxy(upstream: str, canned: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    """The OpenAI Responses API (``POST /v1/responses``, JSON and server-sent events) on 127.0.0.1,
    answered by the model behind ``upstream`` (its Chat Completions endpoint, whose logprobs are
    translated into ``output_text`` logprobs and ``response.output_text.delta`` events), or, with
    ``canned``, by those logprobs entries (each delta one entry, as OpenAI recorded them).

    Logprobs are asked upstream only when the request has ``include=["message.output_text.logprobs"]``,
    with its ``top_logprobs`` (0 when absent). Yields ``{"base_url", "bodies": [each request],
    "sent": [per response, the logprobs entries it carried: with bytes when not streamed, as the
    deltas had them when streamed]}``."""
    state: dict[str, Any] = {"bodies": [], "sent": []}

    class Handler(JsonHandler):
        def do_POST(self) -> None:
            body = self.read_json()
            state["bodies"].append(body)
            inputs = body["input"] if isinstance(body["input"], list) else [{"role": "user", "content": body["input"]}]
            messages = [{"role": item["role"], "content": _responses_text(item["content"])} for item in inputs]
            asked = "message.output_text.logprobs" in (body.get("include") or ())
            request = _chat_request(body, messages, max_tokens=body.get("max_output_tokens"),
                                    top_logprobs=(body.get("top_logprobs") or 0) if asked else None)
            if canned is not None:  # a delta's text: the characters its token's bytes complete
                decoder = codecs.getincrementaldecoder("utf-8")()
                chunks = [(decoder.decode(bytes(entry["bytes"])), [entry]) for entry in canned]
            else:
                chunks = list(_upstream_events(upstream, request))
            text = "".join(content for content, _ in chunks)
            entries = [entry for _, listed in chunks for entry in listed] if asked else []
            if body.get("stream"):
                state["sent"].append(_without_bytes(entries))
                self._stream(body, chunks, text, entries, asked)
            else:
                state["sent"].append(entries)
                self.send(200, "application/json", json.dumps(_response(body, text, entries)).encode())

        def _stream(self, body: dict[str, Any], chunks: list[tuple[str, list[dict[str, Any]]]], text: str,
                    entries: list[dict[str, Any]], asked: bool) -> None:
            events: list[dict[str, Any]] = []
            start = _response(body, "", [], status="in_progress")
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            events += [{"type": "response.created", "response": start},
                       {"type": "response.in_progress", "response": start},
                       {"type": "response.output_item.added", "output_index": 0, "item": {
                           "id": "msg_proxy", "type": "message", "status": "in_progress", "role": "assistant",
                           "content": []}},
                       {"type": "response.content_part.added", "item_id": "msg_proxy", "output_index": 0,
                        "content_index": 0, "part": part}]
            for content, listed in chunks:
                events.append({"type": "response.output_text.delta", "item_id": "msg_proxy", "output_index": 0,
                               "content_index": 0, "delta": content,
                               "logprobs": _without_bytes(listed) if asked else []})
            done = _response(body, text, entries)
            events += [{"type": "response.output_text.done", "item_id": "msg_proxy", "output_index": 0,
                        "content_index": 0, "text": text, "logprobs": _without_bytes(entries)},
                       {"type": "response.content_part.done", "item_id": "msg_proxy", "output_index": 0,
                        "content_index": 0, "part": done["output"][0]["content"][0]},
                       {"type": "response.output_item.done", "output_index": 0, "item": done["output"][0]},
                       {"type": "response.completed", "response": done}]
            stream = "".join(f"event: {event['type']}\ndata: {json.dumps({**event, 'sequence_number': n})}\n\n"
                             for n, event in enumerate(events))
            self.send(200, "text/event-stream", stream.encode())

    with serving(Handler) as root:
        state["base_url"] = f"{root}/v1"
        yield state


def _response(body: dict[str, Any], text: str, entries: list[dict[str, Any]],
              status: str = "completed") -> dict[str, Any]:
    """A Responses API response object holding one message with one ``output_text`` part."""
    output = [] if status != "completed" else [{
        "id": "msg_proxy", "type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": entries}]}]
    return {"id": "resp_proxy", "object": "response", "created_at": 0, "status": status, "model": body.get("model"),
            "output": output, "parallel_tool_calls": False, "tool_choice": "auto", "tools": [], "error": None,
            "incomplete_details": None, "instructions": None, "metadata": {}, "temperature": body.get("temperature"),
            "top_p": None, "top_logprobs": body.get("top_logprobs"),
            "usage": {"input_tokens": 3, "output_tokens": len(entries), "total_tokens": 3 + len(entries),
                      "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}}


@contextmanager
def ollama_proxy(upstream: str) -> Iterator[dict[str, Any]]:
    """Ollama's ``POST /api/chat`` on 127.0.0.1 (NDJSON, one line per chunk, a top-level ``logprobs``
    list on each, without bytes, as Ollama sends it), answered by the model behind ``upstream``.
    Yields ``{"host": "http://127.0.0.1:PORT", "bodies": [...], "sent": [per response, its entries]}``."""
    state: dict[str, Any] = {"bodies": [], "sent": []}

    class Handler(JsonHandler):
        def do_POST(self) -> None:
            body = self.read_json()
            state["bodies"].append(body)
            options = body.get("options") or {}
            asked = bool(body.get("logprobs"))
            request = _chat_request({**body, "temperature": options.get("temperature", 0)}, body["messages"],
                                    max_tokens=options.get("num_predict"),
                                    top_logprobs=(body.get("top_logprobs") or 0) if asked else None)
            chunks = list(_upstream_events(upstream, request))
            lines = []
            for content, listed in chunks:
                line: dict[str, Any] = {"model": body["model"], "created_at": "2026-12-07T00:00:00Z",
                                        "message": {"role": "assistant", "content": content}, "done": False}
                if asked:
                    line["logprobs"] = _without_bytes(listed)
                lines.append(line)
            lines.append({"model": body["model"], "created_at": "2026-12-07T00:00:00Z",
                          "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
                          "prompt_eval_count": 3, "eval_count": len(chunks)})
            state["sent"].append(_without_bytes([e for _, listed in chunks for e in listed]) if asked else [])
            if body.get("stream", True):
                payload = "".join(json.dumps(line) + "\n" for line in lines).encode()
                kind = "application/x-ndjson"
            else:
                whole = {**lines[-1], "message": {"role": "assistant", "content": "".join(c for c, _ in chunks)}}
                if asked:
                    whole["logprobs"] = state["sent"][-1]
                payload, kind = json.dumps(whole).encode(), "application/json"
            self.send(200, kind, payload)

    with serving(Handler) as root:
        state["host"] = root
        yield state


@contextmanager
def vertex_proxy(upstream: str) -> Iterator[dict[str, Any]]:
    """Vertex AI's REST ``generateContent`` / ``streamGenerateContent`` (a JSON array of responses) on
    127.0.0.1, answered by the model behind ``upstream``: its logprobs as ``logprobsResult``
    (``chosenCandidates`` and ``topCandidates`` of ``{token, logProbability}``) when the request's
    ``generationConfig`` has ``responseLogprobs``. Yields ``{"endpoint", "bodies", "sent": [per
    response, its entries]}``."""
    state: dict[str, Any] = {"bodies": [], "sent": []}

    class Handler(JsonHandler):
        def do_POST(self) -> None:
            body = self.read_json()
            state["bodies"].append(body)
            config = body.get("generationConfig") or {}
            asked = bool(config.get("responseLogprobs"))
            messages = [{"role": "user" if content.get("role") == "user" else "assistant",
                         "content": "".join(part.get("text", "") for part in content.get("parts") or ())}
                        for content in body.get("contents") or ()]
            request = _chat_request({"model": "vertex", "temperature": config.get("temperature", 0)}, messages,
                                    max_tokens=config.get("maxOutputTokens"),
                                    top_logprobs=(config.get("logprobs") or 0) if asked else None)
            chunks = list(_upstream_events(upstream, request))
            entries = [entry for _, listed in chunks for entry in listed] if asked else []
            state["sent"].append(entries)
            if ":streamGenerateContent" in self.path:
                # (no avgLogprobs per chunk: langchain-google-vertexai 3.2.5 cannot merge two of them)
                answers = [_vertex_response(content, listed if asked else [], average=False)
                           for content, listed in chunks]
                self.send(200, "application/json", json.dumps(answers).encode())
            else:
                text = "".join(content for content, _ in chunks)
                self.send(200, "application/json", json.dumps(_vertex_response(text, entries)).encode())

    with serving(Handler) as root:
        state["endpoint"] = root
        yield state


def _vertex_response(text: str, entries: list[dict[str, Any]], average: bool = True) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}
    if entries:
        candidate["logprobsResult"] = {
            "chosenCandidates": [{"token": e["token"], "logProbability": e["logprob"]} for e in entries],
            "topCandidates": [{"candidates": [{"token": t["token"], "logProbability": t["logprob"]}
                                              for t in e["top_logprobs"]]} for e in entries]}
        if average:
            candidate["avgLogprobs"] = math.fsum(e["logprob"] for e in entries) / len(entries)
    return {"candidates": [candidate], "modelVersion": "vertex-proxy",
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": len(entries),
                              "totalTokenCount": 3 + len(entries)}}


REPO = Path(__file__).resolve().parent.parent


def run_in_own_virtualenv(name: str, app: str, args: list[str], record_file: Path,
                          env: dict[str, str] | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """Run ``tests/{app}`` in the integration's own virtualenv (``make {name}``, or
    ``${NAME}_PYTHON``), with every address but loopback routed to a closed loopback port (so a
    stray request fails instead of leaving the machine); return its printed lines and the records
    it wrote to ``record_file``. A missing virtualenv or a failed run fails the test, saying why."""
    python = os.environ.get(f"{name.upper()}_PYTHON") or str(REPO / f".venv-{name}" / "bin" / "python")
    if not Path(python).is_file():
        pytest.fail(f"{name}'s virtualenv is missing ({python}): run `make {name}` "
                    f"(or set {name.upper()}_PYTHON to its python)", pytrace=False)
    closed = "http://127.0.0.1:9"  # nothing listens there
    run = subprocess.run([python, str(REPO / "tests" / app), *args, str(record_file)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO), "HTTP_PROXY": closed, "HTTPS_PROXY": closed,
                              "ALL_PROXY": closed, "NO_PROXY": "127.0.0.1,localhost", **(env or {})},
                         timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.splitlines(), [json.loads(line) for line in record_file.read_text().splitlines()]
