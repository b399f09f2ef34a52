"""Markdown for RESULTS.md from one run's numbers (the dict ``python -m benchmarks`` builds)."""

from __future__ import annotations

from typing import Any

from benchmarks.configs import BASELINE, FULL, NOOP, PEERS
from benchmarks.harness import READ_EXP_FLOOR, READ_FLOOR


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
    ratios = sorted(c / n for c, n in zip(costs[name], costs[NOOP], strict=True) if n > 0)
    return ratios[len(ratios) // 2] if ratios else None


def _share(data: dict[str, Any], key: str, name: str) -> str:
    """A probe's time as a share of the baseline's, e.g. '3.4%'."""
    r = _overhead(data, key, name)
    return "–" if r is None else f"{r * 100:.1f}%"


def _above_noop(data: dict[str, Any], key: str) -> float | None:
    """Median over rounds of (ours, full − the no-op handler) / the baseline: what our code adds
    on top of LangChain's dispatch of every event to a handler."""
    workload = _get(data, key)
    if workload is None or FULL not in workload["configs"] or NOOP not in workload["configs"]:
        return None
    diffs = sorted(a - b for a, b in zip(workload["configs"][FULL]["ratios"], workload["configs"][NOOP]["ratios"],
                                         strict=True))
    return diffs[len(diffs) // 2] if diffs else None


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
    """(target, measured, met) for issue 7's targets; met is None when not measured."""
    rows: list[tuple[str, str, bool | None]] = []
    for key, limit in (("w1", 0.10), ("w2", 0.25)):
        r = _overhead(data, key, FULL)
        rows.append((f"full handler overhead on workload {key[1]} ≤ {limit:.0%}",
                     _pct(r) + _floors(data, key), None if r is None else r - 1 <= limit))
    chunk = _per_chunk_ratio(data, FULL)
    rows.append(("work per streamed chunk ≤ 1.5× the no-op handler's",
                 "–" if chunk is None else f"{chunk:.2f}×", None if chunk is None else chunk <= 1.5))
    r = _overhead(data, "w3", FULL)
    rows.append(("scoring + export of a 1,000-token response ≤ 5% of producing it",
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
        rows.append((f"lower overhead than every peer on workload {key[1]}",
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
            if name in (READ_FLOOR, READ_EXP_FLOOR):  # a probe: its time as a share of the baseline's
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


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items())


def _args(args: dict[str, Any]) -> str:
    return (f"{args['rounds']} rounds (workload 4: {args['rounds_concurrent']}), scale {args['scale']}, "
            f"{args['leak_runs']:,} leak-check runs, {args['real_rounds']} real-model rounds")


