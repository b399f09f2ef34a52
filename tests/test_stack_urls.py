"""The URLs the no-Docker stack prints, and the links on its console dashboard, answer on the real
Prometheus (issues 15 and 30: ``/alerts`` is 404 on Debian's Prometheus 2.42; the classic UI serves
``/classic/alerts``, as Prometheus 2.x up to 2.55, the compose stack's, does)."""

from __future__ import annotations

import re
import shutil
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
        with urllib.request.urlopen(stack.console_url, timeout=30) as response:
            links = re.findall(r'<a href="([^"#]+)"', response.read().decode())
        local = [link for link in links if link.startswith("/")]
        assert {"/classic/alerts", "/graph"} <= set(local), links
        assert {link: status(f"{stack.prometheus_url}{link}") for link in local} == dict.fromkeys(local, 200)
    finally:
        stack.stop()
        shutil.rmtree(stack.work_dir, ignore_errors=True)  # stop() keeps the logs for the user
