"""The HTML report, rendered by a real headless Chromium (Debian's ``chromium``).

Records come from the real model through ``record_to=`` plus the recorded Korean OpenAI answer
whose tokens are UTF-8 byte pieces. The page is read back from Chromium's DOM after its script ran.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from observability import ConfidenceCallbackHandler, ResponseRecord
from observability._html_report import render_html_report
from observability.exporters._jsonl import JsonlRecorder
from tests.demo_support import KOREAN_TEXT, expected_pieces, korean_tokens, record_for

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
ROOT = Path(__file__).parent.parent


def run_chromium(tmp_path: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium once with a fresh profile; its console goes to stderr."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium (make system-deps)")
    profile = tmp_path / f"chromium-{uuid.uuid4().hex}"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--enable-logging=stderr", "--v=0", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # its own process group: we stop all it started
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"chromium did not finish within {timeout:.0f}s")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(profile, ignore_errors=True)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


@dataclass
class Piece:
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    low: bool = False


@dataclass
class Section:
    status: str
    token_count: int
    pieces: list[Piece] = field(default_factory=list)


class PageReader(HTMLParser):
    """What the rendered DOM shows: the body's attributes, the responses and their heatmap pieces."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.sections: list[Section] = []
        self.page_errors = 0
        self._piece: Piece | None = None
        self._in_errors = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "body":
            self.body = a
        elif tag == "section" and "response" in classes:
            self.sections.append(Section(str(a["data-status"]), int(a["data-token-count"] or 0)))
        elif tag == "span" and "tok" in classes:
            self._piece = Piece(tokens=[int(i) for i in (a["data-tokens"] or "").split(",")],
                                alternatives=json.loads(a["data-alt"] or "[]"), low="low" in classes)
            self.sections[-1].pieces.append(self._piece)
        elif tag == "ul" and a.get("id") == "page-errors":
            self._in_errors = True
        elif tag == "li" and self._in_errors:
            self.page_errors += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "span":
            self._piece = None
        elif tag == "ul":
            self._in_errors = False

    def handle_data(self, data: str) -> None:
        if self._piece is not None:
            self._piece.text += data


def read_page(dom: str) -> PageReader:
    reader = PageReader()
    reader.feed(dom)
    return reader


@pytest.mark.real_model
def test_report_of_real_responses_renders_in_chromium(tmp_path: Path, chat_model: Any) -> None:
    records_file = tmp_path / "records.jsonl"
    seen: list[ResponseRecord] = []
    handler = ConfidenceCallbackHandler(exporters=(), on_report=seen.append, record_to=records_file)
    model = chat_model(max_tokens=16).bind(logprobs=True, top_logprobs=4)
    model.invoke("What is the capital of Italy?", config={"callbacks": [handler]})
    for _ in model.stream("Name two planets.", config={"callbacks": [handler]}):
        pass
    korean = record_for(korean_tokens())
    JsonlRecorder(records_file).export([korean])
    expected = [*seen, korean]

    report = tmp_path / "report.html"
    cli = subprocess.run([sys.executable, "-m", "observability", "report", str(records_file), "-o", str(report)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert cli.returncode == 0, cli.stderr
    total_tokens = sum(len(r.tokens) for r in expected)
    assert cli.stdout.strip() == f"wrote {report}: {len(expected)} responses, {total_tokens} tokens"
    page = report.read_text(encoding="utf-8")
    for external in ("http://", "https://", "<link", " src=", "@import", "url("):
        assert external not in page, f"the report must be self-contained; found {external!r}"

    dumped = run_chromium(tmp_path, "--dump-dom", report.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    assert console_errors(dumped.stderr) == []
    dom = read_page(dumped.stdout)
    assert dom.body.get("data-ready") == "1", "the page script did not finish"
    assert dom.page_errors == 0 and "data-errors" not in dom.body
    assert len(dom.sections) == len(expected)
    assert dom.body["data-rendered-pieces"] == str(sum(len(s.pieces) for s in dom.sections))
    for section, record in zip(dom.sections, expected, strict=True):
        assert section.status == record.status
        assert section.token_count == len(record.tokens)
        shown = {i for piece in section.pieces for i in piece.tokens}
        assert shown == set(range(len(record.tokens)))  # every token on the page
        assert all(t.bytes is not None for t in record.tokens)
        assert "".join(p.text for p in section.pieces) == b"".join(
            t.bytes or b"" for t in record.tokens).decode("utf-8", "replace")
    # hovering shows the token's top alternatives, as the server returned them
    first_piece = dom.sections[0].pieces[0]
    first_token = expected[0].tokens[first_piece.tokens[0]]
    assert [a[0] for a in first_piece.alternatives[0]["alts"]] == [t for t, _ in first_token.top_logprobs]
    assert len(first_piece.alternatives[0]["alts"]) == 4
    # the Korean answer: byte pieces joined into whole characters, nothing replaced
    korean_section = dom.sections[-1]
    assert [(p.text, p.tokens) for p in korean_section.pieces] == expected_pieces(korean_tokens())
    assert "".join(p.text for p in korean_section.pieces) == KOREAN_TEXT

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "html_report.png"
    screenshot.unlink(missing_ok=True)
    shot = run_chromium(tmp_path, f"--screenshot={screenshot}", "--window-size=1200,1400",
                        "--hide-scrollbars", report.as_uri())
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


@pytest.mark.system_tools
def test_a_script_error_would_be_caught(tmp_path: Path) -> None:
    """The checks above can fail: a page whose script breaks is reported by both detectors."""
    page = render_html_report([record_for(korean_tokens())]).replace(
        "</body>", "<script>window.setTimeout(function(){ notDefinedAnywhere(); }, 0);</script></body>")
    path = tmp_path / "broken.html"
    path.write_text(page, encoding="utf-8")
    dumped = run_chromium(tmp_path, "--dump-dom", "--virtual-time-budget=2000", path.as_uri())
    dom = read_page(dumped.stdout)
    assert dom.page_errors == 1 and dom.body.get("data-errors") == "1"
    assert any("notDefinedAnywhere" in line for line in console_errors(dumped.stderr))


def test_report_text_is_escaped() -> None:
    record = record_for(korean_tokens())
    from dataclasses import replace

    from observability import TokenLogprob

    evil = (TokenLogprob("<script>alert(1)</script>", b"<script>alert(1)</script>", -0.1,
                         (("\"><img>", -0.2),)),)
    page = render_html_report([replace(record, tokens=evil, text=None)])
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\"><img>" not in page
