"""A loopback OpenAI-compatible provider for the fast tier: canned answers, optional refusals.

Real HTTP on 127.0.0.1 for the real ``ChatOpenAI`` client, no model: ``POST /v1/chat/completions``
answers ``ANSWER`` (streamed as server-sent events when asked). With ``refuse_logprobs`` a request
carrying ``logprobs``/``top_logprobs`` gets HTTP 400 naming logprobs, as providers without them
answer; a request for the model ``app-error`` gets HTTP 400 about something else (the app's own
mistake). Both error bodies carry ``marker``, so tests can search every output for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.http_support import QuietHandler, serving

ANSWER = "Paris."
APP_ERROR_MODEL = "app-error"


@contextmanager
def canned_provider(marker: str = "", refuse_logprobs: bool = False) -> Iterator[dict[str, Any]]:
    """Yields ``{"base_url": "http://127.0.0.1:PORT/v1", "bodies": [each request body, parsed]}``."""
    state: dict[str, Any] = {"bodies": []}

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            state["bodies"].append(body)
            if body.get("model") == APP_ERROR_MODEL:
                self._error(f"Invalid value for 'messages' ({marker})", "messages")
            elif refuse_logprobs and ("logprobs" in body or "top_logprobs" in body):
                self._error(f"logprobs is not supported with this model ({marker})", "logprobs")
            elif body.get("stream"):
                self._stream(body["model"])
            else:
                self._send(200, "application/json", json.dumps({
                    "id": "chatcmpl-canned", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                                 "finish_reason": "stop", "logprobs": None}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}).encode())

        def _error(self, message: str, param: str) -> None:
            self._send(400, "application/json", json.dumps({"error": {
                "message": message, "type": "invalid_request_error", "param": param, "code": None}}).encode())

        def _stream(self, model: str) -> None:
            def chunk(delta: dict[str, str], finish: str | None) -> str:
                return "data: " + json.dumps({"id": "chatcmpl-canned", "object": "chat.completion.chunk", "created": 0,
                                              "model": model, "choices": [{"index": 0, "delta": delta,
                                                                           "finish_reason": finish}]}) + "\n\n"
            events = chunk({"role": "assistant", "content": ANSWER}, None) + chunk({}, "stop") + "data: [DONE]\n\n"
            self._send(200, "text/event-stream", events.encode())

        def _send(self, status: int, kind: str, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    with serving(Handler) as root:
        state["base_url"] = f"{root}/v1"
        yield state
