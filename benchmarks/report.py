"""Markdown for RESULTS.md from one run's numbers (the dict ``python -m benchmarks`` builds)."""

from __future__ import annotations

from typing import Any

from benchmarks.configs import BASELINE, BEFORE_FULL, BEFORE_SCORING, FULL, NOOP, PEERS, SCORING
from benchmarks.harness import BEFORE_END_OF_RUN, END_OF_RUN, READ_EXP_FLOOR, READ_FLOOR

PROBES = (READ_FLOOR, READ_EXP_FLOOR, END_OF_RUN, BEFORE_END_OF_RUN)
END_OF_RUN_LIMIT = 2.5  # issue 13: end-of-run work ≤ 2.5× the read + exp() floor
ABOVE_NOOP_LIMIT = 0.06  # issue 13: the full handler on workload 1 ≤ 6 points above the no-op handler
PER_CHUNK_LIMIT = 1.5  # issue 14: per-chunk cost ≤ 1.5× the no-op handler's


def _pct(ratio: float | None) -> str:
    return "–" if ratio is None else f"{(ratio - 1) * 100:+.1f}%"


def _get(data: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((w for w in data["workloads"] if w["key"] == key), None)


def _overhead(data: dict[str, Any], key: str, name: str) -> float | None:
    workload = _get(data, key)
    if workload is None or name not in workload["configs"]:
        return None
    ratio: float = workload["configs"][name]["ratio"]
    return ratio


def _per_chunk_ratio(data: dict[str, Any], name: str) -> float | None:
    costs = data.get("per_chunk_ns", {})
    if name not in costs or NOOP not in costs:
        return None
    return _median([c / n for c, n in zip(costs[name], costs[NOOP], strict=True) if n > 0])


def _share(data: dict[str, Any], key: str, name: str) -> str:
    """A probe's time as a share of the baseline's, e.g. '3.4%'."""
    r = _overhead(data, key, name)
    return "–" if r is None else f"{r * 100:.1f}%"


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def _above_noop(data: dict[str, Any], key: str, name: str = FULL) -> float | None:
    """Median over rounds of (ours, full − the no-op handler) / the baseline: what our code adds
    on top of LangChain's dispatch of every event to a handler."""
    workload = _get(data, key)
    if workload is None or name not in workload["configs"] or NOOP not in workload["configs"]:
        return None
    return _median([a - b for a, b in zip(workload["configs"][name]["ratios"], workload["configs"][NOOP]["ratios"],
                                          strict=True)])


def end_of_run_ratio(data: dict[str, Any], name: str = END_OF_RUN) -> float | None:
    """Median over workload 3's rounds of (the end-of-run probe's time / the read + exp() floor's
    time in the same round): both are stored as ratios to that round's baseline."""
    workload = _get(data, "w3")
    if workload is None or name not in workload["configs"] or READ_EXP_FLOOR not in workload["configs"]:
        return None
    return _median([a / b for a, b in zip(workload["configs"][name]["ratios"],
                                          workload["configs"][READ_EXP_FLOOR]["ratios"], strict=True) if b > 0])


def _points(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:+.1f} points"


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _with_before(after: str, before: str | None) -> str:
    return after if before is None else f"{after} (before: {before})"


def _floors(data: dict[str, Any], key: str) -> str:
    """Why a target may be out of reach: LangChain's own dispatch, and reading the logprobs."""
    noop, above = _overhead(data, key, NOOP), _above_noop(data, key)
    probe = READ_EXP_FLOOR if key == "w1" else READ_FLOOR
    parts = [f"the no-op handler alone: {_pct(noop)}",
             "ours above it: " + ("–" if above is None else f"{above * 100:+.1f} points")]
    if _overhead(data, key, probe) is not None:
        parts.append(("reading + exp() of all logprobs in Python" if key == "w1" else "merely reading its 6,000 "
                      "logprobs in Python") + f" = {_share(data, key, probe)} of the baseline")
    return " (" + "; ".join(parts) + ")"


def targets(data: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for issues 13 and 14, then issue 7's; met is None when not measured.
    With an older copy measured (``--before``), its figure is shown beside; met is ours."""
    has_before = "before" in data
    rows: list[tuple[str, str, bool | None]] = []
    eor = end_of_run_ratio(data)
    rows.append((f"end-of-run work ÷ floor ≤ {END_OF_RUN_LIMIT}× (issue 13: `on_llm_end` with `exporters=()` on "
                 "a 1,000-token, 5-alternative response ÷ reading + exp() of its logprobs in Python, same rounds)",
                 _with_before(_times(eor), _times(end_of_run_ratio(data, BEFORE_END_OF_RUN)) if has_before else None),
                 None if eor is None else eor <= END_OF_RUN_LIMIT))
    above = _above_noop(data, "w1")
    rows.append((f"full handler on workload 1 ≤ {ABOVE_NOOP_LIMIT * 100:.0f} points above the no-op handler "
                 "(issue 13)",
                 _with_before(_points(above), _points(_above_noop(data, "w1", BEFORE_FULL)) if has_before else None)
                 + f"; the no-op handler itself: {_pct(_overhead(data, 'w1', NOOP))}",
                 None if above is None else above <= ABOVE_NOOP_LIMIT))
    chunk = _per_chunk_ratio(data, FULL)
    rows.append((f"per-chunk cost ≤ {PER_CHUNK_LIMIT}× the no-op handler's (issue 14)",
                 _with_before(_times(chunk), _times(_per_chunk_ratio(data, BEFORE_FULL)) if has_before else None),
                 None if chunk is None else chunk <= PER_CHUNK_LIMIT))
    for key, limit in (("w1", 0.10), ("w2", 0.25)):
        r = _overhead(data, key, FULL)
        rows.append((f"full handler overhead on workload {key[1]} ≤ {limit:.0%} (issue 7)",
                     _pct(r) + _floors(data, key), None if r is None else r - 1 <= limit))
    r = _overhead(data, "w3", FULL)
    rows.append(("scoring + export of a 1,000-token response ≤ 5% of producing it (issue 7)",
                 _pct(r) + _floors(data, "w3"), None if r is None else r - 1 <= 0.05))
    r = _overhead(data, "w3c", FULL)
    if r is not None:  # context: the same response produced by the real ChatOpenAI client
        rows.append(("the same, produced through the real `ChatOpenAI` client (workload 3c, context)",
                     _pct(r) + f" (the no-op handler alone: {_pct(_overhead(data, 'w3c', NOOP))})", r - 1 <= 0.05))
    for key in ("w1", "w2", "w3"):
        ours = _overhead(data, key, FULL)
        peers = {p: _overhead(data, key, p) for p in PEERS}
        known = {p: v for p, v in peers.items() if v is not None}
        if ours is None or not known:
            continue
        rows.append((f"lower overhead than every peer on workload {key[1]} (issue 7)",
                     f"ours {_pct(ours)}; " + ", ".join(f"{p} {_pct(v)}" for p, v in known.items()),
                     all(ours < v for v in known.values())))
    return rows


def render(data: dict[str, Any]) -> str:
    lines = [f"Run {data['started']} → {data['finished']} on {data['machine']}. "
             f"Command: `python -m benchmarks` with {_args(data['args'])}.", ""]
    lines += ["### Targets", "", "| target | measured | met |", "|---|---|---|"]
    for target, measured, met in targets(data):
        lines.append(f"| {target} | {measured} | {'–' if met is None else 'yes' if met else '**no**'} |")
    lines.append("")
    lines += before_after(data)
    for workload in data["workloads"]:
        unit = workload["unit"]
        lines += [f"### {workload['title']}", "",
                  f"{workload['rounds']} interleaved rounds. Overhead: median over rounds of (time / the baseline's "
                  f"time in the same round) − 1, with the interquartile range.", "",
                  f"| configuration | µs per {unit} | overhead | IQR | before the end event | peak memory |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, c in workload["configs"].items():
            low, high = c["spread"]
            peak = "–" if c["peak_kib"] is None else f"{c['peak_kib']:,.0f} KiB"
            if name in PROBES:  # a probe: its time as a share of the baseline's
                lines.append(f"| *{name}* | {c['median_us']:,.1f} | = {c['ratio'] * 100:.1f}% of baseline | "
                             f"{low * 100:.1f}% … {high * 100:.1f}% | – | – |")
                continue
            lines.append(f"| {name} | {c['median_us']:,.1f} | {_pct(c['ratio'])} | "
                         f"{_pct(low)} … {_pct(high)} | {_pct(c['before_end_ratio'])} | {peak} |")
        if workload["key"] == "real" and data.get("real_inside"):
            inside = data["real_inside"]
            lines += ["", f"Measured directly instead of by difference: ours"
                      f"{', full' if inside['full_exporters'] else ', scoring only'} spent "
                      f"**{inside['inside_us']:,.0f} µs per run inside its callbacks = "
                      f"{inside['share'] * 100:.3f}% of the run's wall time** ({inside['runs']} runs)."]
        lines.append("")
    costs = data.get("per_chunk_ns")
    if costs:
        lines += ["### Per-chunk cost (the path before the run ends)", "",
                  "`run_manager.on_llm_new_token` called 2,002 times with the chunks `.stream` produces, minus "
                  "the same loop without handlers; median over rounds.", "",
                  "| configuration | ns per chunk | × no-op handler |", "|---|---:|---:|"]
        for name, values in costs.items():
            if name == BASELINE:
                continue
            ratio = _per_chunk_ratio(data, name)
            lines.append(f"| {name} | {sorted(values)[len(values) // 2]:,.0f} | "
                         f"{'–' if ratio is None else f'{ratio:.2f}×'} |")
        lines.append("")
    if data.get("fields"):
        from benchmarks.fields import render as render_fields

        lines += [*render_fields(data["fields"]), ""]
    leak = data.get("leak")
    if leak:
        marks = ", ".join(f"{m:,.0f}" for m in leak["checkpoints_kib"])
        lines += ["### Leak check", "",
                  f"{leak['runs']:,} runs ({_counts(leak['by_kind'])}) through "
                  f"{'ours, full' if leak['full_exporters'] else 'ours, scoring only'}, in {leak['seconds']:,.0f} s.",
                  "",
                  f"- records by status: {_counts(leak['by_status'])}",
                  f"- `handler.open_runs` at the end: **{leak['open_runs']}**; run claims left: {leak['open_claims']}; "
                  f"evicted runs: {leak['evicted_runs']}; "
                  f"handler errors: {leak['handler_errors'] or 'none'}",
                  f"- tracemalloc current size after each tenth of the runs, span queue flushed (KiB): {marks}",
                  f"- growth from the first tenth to the end: **{leak['growth_kib']:+,.1f} KiB** "
                  f"({leak['growth_bytes_per_run']:+.2f} bytes per run); largest swing between checkpoints: "
                  f"{leak.get('swing_kib', float('nan')):,.1f} KiB", ""]
    spans = data.get("spans_by_scope")
    if spans:
        lines += ["Spans exported during the run, by instrumentation scope (a check that every tracing "
                  "configuration really traced): " + _counts(spans) + ".", ""]
    return "\n".join(lines)


def before_after(data: dict[str, Any]) -> list[str]:
    """The older copy (``--before``) beside ours, every figure from the same interleaved rounds."""
    old = data.get("before")
    if not old:
        return []
    lines = [f"### Before and after, same run: before = {old['label']} ({old['speedups']})", "",
             "Both copies of the package ran in one process, in the same interleaved rounds. Overhead against "
             "the no-handler baseline; *above no-op*: median over rounds of (configuration − no-op handler) ÷ "
             "baseline.", "",
             "| workload | no-op handler | full, before | full, after | scoring only, before | scoring only, after "
             "| full above no-op, before | full above no-op, after |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for workload in data["workloads"]:
        key = workload["key"]
        if BEFORE_FULL not in workload["configs"]:
            continue
        lines.append(f"| {workload['title']} | {_pct(_overhead(data, key, NOOP))} | "
                     f"{_pct(_overhead(data, key, BEFORE_FULL))} | {_pct(_overhead(data, key, FULL))} | "
                     f"{_pct(_overhead(data, key, BEFORE_SCORING))} | {_pct(_overhead(data, key, SCORING))} | "
                     f"{_points(_above_noop(data, key, BEFORE_FULL))} | {_points(_above_noop(data, key, FULL))} |")
    w3 = _get(data, "w3")
    if w3 is not None and END_OF_RUN in w3["configs"] and BEFORE_END_OF_RUN in w3["configs"]:
        lines.append(f"| end-of-run work ÷ floor (µs per response: before "
                     f"{w3['configs'][BEFORE_END_OF_RUN]['median_us']:,.0f}, after "
                     f"{w3['configs'][END_OF_RUN]['median_us']:,.0f}; floor "
                     f"{w3['configs'][READ_EXP_FLOOR]['median_us']:,.0f}) | – | "
                     f"{_times(end_of_run_ratio(data, BEFORE_END_OF_RUN))} | {_times(end_of_run_ratio(data))} "
                     "| – | – | – | – |")
    if data.get("per_chunk_ns"):
        lines.append(f"| per-chunk cost ÷ the no-op handler's | 1.00× | {_times(_per_chunk_ratio(data, BEFORE_FULL))} "
                     f"| {_times(_per_chunk_ratio(data, FULL))} | {_times(_per_chunk_ratio(data, BEFORE_SCORING))} | "
                     f"{_times(_per_chunk_ratio(data, SCORING))} | – | – |")
    lines.append("")
    return lines


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items())


def _args(args: dict[str, Any]) -> str:
    before = f", `--before {args['before']}`" if args.get("before") else ""
    return (f"{args['rounds']} rounds (workload 4: {args['rounds_concurrent']}), scale {args['scale']}, "
            f"{args['leak_runs']:,} leak-check runs, {args['real_rounds']} real-model rounds{before}")


