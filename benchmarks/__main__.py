"""``python -m benchmarks``: run everything and write the table into ``benchmarks/RESULTS.md``.

Only the block between ``<!-- bench:results -->`` and ``<!-- /bench:results -->`` is rewritten;
the rest of RESULTS.md (method, before/after of optimisations) is prose kept by hand. The raw
numbers also go to ``benchmarks/results.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import configs as cfg
from benchmarks import harness, workloads
from benchmarks.report import render
from observability import ConfidenceCallbackHandler

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
MARK = re.compile(r"(<!-- bench:results -->\n).*?(<!-- /bench:results -->)", re.S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--rounds", type=int, default=21, help="rounds for workloads 1-3 (default 21)")
    parser.add_argument("--rounds-concurrent", type=int, default=7, help="rounds for workload 4 (default 7)")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the workloads (the smoke test uses 0.01)")
    parser.add_argument("--leak-runs", type=int, default=100_000, help="runs of the leak check (0: skip)")
    parser.add_argument("--real-rounds", type=int, default=5, help="rounds on the real model (default 5; 0: skip)")
    parser.add_argument("--configs", default=",".join(cfg.KEYS),
                        help=f"comma-separated, from: {', '.join(cfg.KEYS)} (default: all)")
    parser.add_argument("--workloads", default="w1,w2,w3,w3c,w4,fields",
                        help="comma-separated, from: w1,w2,w3,w3c,w4,fields (w3c: workload 3 through the real "
                             "ChatOpenAI; fields: JSON answers against prose, and a runaway nesting, core only)")
    parser.add_argument("--before", metavar="TREE", type=Path,
                        help="also measure an older copy of the package: TREE holds its observability/ (C "
                             "extension built in place, if it has one); see benchmarks/before.py")
    parser.add_argument("--before-label", default="before",
                        help="what the older copy is, for the report (e.g. a commit: '3668d0d, C accelerator')")
    parser.add_argument("--render-only", action="store_true",
                        help="measure nothing: rewrite RESULTS.md's table from benchmarks/results.json")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    args = parser.parse_args(argv)

    def progress(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    if args.render_only:
        _write(json.loads((HERE / "results.json").read_text()), write_json=False)
        progress(f"wrote {RESULTS}")
        return 0

    unknown = [k for k in args.configs.split(",") if k.strip() not in cfg.KEYS]
    if unknown:
        parser.error(f"unknown configuration {', '.join(unknown)}; choose from {', '.join(cfg.KEYS)}")
    names = [cfg.KEYS[k.strip()] for k in args.configs.split(",")]
    if names[0] != cfg.BASELINE:
        names.insert(0, cfg.BASELINE)
    sinks = cfg.Sinks()
    before_sinks = cfg.Sinks()
    old = None
    if args.before is not None:
        from benchmarks import before

        old = before.load(args.before)
        progress(f"before: {args.before_label} from {args.before} ({before.describe(old)})")
    configurations = cfg.build(names, sinks, before=old, before_sinks=before_sinks)
    data: dict[str, Any] = {"machine": _machine(), "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                            "args": {**vars(args), "before": None if args.before is None else str(args.before)},
                            "workloads": []}
    if old is not None:
        from benchmarks import before

        data["before"] = {"label": args.before_label, "tree": str(args.before), "speedups": before.describe(old)}
    chosen = {k.strip() for k in args.workloads.split(",")}
    for workload in [w for w in workloads.standard(args.scale) if w.key in chosen]:
        rounds = args.rounds_concurrent if workload.key == "w4" else args.rounds
        probes: list[harness.Probe] = []
        if workload.key == "w1":
            probes = harness.read_floor_probes(workload.tokens)
        elif workload.key == "w3":
            probes = harness.read_floor_probes(workload.tokens, calls=workload.units)
            probes.append(harness.end_of_run_probe(harness.END_OF_RUN, ConfidenceCallbackHandler,
                                                   workload.tokens, calls=workload.units))
            if old is not None:
                probes.append(harness.end_of_run_probe(harness.BEFORE_END_OF_RUN, old.ConfidenceCallbackHandler,
                                                       workload.tokens, calls=workload.units))
        results = harness.interleave(workload, configurations, rounds, probes=probes, progress=progress)
        harness.peak_memory(workload, configurations, results)
        progress(f"{workload.key} memory done")
        data["workloads"].append(_dump(workload.key, workload.title, workload.unit, workload.units, rounds, results))
    if "fields" in chosen:
        from benchmarks import fields

        data["fields"] = fields.measure(args.rounds, args.scale, progress)
    costs = harness.per_chunk(configurations, rounds=max(5, args.rounds))
    data["per_chunk_ns"] = costs
    progress("per-chunk done")
    if args.real_rounds:
        from benchmarks.real_model import measure

        exporters = cfg.full_exporters(sinks) if cfg.FULL in names else []
        workload, results, mean_tokens, inside = measure(configurations, args.real_rounds, 128, exporters, progress)
        data["real_inside"] = {**inside, "full_exporters": bool(exporters)}
        data["workloads"].append(_dump(workload.key, workload.title, workload.unit, max(1, round(mean_tokens)),
                                       args.real_rounds, results))
    if args.leak_runs:
        from benchmarks.leak import run_leak_check

        exporters = cfg.full_exporters(sinks) if cfg.FULL in names else []
        progress(f"leak check: {args.leak_runs:,} runs")
        leak = run_leak_check(exporters, args.leak_runs, flush=sinks.flush, progress=progress)
        data["leak"] = {**leak.__dict__, "growth_kib": leak.growth_kib,
                        "growth_bytes_per_run": leak.growth_bytes_per_run, "swing_kib": leak.swing_kib,
                        "full_exporters": bool(exporters)}
    sinks.flush()
    before_sinks.flush()
    data["spans_by_scope"] = dict(sinks.span_exporter.by_scope + before_sinks.span_exporter.by_scope)
    sinks.shutdown()
    before_sinks.shutdown()
    data["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.no_write:
        print(render(data))
    else:
        _write(data, write_json=True)
        progress(f"wrote {RESULTS}")
    return 0


def _write(data: dict[str, Any], *, write_json: bool) -> None:
    table = render(data)
    print(table)
    if write_json:
        (HERE / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if not MARK.search(text):
        text += "\n<!-- bench:results -->\n<!-- /bench:results -->\n"
    RESULTS.write_text(MARK.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text))


def _dump(key: str, title: str, unit: str, units: int, rounds: int,
          results: dict[str, harness.Measured]) -> dict[str, Any]:
    return {"key": key, "title": title, "unit": unit, "units": units, "rounds": rounds, "configs": {
        name: {"median_us": m.median_us(units), "ratio": m.ratio, "spread": m.spread, "ratios": m.ratios,
               "before_end_ratio": (sorted(m.before_end_ratios)[len(m.before_end_ratios) // 2]
                                    if m.before_end_ratios else None),
               "peak_kib": m.peak_kib}
        for name, m in results.items()}}


def _machine() -> str:
    import os

    import langchain_core

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
            f"load {load:.1f} at start, langchain-core {langchain_core.__version__}")


if __name__ == "__main__":
    raise SystemExit(main())
