"""What a JSON answer costs against prose, and a runaway nesting (issue 25, items 5 and 6).

Both are timed on the core alone, ``score_confidence(extract_token_logprobs(payload))`` — what
``on_llm_end`` does per response — in interleaved rounds (order rotated), ``gc.collect()`` before
each sample; figures are medians over rounds of per-round ratios:

- **JSON ÷ prose per token**: a 2,000-token JSON answer (a list of records, the shape
  ``metric="/field"`` is for: strings, numbers, booleans, nesting) against the fake model's prose
  of the same length, the same logprobs and 5 alternatives per token. The JSON answer also locates
  every token's characters and scores its fields. Target (issue 25): ≤ 2×.
- **A runaway nesting**: 10,000 tokens of ``[`` (and of ``{"a":``) then ``1``: its time per token
  against the prose answer's, and the peak memory of scoring it (``tracemalloc``), next to the
  prose answer's peak.
"""

from __future__ import annotations

import gc
import itertools
import json
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from benchmarks.fake_model import openai_logprobs_content
from observability import extract_token_logprobs, score_confidence

JSON_TOKENS = 2_000
DEEP_TOKENS = 10_000


def _retext(entries: list[dict[str, Any]], pieces: list[str]) -> list[dict[str, Any]]:
    """The entries with their token texts (and bytes) replaced by ``pieces``, logprobs kept."""
    return [{**entry, "token": piece, "bytes": list(piece.encode())} for entry, piece in zip(entries, pieces,
                                                                                              strict=True)]


def json_pieces(n_tokens: int) -> list[str]:
    """A JSON answer of about 3 characters a token, cut into ``n_tokens`` pieces of 2-4 characters
    (as a tokenizer cuts it)."""
    records, text = 1, ""
    while len(text) < 3 * n_tokens:
        people = [{"name": f"Person {i}", "age": 20 + i % 50, "city": "서울" if i % 3 else "Canberra",
                   "member": i % 2 == 0, "tags": ["a", "b"]} for i in range(records)]
        text = json.dumps({"people": people}, ensure_ascii=False)
        records += 1
    bounds = [round(i * len(text) / n_tokens) for i in range(n_tokens + 1)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def payloads(scale: float = 1.0) -> dict[str, list[dict[str, Any]]]:
    n_json, n_deep = max(20, round(JSON_TOKENS * scale)), max(20, round(DEEP_TOKENS * scale))
    prose = openai_logprobs_content(max(n_json, n_deep))
    return {
        "prose": prose[:n_json],
        "json": _retext(prose[:n_json], json_pieces(n_json)),
        "prose, deep length": prose[:n_deep],
        "[ ×10,000": _retext(prose[:n_deep], ["["] * (n_deep - 2) + ["1", "]"]),
        '{"a": ×10,000': _retext(prose[:n_deep], ['{"a":'] * (n_deep - 2) + ["1", "}"]),
    }


def _timed(entries: list[dict[str, Any]]) -> Callable[[], int]:
    payload = {"content": entries, "refusal": None}

    def run() -> int:
        start = time.perf_counter_ns()
        report = score_confidence(extract_token_logprobs(payload))
        elapsed = time.perf_counter_ns() - start
        if report.token_count != len(entries):
            raise AssertionError(f"scored {report.token_count} of {len(entries)} tokens")
        return elapsed

    return run


def _peak_kib(entries: list[dict[str, Any]]) -> float:
    payload = {"content": entries, "refusal": None}
    gc.collect()
    tracemalloc.start()
    try:
        score_confidence(extract_token_logprobs(payload))
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()


def measure(rounds: int, scale: float = 1.0, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The JSON-vs-prose and deep-nesting figures (see the module docstring)."""
    cases = payloads(scale)
    runs = {name: _timed(entries) for name, entries in cases.items()}
    samples: dict[str, list[int]] = {name: [] for name in cases}
    names = list(cases)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            samples[name].append(runs[name]())
    progress(f"fields: {rounds} rounds done")

    def ratio(name: str, against: str) -> float:
        per_token = len(cases[against]) / len(cases[name])
        return statistics.median(a / b * per_token for a, b in zip(samples[name], samples[against], strict=True))

    return {
        "rounds": rounds,
        "tokens": {name: len(entries) for name, entries in cases.items()},
        "median_us_per_token": {name: statistics.median(samples[name]) / 1e3 / len(cases[name]) for name in cases},
        "json_over_prose": ratio("json", "prose"),
        "deep_over_prose": {name: ratio(name, "prose, deep length") for name in names if name.startswith(("[", "{"))},
        "peak_kib": {name: _peak_kib(cases[name]) for name in names[2:]},
    }


def render(fields: dict[str, Any]) -> list[str]:
    """RESULTS.md lines for ``measure``'s figures."""
    deep = fields["deep_over_prose"]
    peaks = fields["peak_kib"]
    lines = ["", f"### JSON answers and runaway nesting (core only, {fields['rounds']} interleaved rounds)", "",
             "| | per token ÷ prose per token | µs per token (median, for scale) | peak memory (tracemalloc) |",
             "|---|---|---|---|",
             f"| JSON answer, {fields['tokens']['json']:,} tokens (fields scored) | "
             f"**{fields['json_over_prose']:.2f}×** (target ≤ 2×) | {fields['median_us_per_token']['json']:.2f} | – |",
             f"| prose, {fields['tokens']['prose, deep length']:,} tokens | 1.00× | "
             f"{fields['median_us_per_token']['prose, deep length']:.2f} | {peaks['prose, deep length']:,.0f} KiB |"]
    for name, value in deep.items():
        lines.append(f"| `{name}` then `1` | {value:.2f}× | {fields['median_us_per_token'][name]:.2f} | "
                     f"{peaks[name]:,.0f} KiB |")
    return lines
