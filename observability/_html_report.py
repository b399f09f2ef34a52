"""Recorded responses as one self-contained HTML page: token heatmaps, figures, summary charts.

Everything is inline (CSS, a small script for the hover card, SVG charts); the page loads
nothing from the network. Each response is a ``<section class="response">`` whose heatmap holds
one ``<span class="tok">`` per visible piece (see ``token_segments``); ``data-tokens`` lists the
token indices a piece shows, so pieces that share a character stay one piece. Hovering a piece
shows its tokens' probabilities and top alternatives. Script errors are listed on the page
(``#page-errors``) rather than lost.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from observability._heatmap import probability_rgb, token_probability, token_segments
from observability._score import DEFAULT_LOW_CONFIDENCE_THRESHOLD
from observability._types import ResponseRecord, TokenLogprob

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
dl.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:2px 20px;margin:8px 0;
 font-size:12px}dl.figures div{display:flex;justify-content:space-between}dl.figures dd{margin:0;font-weight:600}
.heatmap{white-space:pre-wrap;word-break:break-word;font:15px/1.9 ui-monospace,"DejaVu Sans Mono",
 "Noto Sans Mono CJK KR",monospace;padding:6px 0}
.tok{border-radius:3px;padding:1px 0;cursor:default}.tok.low{border-bottom:3px solid #5a0000;font-weight:700}
.tok.empty::after{content:"\\220E";color:#8a939c;font-size:11px}
.legend span{display:inline-block;padding:0 6px;margin-right:2px;border-radius:3px;font-size:12px}
#tip{position:fixed;display:none;background:#1d232a;color:#fff;border-radius:6px;padding:8px 10px;
 font-size:12px;max-width:360px;pointer-events:none;z-index:10;white-space:pre}
#page-errors{color:#c62828}
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
            f'<span class="{classes}" style="background:{_css_rgb(segment.probability)}" '
            f'data-p="{segment.probability:.6f}" data-tokens="{",".join(map(str, segment.token_indices))}" '
            f'data-alt="{_esc(alt)}">{_esc(segment.text)}</span>'
        )
    return "".join(parts)


def _figures(record: ResponseRecord) -> str:
    report = record.report
    rows: list[tuple[str, str]] = [("duration", f"{record.duration_seconds:.2f} s")]
    if record.time_to_first_token_seconds is not None:
        rows.append(("first token", f"{record.time_to_first_token_seconds:.2f} s"))
    if report is not None:
        rows += [
            ("tokens", str(report.token_count)),
            ("sequence probability", _fmt(report.sequence_probability)),
            ("perplexity", _fmt(report.perplexity)),
            ("min token probability", _fmt(report.min_token_probability)),
            ("low-confidence tokens", _pct(report.low_confidence_ratio)),
            ("low-confidence spans", str(len(report.low_confidence_spans))),
            ("mean entropy (nats)", _fmt(report.mean_token_entropy)),
            ("mean top margin", _fmt(report.mean_top_margin)),
            ("top-k mass", _fmt(report.top_k_mass)),
        ]
    else:
        rows.append(("logprobs", record.logprobs.replace("_", " ")))
    if record.finish_reason:
        rows.append(("finish reason", record.finish_reason))
    return "".join(f"<div><dt>{_esc(k)}</dt><dd>{_esc(v)}</dd></div>" for k, v in rows)


def _response_html(number: int, record: ResponseRecord) -> str:
    threshold = record.report.low_confidence_threshold if record.report else DEFAULT_LOW_CONFIDENCE_THRESHOLD
    status = record.status + (f" ({record.error_type})" if record.error_type else "")
    trace = f" · trace {_esc(record.trace['trace_id'])}" if record.trace.get("trace_id") else ""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.start.started_at_ns / 1e9))
    heatmap = _heatmap_html(record, threshold) if record.tokens else (
        f'<span class="muted">{_esc(record.text or "(no tokens recorded)")}</span>')
    return (
        f'<section class="response" id="response-{number}" data-status="{_esc(record.status)}" '
        f'data-token-count="{len(record.tokens)}">'
        f'<header><strong>#{number}</strong><span class="badge status-{_esc(record.status)}">{_esc(status)}</span>'
        f'<span>{_esc(record.model or "unknown model")}</span><span class="muted">{_esc(record.start.name)} · '
        f'{started} UTC · choice {record.choice_index}{trace}</span></header>'
        f'<dl class="figures">{_figures(record)}</dl><div class="heatmap">{heatmap}</div></section>'
    )


def _bar_chart(records: Sequence[ResponseRecord]) -> str:
    """Sequence probability per response (bar) with its least likely token (dark tick)."""
    width, height, pad, top = 420, 170, 24, 10
    span = height - pad - top  # plot height
    scored = [(i + 1, r.report) for i, r in enumerate(records)
              if r.report and r.report.sequence_probability is not None]
    step = (width - pad) / max(len(scored), 1)
    bars = []
    for slot, (number, report) in enumerate(scored):
        p = report.sequence_probability or 0.0
        low = report.min_token_probability or 0.0
        x = pad + slot * step
        bar_h = p * span
        bars.append(
            f'<rect x="{x + step * 0.15:.1f}" y="{height - pad - bar_h:.1f}" width="{step * 0.7:.1f}" '
            f'height="{bar_h:.1f}" fill="{_css_rgb(p)}"><title>#{number}: sequence p {p:.3f}, '
            f'min token p {low:.3f}</title></rect>'
            f'<line x1="{x + step * 0.1:.1f}" x2="{x + step * 0.9:.1f}" y1="{height - pad - low * span:.1f}" '
            f'y2="{height - pad - low * span:.1f}" stroke="#1d232a" stroke-width="2"/>'
        )
    axis = "".join(
        f'<text x="{pad - 4}" y="{height - pad - v * span + 4:.1f}" font-size="10" '
        f'text-anchor="end">{v:g}</text>'
        for v in (0, 0.5, 1)
    )
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="sequence probability per response">'
            f'{axis}<line x1="{pad}" x2="{width}" y1="{height - pad}" y2="{height - pad}" stroke="#99a"/>'
            f'{"".join(bars)}<text x="{pad}" y="{height - 6}" font-size="10">responses in order '
            f'(bar: sequence probability, tick: least likely token)</text></svg>')


def _histogram(records: Sequence[ResponseRecord], bins: int = 10) -> str:
    """How many tokens fell in each probability decile, across all responses."""
    counts = [0] * bins
    for record in records:
        for token in record.tokens:
            counts[min(int(token_probability(token) * bins), bins - 1)] += 1
    width, height, pad = 360, 160, 24
    top = max(counts) or 1
    step = (width - pad) / bins
    bars = []
    for i, count in enumerate(counts):
        h = (height - pad) * (count / top)
        bars.append(f'<rect x="{pad + i * step + 1:.1f}" y="{height - pad - h:.1f}" width="{step - 2:.1f}" '
                    f'height="{h:.1f}" fill="{_css_rgb((i + 0.5) / bins)}"><title>p in [{i / bins:.1f}, '
                    f'{(i + 1) / bins:.1f}): {count} tokens</title></rect>')
    ticks = "".join(f'<text x="{pad + i * step:.1f}" y="{height - 8}" font-size="10">{i / bins:.1f}</text>'
                    for i in range(0, bins + 1, 2))
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="token probability histogram">'
            f'<text x="{pad}" y="12" font-size="10">{top} tokens</text>{"".join(bars)}{ticks}</svg>')


def _overview(records: Sequence[ResponseRecord]) -> str:
    statuses = Counter(r.status for r in records)
    logprobs = Counter(r.logprobs for r in records)
    rows = "".join(f"<tr><td>status {_esc(k)}</td><td>{v}</td></tr>" for k, v in sorted(statuses.items()))
    rows += "".join(f"<tr><td>logprobs {_esc(k.replace('_', ' '))}</td><td>{v}</td></tr>"
                    for k, v in sorted(logprobs.items()))
    return f'<table class="summary"><tr><th>responses</th><th>{len(records)}</th></tr>{rows}</table>'


def render_html_report(records: Sequence[ResponseRecord], *, title: str = "Model confidence report") -> str:
    """The whole page for these records, as a string (see the module docstring)."""
    tokens = sum(len(r.tokens) for r in records)
    legend = "".join(f'<span style="background:{_css_rgb(p)}">{p:.1f}</span>' for p in (0, 0.2, 0.4, 0.6, 0.8, 1))
    sections = "".join(_response_html(i + 1, r) for i, r in enumerate(records))
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>"
        f'<body data-responses="{len(records)}" data-tokens="{tokens}">'
        f"<h1>{_esc(title)}</h1><p class=\"muted\">{len(records)} responses, {tokens} tokens. "
        f'Colour = token probability <span class="legend">{legend}</span>; underlined = below the low-confidence '
        "threshold. Hover a token for its alternatives.</p><ul id=\"page-errors\"></ul>"
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
