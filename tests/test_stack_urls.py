"""The URLs the no-Docker stack prints answer on the real Prometheus (issue 15: ``/alerts`` is 404
on Debian's Prometheus 2.42; the classic UI serves ``/classic/alerts``)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.conftest import start_or_fail
from tools.stack import Stack, StackOptions


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.real_backend
def test_the_printed_alerts_and_console_urls_answer() -> None:
    stack = Stack(StackOptions(prometheus_port=0, metrics_port=0))
    try:
        start_or_fail(stack.prometheus, "Prometheus")  # the demo is not needed for the URLs
        assert status(stack.alerts_url) == 200
        assert status(stack.console_url) == 200
        assert status(f"{stack.prometheus_url}/alerts") == 404  # why the printed URL is the classic one
    finally:
        stack.stop()
