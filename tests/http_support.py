"""Small HTTP servers the tests run in a thread of their own process, on 127.0.0.1 only."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that does not print a line per request."""

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free 127.0.0.1 port from a thread; yield ``http://127.0.0.1:PORT``.
    The server and its thread are stopped on exit, also on failure."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def otlp_receiver(delay: float = 0.0) -> Iterator[dict[str, Any]]:
    """An OTLP/HTTP (protobuf) sink that answers every export with an empty 200, after ``delay``
    seconds. Yields ``{"endpoint": ..., "/v1/traces": [bodies], "/v1/metrics": [...], "/v1/logs": [...]}``."""
    received: dict[str, Any] = {"/v1/traces": [], "/v1/metrics": [], "/v1/logs": []}

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path in received:
                received[self.path].append(body)
            if delay:
                time.sleep(delay)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(Handler) as endpoint:
        received["endpoint"] = endpoint
        yield received
