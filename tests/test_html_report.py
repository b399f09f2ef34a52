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
from observability.exporters._jsonl import JsonlRecorder
from observability.report.html import render_html_report
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
    id: str
    status: str
    token_count: int
    pieces: list[Piece] = field(default_factory=list)
    question: str = ""
    headline: list[str] = field(default_factory=list)  # the headline figures' names
    titled: int = 0  # figure names explained on hover
    fields: list[tuple[str, str]] = field(default_factory=list)  # (path, min token p) rows


@dataclass
class Bar:
    href: str
    response: str
    label: str = ""


class PageReader(HTMLParser):
    """What the rendered DOM shows: the body's attributes, the responses and their heatmap pieces."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.sections: list[Section] = []
        self.bars: list[Bar] = []
        self.legend_styles: list[str] = []
        self.page_errors = 0
        self._piece: Piece | None = None
        self._in_errors = False
        self._capture: str | None = None  # "question", "bar", "dt", "field-path", "field-p"
        self._in_headline = False
        self._in_bar = False

    def _section(self) -> Section:
        return self.sections[-1]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "body":
            self.body = a
        elif tag == "section" and "response" in classes:
            self.sections.append(Section(str(a["id"]), str(a["data-status"]), int(a["data-token-count"] or 0)))
        elif tag == "p" and "question" in classes and "missing" not in classes:
            self._capture = "question"
        elif tag == "a" and "bar" in classes:
            self.bars.append(Bar(str(a["href"]), str(a["data-response"])))
            self._in_bar = True
        elif tag == "text" and self.bars and self._capture is None and self._in_bar:
            self._capture = "bar"
        elif tag == "dl" and "headline" in classes:
            self._in_headline = True
        elif tag == "dt" and self.sections:
            self._section().titled += bool(a.get("title"))
            if self._in_headline:
                self._capture = "dt"
        elif tag == "tr" and a.get("data-path") is not None:
            self._section().fields.append((str(a["data-path"]), ""))
        elif tag == "td" and "p" in classes and self.sections and self._section().fields:
            self._capture = "field-p"
        elif tag == "span" and self.sections == [] and a.get("style") and not classes:
            self.legend_styles.append(str(a["style"]))
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
        elif tag == "dl":
            self._in_headline = False
        elif tag == "a":
            self._in_bar = False
        if tag in ("p", "text", "dt", "td"):
            self._capture = None

    def handle_data(self, data: str) -> None:
        if self._piece is not None:
            self._piece.text += data
        elif self._capture == "question":
            self._section().question += data
        elif self._capture == "bar":
            self.bars[-1].label += data
        elif self._capture == "dt":
            self._section().headline.append(data)
        elif self._capture == "field-p":
            path, p = self._section().fields[-1]
            self._section().fields[-1] = (path, p + data)


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
    korean = record_for(korean_tokens(), question="대한민국의 수도는 어디입니까?")
    JsonlRecorder(records_file).export([korean])
    expected = [*seen, korean]
    assert [r.start.question for r in expected] == ["What is the capital of Italy?", "Name two planets.",
                                                     "대한민국의 수도는 어디입니까?"]

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
    check_cards_and_chart(dom, expected)

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "html_report.png"
    screenshot.unlink(missing_ok=True)
    shot = run_chromium(tmp_path, f"--screenshot={screenshot}", "--window-size=1200,1400",
                        "--hide-scrollbars", report.as_uri())
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def check_cards_and_chart(dom: PageReader, records: list[ResponseRecord]) -> None:
    """Every card shows its question; the chart's bars carry the card numbers and link to the cards;
    headline figures first, every figure name explained on hover; legend text readable."""
    assert [s.id for s in dom.sections] == [f"response-{n}" for n in range(1, len(records) + 1)]
    for section, record in zip(dom.sections, records, strict=True):
        assert section.question == (f"Q: {record.start.question}" if record.start.question else "")
        if record.report is not None:
            assert section.headline == ["sequence probability", "least likely token", "doubtful tokens"]
            assert section.titled >= 3 + 5 + 2  # headline, confidence detail, duration and tokens at least
    scored = [n for n, r in enumerate(records, start=1) if r.report and r.report.sequence_probability is not None]
    assert [(bar.href, bar.response, bar.label) for bar in dom.bars] == [
        (f"#response-{n}", str(n), f"#{n}") for n in scored]
    ids = {s.id for s in dom.sections}
    assert all(bar.href.removeprefix("#") in ids for bar in dom.bars)
    assert len(dom.legend_styles) == 6
    for style in dom.legend_styles:
        assert wcag_contrast(style) >= 4.5, style


def _luminance(rgb: tuple[int, ...]) -> float:
    """WCAG 2.x relative luminance, written out here independently of the report's own helper."""
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(rgb[0]) + 0.7152 * channel(rgb[1]) + 0.0722 * channel(rgb[2])


def wcag_contrast(style: str) -> float:
    """The contrast ratio of the text on its background, from an inline style."""
    import re

    colours = dict(re.findall(r"(background|color):rgb\((\d+,\d+,\d+)\)", style))
    assert set(colours) == {"background", "color"}, style
    back, text = (_luminance(tuple(int(v) for v in colours[k].split(","))) for k in ("background", "color"))
    return (max(back, text) + 0.05) / (min(back, text) + 0.05)


def test_legend_and_heatmap_text_meet_wcag_aa() -> None:
    from observability.report.heatmap import probability_rgb
    from observability.report.html import LEGEND_STEPS, contrast_ratio, text_colour

    assert round(contrast_ratio((0, 0, 0), (255, 255, 255)), 2) == 21.0
    assert round(contrast_ratio((0x76, 0x76, 0x76), (255, 255, 255)), 2) == 4.54  # the known AA grey
    page = render_html_report([record_for(korean_tokens(), question="q")])
    legend = page[page.index('class="legend"'):page.index("</span>; underlined") if "; underlined" in page else None]
    import re

    styles = re.findall(r'<span style="([^"]+)">(\d\.\d)</span>', legend)
    assert [label for _, label in styles] == [f"{p:.1f}" for p in LEGEND_STEPS]
    ratios = {label: round(wcag_contrast(style), 2) for style, label in styles}
    print("legend contrast ratios:", ratios)
    assert min(ratios.values()) >= 4.5, ratios
    # every colour the heatmap can use, with the text colour the report picks for it
    worst = min(contrast_ratio(text_colour(probability_rgb(p / 1000)), probability_rgb(p / 1000))
                for p in range(1001))
    assert worst >= 4.5, worst
    # and the tokens on the page carry that colour
    for style in re.findall(r'<span class="tok[^"]*" style="([^"]+)"', page):
        assert wcag_contrast(style) >= 4.5, style


def json_answer_record() -> ResponseRecord:
    """A JSON answer whose fields have their own confidence (``report.fields``)."""
    import math
    from dataclasses import replace

    from observability import TokenLogprob, score_confidence
    from observability.core.fields import field_confidence
    from observability.core.types import TokenLogprobs

    pieces = [("{\"", 0.99), ("city", 0.99), ("\":", 0.99), (" \"", 0.9), ("Seoul", 0.8), ("\",", 0.99),
              (" \"", 0.99), ("founded", 0.99), ("\":", 0.99), (" 13", 0.3), ("94", 0.6), ("}", 0.99)]
    tokens = TokenLogprobs(TokenLogprob(t, t.encode(), math.log(p), ((t, math.log(p)), ("x", math.log(0.01))))
                           for t, p in pieces)
    report = replace(score_confidence(tokens), fields=field_confidence(tokens))
    return replace(record_for(tokens, question="Capital of Korea and its founding year, as JSON?"), report=report)


@pytest.mark.system_tools
def test_every_card_has_its_question_and_the_chart_links_to_it(tmp_path: Path) -> None:
    from dataclasses import replace

    ok = record_for(korean_tokens(), question="대한민국의 수도는?")
    failed = replace(record_for(korean_tokens(), question="Explain photosynthesis.", status="error"),
                     report=None, tokens=(), text=None, logprobs="not_returned", error_type="APITimeoutError")
    unknown = replace(ok, start=replace(ok.start, question=None))  # an older record file: no question kept
    records = [ok, json_answer_record(), failed, unknown]
    path = tmp_path / "report.html"
    path.write_text(render_html_report(records), encoding="utf-8")
    dumped = run_chromium(tmp_path, "--dump-dom", "--virtual-time-budget=2000", path.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    assert console_errors(dumped.stderr) == []
    dom = read_page(dumped.stdout)
    assert dom.body.get("data-ready") == "1" and dom.page_errors == 0
    check_cards_and_chart(dom, records)
    assert [b.label for b in dom.bars] == ["#1", "#2", "#4"]  # the failed call has no bar, numbers still match
    assert "question not recorded" in dumped.stdout
    # the JSON answer: each field with its least likely token's probability, in the report's order
    fields = records[1].report.fields  # type: ignore[union-attr]
    assert dom.sections[1].fields == [(f.path, f"{f.min_token_probability:.3f}") for f in fields]
    assert dom.sections[1].fields == [("/city", "0.800"), ("/founded", "0.300")]
    assert dom.sections[0].fields == []


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


def test_the_page_explains_what_it_does_not_draw() -> None:
    """Issue 30: the error badge shows the class name (as the terminal does), the chart says which
    responses have no bar, the empty end-of-text piece is explained, the histogram's axis reaches 1.0."""
    import math
    import re
    from dataclasses import replace

    from observability import TokenLogprob, score_confidence
    from observability.core.types import TokenLogprobs

    # llama.cpp's non-streamed answers end with the end-of-generation token: empty text, its own logprob
    tokens = TokenLogprobs([*korean_tokens(), TokenLogprob("", b"", math.log(0.9), (("", math.log(0.9)),))])
    ended = replace(record_for(tokens), report=score_confidence(tokens))
    failed = replace(record_for(korean_tokens(), status="error"), report=None, tokens=(), text=None,
                     logprobs="not_returned", error_type="openai.APITimeoutError")
    unscored = replace(record_for(korean_tokens()), report=None, tokens=(), logprobs="not_requested")
    page = render_html_report([ended, failed, unscored])

    badges = re.findall(r'<span class="badge status-(\w+)"( title="[^"]*")?>([^<]*)</span>', page)
    assert badges[1] == ("error", ' title="openai.APITimeoutError"', "error (APITimeoutError)")
    assert re.search(r'data-omitted="2">2 of 3 responses not drawn: no logprobs came back to score '
                     r'\(#2, #3\)</p>', page)
    assert '<span class="empty-mark"></span> = a token with no text (the end-of-text token' in page
    assert "= a token with no text" not in render_html_report([failed])  # explained only where one is drawn
    assert "not drawn" not in render_html_report([ended])

    histogram = re.search(r'<svg width="(\d+)"[^>]*aria-label="token probability histogram">(.*?)</svg>', page)
    assert histogram
    labels = re.findall(r'<text x="([\d.]+)"[^>]*text-anchor="middle">([\d.]+)</text>', histogram[2])
    assert [label for _, label in labels] == ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    width = int(histogram[1])
    assert all(12 <= float(x) <= width - 12 for x, _ in labels)  # room for half a label on either side
