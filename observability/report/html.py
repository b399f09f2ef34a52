"""Recorded responses as one self-contained HTML page: token heatmaps, figures, summary charts.

Everything is inline (CSS, a small script for the hover card, SVG charts); the page loads
nothing from the network. Each response is a ``<section class="response" id="response-N">`` (N
counts from 1, the number on its card and on its bar in the "sequence probability per response"
chart, which links to it). A card shows the question asked (``p.question``; the record file keeps
it), the three headline figures (sequence probability, least likely token, share of doubtful
tokens), the other figures grouped with an explanation on hover (``title``), a per-field table for
JSON answers (``report.fields``), and the heatmap: one ``<span class="tok">`` per visible piece (see
``token_segments``); ``data-tokens`` lists the token indices a piece shows, so pieces that share a
character stay one piece. Hovering a piece shows its tokens' probabilities and top alternatives.
Text on a coloured background is black or white, whichever contrasts more (``text_colour``; at
least 4.5:1 on every heatmap colour, WCAG AA). Script errors are listed on the page
(``#page-errors``) rather than lost.
"""

from __future__ import annotations

import html
import json
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from observability.core.score import DEFAULT_LOW_CONFIDENCE_THRESHOLD
from observability.core.text import token_offsets
from observability.core.types import ConfidenceReport, ResponseRecord, TokenLogprob
from observability.report.heatmap import least_confident_field, probability_rgb, token_probability, token_segments

_CSS = """
body{font:14px/1.5 system-ui,-apple-system,"Segoe UI","Noto Sans","Noto Sans CJK KR",sans-serif;
 margin:0 auto;max-width:1100px;padding:24px;color:#1d232a;background:#f7f8fa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.muted{color:#66707a}.charts{display:flex;gap:24px;flex-wrap:wrap}
.chart{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px}
.chart h3{font-size:13px;margin:0 0 6px;font-weight:600}
table.summary{border-collapse:collapse;background:#fff;font-size:13px}
table.summary td,table.summary th{border:1px solid #dde1e6;padding:3px 8px;text-align:right}
table.summary th{background:#eef1f4}table.summary td:first-child,table.summary th:first-child{text-align:left}
.response{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px 16px;margin:14px 0}
.response header{display:flex;gap:12px;align-items:baseline;flex-wrap:wrap}
.badge{border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;color:#fff}
.status-ok{background:#2e7d32}.status-cancelled{background:#b26a00}.status-error{background:#c62828}
.question{margin:6px 0 2px;font-size:15px}.question b{color:#45505a;font-weight:600}
.question.missing{color:#66707a;font-style:italic}
.headline{display:flex;gap:12px;flex-wrap:wrap;margin:10px 0 6px}
.headline div{border:1px solid #dde1e6;border-radius:6px;padding:4px 12px;min-width:150px}
.headline dt{font-size:12px;color:#45505a}.headline dd{margin:0;font-size:22px;font-weight:700}
.headline dd small{font-size:13px;font-weight:600;color:#45505a}
.groups{display:flex;gap:28px;flex-wrap:wrap;font-size:12px;margin:4px 0 8px}
.groups h4{font-size:11px;text-transform:uppercase;letter-spacing:.04em;color:#45505a;margin:0 0 2px}
dl.figures{margin:0;display:grid;grid-template-columns:auto auto;gap:0 14px}dl.figures dd{margin:0;font-weight:600}
dl.figures dt[title],.headline dt[title],table.fields th[title]{cursor:help;text-decoration:underline dotted #8a939c}
table.fields{border-collapse:collapse;font-size:12px;margin:4px 0 8px}
table.fields td,table.fields th{border:1px solid #dde1e6;padding:2px 8px;text-align:left}
table.fields th{background:#eef1f4}table.fields td.p{text-align:right;font-weight:600}
svg a.bar text{font-size:10px;fill:#1d232a}svg a.bar:hover rect{stroke:#1d232a;stroke-width:1.5}
.heatmap{white-space:pre-wrap;word-break:break-word;font:15px/1.9 ui-monospace,"DejaVu Sans Mono",
 "Noto Sans Mono CJK KR",monospace;padding:6px 0}
.tok{border-radius:3px;padding:1px 0;cursor:default}.tok.low{border-bottom:3px solid #5a0000;font-weight:700}
.tok.empty::after,.empty-mark::after{content:"\\220E";color:#8a939c;font-size:11px}
.legend span{display:inline-block;padding:0 6px;margin-right:2px;border-radius:3px;font-size:12px;font-weight:600}
#tip{position:fixed;display:none;background:#1d232a;color:#fff;border-radius:6px;padding:8px 10px;
 font-size:12px;max-width:360px;pointer-events:none;z-index:10;white-space:pre}
#page-errors{color:#c62828}:target{outline:3px solid #2f6fde}
"""

_SCRIPT = """
(function(){
  var errors=document.getElementById('page-errors');
  window.addEventListener('error',function(e){
    var li=document.createElement('li');li.textContent=String(e.message||e);errors.appendChild(li);
    document.body.setAttribute('data-errors',String(errors.children.length));
  });
  var tip=document.getElementById('tip');
  function pct(p){return (100*p).toFixed(p<0.001&&p>0?3:1)+'%';}
  function show(el,ev){
    var data=JSON.parse(el.getAttribute('data-alt'));var lines=[];
    data.forEach(function(t){
      lines.push(JSON.stringify(t.token)+'  p='+pct(t.p));
      t.alts.forEach(function(a){
        lines.push('   '+(a[0]===t.token?'\\u2713 ':'  ')+JSON.stringify(a[0])+'  '+pct(a[1]));});
    });
    tip.textContent=lines.join('\\n');tip.style.display='block';
    tip.style.left=Math.min(ev.clientX+12,window.innerWidth-370)+'px';tip.style.top=(ev.clientY+16)+'px';
  }
  document.querySelectorAll('.tok').forEach(function(el){
    el.addEventListener('mousemove',function(ev){show(el,ev);});
    el.addEventListener('mouseleave',function(){tip.style.display='none';});
  });
  document.body.setAttribute('data-rendered-pieces',String(document.querySelectorAll('.tok').length));
  document.body.setAttribute('data-ready','1');
})();
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _css_rgb(probability: float) -> str:
    r, g, b = probability_rgb(probability)
    return f"rgb({r},{g},{b})"


def relative_luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG 2 relative luminance of an sRGB colour (0 black, 1 white)."""
    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(first: tuple[int, int, int], second: tuple[int, int, int]) -> float:
    """WCAG 2 contrast ratio, from 1 (same) to 21 (black on white); AA asks 4.5 for body text."""
    light, dark = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


BLACK, WHITE = (0, 0, 0), (255, 255, 255)


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with ``background``."""
    return BLACK if contrast_ratio(BLACK, background) >= contrast_ratio(WHITE, background) else WHITE


def _chip_style(probability: float) -> str:
    """Background by probability, text in the colour that reads on it."""
    rgb = probability_rgb(probability)
    r, g, b = text_colour(rgb)
    return f"background:{_css_rgb(probability)};color:rgb({r},{g},{b})"


def _alt_json(token: TokenLogprob) -> dict[str, object]:
    alts = [[text, round(math.exp(min(lp, 0.0)), 6) if math.isfinite(lp) else 0.0]
            for text, lp in token.top_logprobs[:5]]
    return {"token": token.token, "p": round(token_probability(token), 6), "alts": alts}


def _heatmap_html(record: ResponseRecord, threshold: float) -> str:
    parts = []
    for segment in token_segments(record.tokens, threshold):
        classes = "tok" + (" low" if segment.low else "") + ("" if segment.text else " empty")
        alt = json.dumps([_alt_json(record.tokens[i]) for i in segment.token_indices], ensure_ascii=False)
        parts.append(
            f'<span class="{classes}" style="{_chip_style(segment.probability)}" '
            f'data-p="{segment.probability:.6f}" data-tokens="{",".join(map(str, segment.token_indices))}" '
            f'data-alt="{_esc(alt)}">{_esc(segment.text)}</span>'
        )
    return "".join(parts)


# What each figure means, shown on hover (the title attribute). See observability.core.score.
_EXPLAIN = {
    "sequence probability": "Geometric mean of the token probabilities: exp(mean logprob) = 1 / perplexity. "
                            "1 means the model was sure of every token.",
    "least likely token": "Probability of the least likely token of the answer (min token probability), "
                          "and that token. One guessed word can make an answer wrong.",
    "doubtful tokens": "Share of the tokens whose probability is below the low-confidence threshold ({t:g}); "
                       "they are underlined in the heatmap.",
    "perplexity": "1 / sequence probability: how many equally likely choices the model had per token, on average.",
    "low-confidence spans": "Runs of adjacent doubtful tokens.",
    "mean entropy (nats)": "Mean entropy of each token's returned alternatives, renormalised "
                           "(0 = all probability on one alternative).",
    "mean top margin": "Mean gap between the two most likely alternatives' probabilities (1 = no contest).",
    "top-k mass": "Mean total probability of the returned alternatives (below 1: some probability lies "
                  "outside the top k the provider returned).",
    "duration": "From the start of the model call to its end.",
    "first token": "From the start of the call to the first streamed token.",
    "tokens": "Tokens scored in this answer.",
    "finish reason": "Why the model stopped (stop, length, ...), as the provider reported it.",
    "logprobs": "Whether token logprobs came back: without them there is nothing to score.",
}


def _dl(rows: Sequence[tuple[str, str]], threshold: float) -> str:
    return "".join(f'<dt title="{_esc(_EXPLAIN.get(k, "").format(t=threshold))}">{_esc(k)}</dt><dd>{_esc(v)}</dd>'
                   if _EXPLAIN.get(k) else f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in rows)


def _least_likely(record: ResponseRecord) -> tuple[float, str] | None:
    if not record.tokens:
        return None
    index = min(range(len(record.tokens)), key=lambda i: token_probability(record.tokens[i]))
    token = record.tokens[index]
    text = token.token if token.token is not None else (token.bytes or b"").decode("utf-8", "replace")
    return token_probability(token), json.dumps(text, ensure_ascii=False)


def _headline(record: ResponseRecord, threshold: float) -> str:
    """The three figures a reader looks at first, large."""
    report = record.report
    if report is None:
        return ""
    least = _least_likely(record)
    cells = [
        ("sequence probability", "headline-sequence", _esc(_fmt(report.sequence_probability))),
        ("least likely token", "headline-least", _esc(_fmt(report.min_token_probability)) + (
            "" if least is None else f" <small>{_esc(least[1])}</small>")),
        ("doubtful tokens", "headline-doubtful", _esc(_pct(report.low_confidence_ratio))),
    ]
    return '<dl class="headline">' + "".join(
        f'<div class="{cls}"><dt title="{_esc(_EXPLAIN[name].format(t=threshold))}">{_esc(name)}</dt>'
        f"<dd>{value}</dd></div>" for name, cls, value in cells) + "</dl>"


def _figures(record: ResponseRecord, threshold: float) -> str:
    """The other figures, in two groups: confidence detail and the call itself."""
    report = record.report
    call: list[tuple[str, str]] = [("duration", f"{record.duration_seconds:.2f} s")]
    if record.time_to_first_token_seconds is not None:
        call.append(("first token", f"{record.time_to_first_token_seconds:.2f} s"))
    if report is not None:
        call.append(("tokens", str(report.token_count)))
    else:
        call.append(("logprobs", record.logprobs.replace("_", " ")))
    if record.finish_reason:
        call.append(("finish reason", record.finish_reason))
    groups = []
    if report is not None:
        detail = [
            ("perplexity", _fmt(report.perplexity)),
            ("low-confidence spans", str(len(report.low_confidence_spans))),
            ("mean entropy (nats)", _fmt(report.mean_token_entropy)),
            ("mean top margin", _fmt(report.mean_top_margin)),
            ("top-k mass", _fmt(report.top_k_mass)),
        ]
        groups.append(("more confidence figures", detail))
    groups.append(("the call", call))
    return '<div class="groups">' + "".join(
        f'<div class="group"><h4>{_esc(title)}</h4><dl class="figures">{_dl(rows, threshold)}</dl></div>'
        for title, rows in groups) + "</div>"


def _fields_table(record: ResponseRecord) -> str:
    """Per field of a JSON answer: its path, its value as written, its least likely token."""
    report = record.report
    if report is None or not report.fields:
        return ""
    text = token_offsets(record.tokens)[0] if record.tokens else (record.text or "")
    weakest = least_confident_field(report)
    rows = []
    for leaf in report.fields:
        p = leaf.min_token_probability
        value = text[leaf.start:leaf.end]
        cell = ('<td class="p">—</td>' if p is None else
                f'<td class="p" style="{_chip_style(p)}">{p:.3f}</td>')
        mark = ' class="weakest"' if leaf is weakest else ""
        rows.append(f'<tr{mark} data-path="{_esc(leaf.path)}"><td><code>{_esc(leaf.path or "(root)")}</code></td>'
                    f"<td>{_esc(value[:80] + ('…' if len(value) > 80 else ''))}</td>{cell}</tr>")
    return ('<table class="fields"><tr><th title="RFC 6901 JSON Pointer of the value">field</th><th>value</th>'
            '<th title="Probability of the least likely token inside the value (min token probability)">'
            f'min token p</th></tr>{"".join(rows)}</table>')


def _question_html(record: ResponseRecord) -> str:
    question = record.start.question
    if question is None:
        return '<p class="question missing">question not recorded</p>'
    shown = question if len(question) <= 600 else question[:600] + " …"
    return f'<p class="question" title="{_esc(question[:2000])}"><b>Q:</b> {_esc(shown)}</p>'


def _response_html(number: int, record: ResponseRecord) -> str:
    threshold = record.report.low_confidence_threshold if record.report else DEFAULT_LOW_CONFIDENCE_THRESHOLD
    # the class name, as on the terminal; its dotted path on hover
    status = record.status + (f" ({record.error_type.rsplit('.', 1)[-1]})" if record.error_type else "")
    badge_title = f' title="{_esc(record.error_type)}"' if record.error_type else ""
    trace = f" · trace {_esc(record.trace['trace_id'])}" if record.trace.get("trace_id") else ""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.start.started_at_ns / 1e9))
    heatmap = _heatmap_html(record, threshold) if record.tokens else (
        f'<span class="muted">{_esc(record.text or "(no tokens recorded)")}</span>')
    return (
        f'<section class="response" id="response-{number}" data-number="{number}" '
        f'data-status="{_esc(record.status)}" data-token-count="{len(record.tokens)}">'
        f'<header><strong>#{number}</strong><span class="badge status-{_esc(record.status)}"'
        f'{badge_title}>{_esc(status)}</span>'
        f'<span>{_esc(record.model or "unknown model")}</span><span class="muted">{_esc(record.start.name)} · '
        f'{started} UTC · choice {record.choice_index}{trace}</span></header>'
        f"{_question_html(record)}{_headline(record, threshold)}{_figures(record, threshold)}"
        f'{_fields_table(record)}<div class="heatmap">{heatmap}</div></section>'
    )


def _bar_chart(records: Sequence[ResponseRecord]) -> str:
    """Sequence probability per response (bar) with its least likely token (dark tick); each bar is
    labelled with its card's number and links to the card. A note under it names the responses
    that have no bar (no logprobs came back, so there is nothing to draw)."""
    scored = [(i + 1, r.report) for i, r in enumerate(records)
              if r.report and r.report.sequence_probability is not None]
    drawn = {number for number, _ in scored}
    return _bar_svg(scored) + _omitted_note(len(records), [n for n in range(1, len(records) + 1) if n not in drawn])


def _omitted_note(total: int, numbers: Sequence[int]) -> str:
    if not numbers:
        return ""
    shown = ", ".join(f"#{n}" for n in numbers[:12]) + (", …" if len(numbers) > 12 else "")
    return (f'<p class="muted omitted" data-omitted="{len(numbers)}">{len(numbers)} of {total} '
            f'response{"" if total == 1 else "s"} not drawn: no logprobs came back to score ({shown})</p>')


def _bar_svg(scored: Sequence[tuple[int, ConfidenceReport]]) -> str:
    width, height, pad, top, bottom = max(420, 40 + 26 * len(scored)), 200, 24, 10, 52
    span = height - bottom - top  # plot height
    base = height - bottom
    step = (width - pad) / max(len(scored), 1)
    bars = []
    for slot, (number, report) in enumerate(scored):
        p = report.sequence_probability or 0.0
        low = report.min_token_probability or 0.0
        x = pad + slot * step
        bar_h = p * span
        bars.append(
            f'<a class="bar" href="#response-{number}" data-response="{number}">'
            f'<title>#{number}: sequence p {p:.3f}, min token p {low:.3f} (go to the card)</title>'
            f'<rect x="{x + step * 0.15:.1f}" y="{base - bar_h:.1f}" width="{step * 0.7:.1f}" '
            f'height="{max(bar_h, 1):.1f}" fill="{_css_rgb(p)}"/>'
            f'<line x1="{x + step * 0.1:.1f}" x2="{x + step * 0.9:.1f}" y1="{base - low * span:.1f}" '
            f'y2="{base - low * span:.1f}" stroke="#1d232a" stroke-width="2"/>'
            f'<text x="{x + step / 2:.1f}" y="{base + 12}" text-anchor="middle">#{number}</text></a>'
        )
    axis = "".join(
        f'<text x="{pad - 4}" y="{base - v * span + 4:.1f}" font-size="10" '
        f'text-anchor="end">{v:g}</text>'
        for v in (0, 0.5, 1)
    )
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="sequence probability per response">'
            f'{axis}<line x1="{pad}" x2="{width}" y1="{base}" y2="{base}" stroke="#99a"/>'
            f'{"".join(bars)}<text x="{pad}" y="{height - 18}" font-size="10">#N: response card N (click '
            f'to go there)</text><text x="{pad}" y="{height - 4}" font-size="10">bar: sequence probability · '
            f'tick: least likely token</text></svg>')


def _histogram(records: Sequence[ResponseRecord], bins: int = 10) -> str:
    """How many tokens fell in each probability decile, across all responses."""
    counts = [0] * bins
    for record in records:
        for token in record.tokens:
            counts[min(int(token_probability(token) * bins), bins - 1)] += 1
    width, height, pad = 360, 160, 24
    top = max(counts) or 1
    step = (width - 2 * pad) / bins  # a margin on each side, so the 0.0 and 1.0 labels fit
    bars = []
    for i, count in enumerate(counts):
        h = (height - pad) * (count / top)
        bars.append(f'<rect x="{pad + i * step + 1:.1f}" y="{height - pad - h:.1f}" width="{step - 2:.1f}" '
                    f'height="{h:.1f}" fill="{_css_rgb((i + 0.5) / bins)}"><title>p in [{i / bins:.1f}, '
                    f'{(i + 1) / bins:.1f}): {count} tokens</title></rect>')
    ticks = "".join(f'<text x="{pad + i * step:.1f}" y="{height - 8}" font-size="10" text-anchor="middle">'
                    f'{i / bins:.1f}</text>' for i in range(0, bins + 1, 2))
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="token probability histogram">'
            f'<text x="{pad}" y="12" font-size="10">{top} tokens</text>{"".join(bars)}{ticks}</svg>')


def _overview(records: Sequence[ResponseRecord]) -> str:
    statuses = Counter(r.status for r in records)
    logprobs = Counter(r.logprobs for r in records)
    rows = "".join(f"<tr><td>status {_esc(k)}</td><td>{v}</td></tr>" for k, v in sorted(statuses.items()))
    rows += "".join(f"<tr><td>logprobs {_esc(k.replace('_', ' '))}</td><td>{v}</td></tr>"
                    for k, v in sorted(logprobs.items()))
    return f'<table class="summary"><tr><th>responses</th><th>{len(records)}</th></tr>{rows}</table>'


LEGEND_STEPS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
_EMPTY_PIECE = re.compile(r'<span class="tok[^"]* empty"')


def render_html_report(records: Sequence[ResponseRecord], *, title: str = "Model confidence report") -> str:
    """The whole page for these records, as a string (see the module docstring)."""
    tokens = sum(len(r.tokens) for r in records)
    legend = "".join(f'<span style="{_chip_style(p)}">{p:.1f}</span>' for p in LEGEND_STEPS)
    sections = "".join(_response_html(i + 1, r) for i, r in enumerate(records))
    empty = ('; <span class="empty-mark"></span> = a token with no text (the end-of-text token '
             "some servers return last), coloured by its probability") if _EMPTY_PIECE.search(sections) else ""
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>"
        f'<body data-responses="{len(records)}" data-tokens="{tokens}">'
        f"<h1>{_esc(title)}</h1><p class=\"muted\">{len(records)} response{'' if len(records) == 1 else 's'}, "
        f"{tokens} tokens. "
        f'Colour = token probability <span class="legend">{legend}</span>; underlined = below the low-confidence '
        f"threshold{empty}. Hover a token for its alternatives.</p><ul id=\"page-errors\"></ul>"
        '<h2>Across responses</h2><div class="charts">'
        f'<div class="chart"><h3>Sequence probability per response</h3>{_bar_chart(records)}</div>'
        f'<div class="chart"><h3>Token probabilities</h3>{_histogram(records)}</div>'
        f'<div class="chart"><h3>Counts</h3>{_overview(records)}</div></div>'
        f"<h2>Responses</h2>{sections}<div id=\"tip\"></div>"
        f"<script>{_SCRIPT}</script></body></html>"
    )


def write_html_report(records: Sequence[ResponseRecord], path: str | Path, *,
                      title: str = "Model confidence report") -> Path:
    """Write ``render_html_report`` to ``path`` (UTF-8) and return the path."""
    target = Path(path)
    target.write_text(render_html_report(records, title=title), encoding="utf-8")
    return target
