"""``port_in_use``: a port is busy when something listens on it, not when a finished run's
connections wait in TIME-WAIT (issue 15: the demo said "port 9464 already in use" right after a
previous run). Real sockets on 127.0.0.1 and a real prometheus_client server."""

from __future__ import annotations

import socket

from prometheus_client import CollectorRegistry, start_http_server

from observability.demo.process import free_port, port_in_use


def serve(port: int) -> tuple[object, object]:
    return start_http_server(port, addr="127.0.0.1", registry=CollectorRegistry())  # as the demo serves /metrics


def stop(server: object, thread: object) -> None:
    server.shutdown()  # type: ignore[attr-defined]
    server.server_close()  # type: ignore[attr-defined]
    thread.join(timeout=5)  # type: ignore[attr-defined]


def previous_run() -> int:
    """A /metrics server that answered one scrape and stopped: its side of that connection, closed
    first (HTTP/1.0), stays in TIME-WAIT for a minute, as after a demo run."""
    port = free_port()
    server, thread = serve(port)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        while client.recv(65536):  # until the server's FIN: it closed first, so its side waits in TIME-WAIT
            pass
    stop(server, thread)
    return port


def test_a_port_in_time_wait_is_free_for_a_server() -> None:
    port = previous_run()
    with socket.socket() as plain:  # the situation is real: a bind without SO_REUSEADDR is refused
        try:
            plain.bind(("127.0.0.1", port))
            bound_without_reuse = True
        except OSError:
            bound_without_reuse = False
    assert not bound_without_reuse, "no TIME-WAIT connection was left; the test shows nothing"
    assert not port_in_use(port)  # before the fix: True, and the demo refused to start
    server, thread = serve(port)  # and the server indeed starts there
    try:
        assert port_in_use(port)  # now something listens there
    finally:
        stop(server, thread)


def test_a_listening_port_is_in_use_and_a_free_one_is_not() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert port_in_use(taken.getsockname()[1])
    assert not port_in_use(free_port())


def test_an_address_that_is_not_ours_counts_as_unusable() -> None:
    assert port_in_use(free_port(), host="192.0.2.1")  # TEST-NET-1: not an address of this host
