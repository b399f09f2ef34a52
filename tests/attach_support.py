"""Helpers for the attach tests: a recording exporter, a loopback OTLP/HTTP receiver, a
Prometheus text parser, and a loopback proxy that refuses logprobs like some providers do."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from observability import ResponseRecord
from tests.http_support import QuietHandler, serving


class Recorder:
    """An exporter that keeps every record it is given."""

    def __init__(self) -> None:
        self.records: list[ResponseRecord] = []
        self._lock = threading.Lock()

    def export(self, records: Sequence[ResponseRecord]) -> None:
        with self._lock:
            self.records.extend(records)

    @property
    def run_ids(self) -> list[Any]:
        return [r.run_id for r in self.records]


def llm_run_ids(runs: Sequence[Any]) -> set[Any]:
    """Ids of the model runs in LangChain's own run collector (``collect_runs()``), nested ones included."""
    found: set[Any] = set()
    stack = list(runs)
    while stack:
        run = stack.pop()
        if run.run_type == "llm":
            found.add(run.id)
        stack.extend(run.child_runs or [])
    return found


def otlp_spans(bodies: Sequence[bytes]) -> list[dict[str, Any]]:
    """Every span in the received trace exports: name, trace id and attributes as plain values."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans = []
    for body in bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append({"name": span.name, "trace_id": span.trace_id.hex(),
                                  "attributes": {a.key: _any_value(a.value) for a in span.attributes}})
    return spans


def otlp_metric_names(bodies: Sequence[bytes]) -> set[str]:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    names: set[str] = set()
    for body in bodies:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        for resource_metrics in request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                names.update(m.name for m in scope_metrics.metrics)
    return names


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A Prometheus text scrape as ``{(sample name, sorted labels): value}``."""
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and set(labels.items()) <= set(sample_labels))


@contextmanager
def refusing_proxy(upstream: str, message: str = "logprobs is not supported with this model",
                   ) -> Iterator[dict[str, Any]]:
    """A loopback OpenAI-compatible proxy that answers HTTP 400 to any request asking for
    logprobs (as providers without logprobs do) and forwards every other request upstream.

    Yields ``{"base_url": ..., "bodies": [each request body, parsed]}``.
    """
    state: dict[str, Any] = {"bodies": []}

    class Handler(QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = json.loads(raw)
            state["bodies"].append(body)
            if "logprobs" in body or "top_logprobs" in body:
                error = json.dumps({"error": {"message": message,
                                              "type": "invalid_request_error", "param": "logprobs",
                                              "code": "unsupported_parameter"}}).encode()
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(error)))
                self.end_headers()
                self.wfile.write(error)
                return
            request = urllib.request.Request(upstream + self.path.removeprefix("/v1"), data=raw,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=300) as response:
                payload = response.read()
                content_type = response.headers.get("Content-Type", "application/json")
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    with serving(Handler) as root:
        state["base_url"] = f"{root}/v1"
        yield state
