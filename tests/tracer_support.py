"""Loopback stand-ins for tracer backends that cannot run here (LangSmith, Langfuse): they speak the
wire format the real client packages send and keep what they receive, decoded."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, cast

from tests.http_support import QuietHandler, serving

LANGSMITH_INFO = {
    "version": "0.12.0",
    "instance_flags": {"zstd_compression_enabled": True},
    "batch_ingest_config": {
        "use_multipart_endpoint": True,
        "scale_up_qsize_trigger": 1000,
        "scale_up_nthreads_limit": 16,
        "scale_down_nempty_trigger": 4,
        "size_limit": 100,
        "size_limit_bytes": 20_971_520,
    },
}

QUESTION = "What is the capital of France? One word."



@dataclass
class Received:
    """What a stand-in kept: ``parts`` are ``(name, decoded JSON)`` in arrival order."""

    url: str = ""
    parts: list[tuple[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def runs(self) -> dict[str, dict[str, Any]]:
        """LangSmith runs by id: each run's ``post`` and ``patch`` parts merged, later over earlier
        (``post.<id>``, ``patch.<id>``, and their ``.inputs`` / ``.outputs`` / ``.events`` parts)."""
        runs: dict[str, dict[str, Any]] = {}
        with self.lock:
            parts = list(self.parts)
        for name, value in parts:
            operation, _, rest = name.partition(".")
            if operation not in ("post", "patch"):
                continue
            run_id, _, what = rest.partition(".")
            run = runs.setdefault(run_id, {})
            if what:
                run[what] = value
            else:
                run.update({k: v for k, v in value.items() if v is not None or k not in run})
        return runs

    def feedback(self) -> list[Any]:
        with self.lock:
            return [value for name, value in self.parts if name.startswith("feedback.")]


def _multipart(content_type: str, body: bytes) -> list[tuple[str, Any]]:
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    parts = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = cast(bytes, part.get_payload(decode=True))  # a multipart part decodes to bytes
        try:
            value = json.loads(payload)
        except ValueError:
            value = payload
        parts.append((str(name), value))
    return parts


@contextmanager
def langsmith_endpoint(*, slow: bool = False) -> Iterator[Received]:
    """A LangSmith API on 127.0.0.1: ``GET /info`` and ``POST /runs/multipart`` (plain or zstd).
    With ``slow``, every request waits until ``received.release`` is set (released on exit)."""
    received = Received()

    class Handler(QuietHandler):
        def _answer(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            with received.lock:
                received.requests.append(f"GET {self.path}")
            if slow:
                received.release.wait(60)
            self._answer(LANGSMITH_INFO if self.path.split("?")[0].endswith("/info") else {})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with received.lock:
                received.requests.append(f"POST {self.path}")
            if slow:
                received.release.wait(60)
            if self.headers.get("Content-Encoding") == "zstd":
                import zstandard

                body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
            if self.path.split("?")[0].endswith("/runs/multipart"):
                parts = _multipart(self.headers["Content-Type"], body)
                with received.lock:
                    received.parts.extend(parts)
            self._answer({})

    with serving(Handler) as url:
        received.url = url
        try:
            yield received
        finally:
            received.release.set()


def _otlp_spans(body: bytes) -> list[dict[str, Any]]:
    """An OTLP/HTTP protobuf trace export, decoded: one dict per span (name, ids in hex, scope, attributes)."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = {}
                for attribute in span.attributes:
                    value = MessageToDict(attribute.value)
                    attributes[attribute.key] = next(iter(value.values())) if value else None
                spans.append({"name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                              "scope": scope_spans.scope.name, "attributes": attributes,
                              "events": [event.name for event in span.events]})
    return spans


@contextmanager
def langfuse_endpoint() -> Iterator[Received]:
    """A Langfuse API on 127.0.0.1: OTLP/HTTP protobuf at ``/api/public/otel/v1/traces`` (kept as
    ``("span", decoded span)`` parts) and score ingestion at ``/api/public/scores`` (``("score", item)``)."""
    received = Received()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            path = self.path.split("?")[0]
            with received.lock:
                received.requests.append(f"POST {path}")
            if self.headers.get("Content-Encoding") == "gzip":
                import gzip

                body = gzip.decompress(body)
            if path.endswith("/otel/v1/traces"):
                parts: list[tuple[str, Any]] = [("span", span) for span in _otlp_spans(body)]
                answer, content_type = b"", "application/x-protobuf"
            else:
                parts = [("score", item) for item in json.loads(body)] if path.endswith("/scores") else []
                answer, content_type = json.dumps({"message": "Accepted"}).encode(), "application/json"
            with received.lock:
                received.parts.extend(parts)
            self.send_response(202 if path.endswith("/scores") else 200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(Handler) as url:
        received.url = url
        yield received


def call(llm: Any, how: str, config: dict[str, Any]) -> None:
    """One model call the way ``how`` says: invoke, stream, or ainvoke then astream."""
    if how == "invoke":
        llm.invoke(QUESTION, config=config)
    elif how == "stream":
        for _ in llm.stream(QUESTION, config=config):
            pass
    else:
        async def consume() -> None:
            await llm.ainvoke(QUESTION, config=config)
            async for _ in llm.astream(QUESTION, config=config):
                pass

        asyncio.run(consume())
