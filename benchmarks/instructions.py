"""``python -m benchmarks.instructions``: two of ``make bench``'s targets counted in CPU instructions.

On a shared two-core machine the time ratios of ``make bench`` move by ±0.3 (end of run ÷ floor)
and ±5 points (workload 1) between runs, more than a change of ours moves them. Instructions do
not: each figure here is the same to a few thousandths on every run. Each measurement runs in its
own ``valgrind --tool=cachegrind`` process (``PYTHONHASHSEED=0``), ``REPEAT`` times after one
warm-up, and the same process without the measured loop is subtracted, so start-up and
imports cancel out. The work measured is ``make bench``'s own: its read + exp() floor probe and
end-of-run probe (``benchmarks.harness``), and workload 1 (``benchmarks.workloads.stream_sync``)
with no handler, the no-op handler and ours with the default exporters.

Workload 1's count is steadier than its time but not fixed: the same code gave +8.3 to +11.3
points above the no-op handler across environments and processes (a second copy of the package
loaded beside it, the benchmark environment's extra packages), and ±0.3 between two identical
runs (the span exporter's batch thread). The garbage collector is most of it: with collection
off inside each stream (collected before it) the same two environments gave +9.5 and +9.8:
whether an older generation's collection falls inside one configuration's stream depends on
everything the process allocated before it.

Instructions are not time (a float allocation and a dict lookup cost different cycles per
instruction), so these ratios sit near, not on, the timed ones; they are for telling whether a
change helped. Needs ``valgrind`` (Debian: ``apt-get install valgrind``); takes a few minutes.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPEAT = 5
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")
ROOT = Path(__file__).resolve().parent.parent


def _child(measure: str, before: str | None) -> None:
    """Run one measurement ``REPEAT`` times (``measure`` ending in ``:idle``: all but the measured
    call itself)."""
    from benchmarks import configs as cfg
    from benchmarks import harness, workloads

    what, _, idle = measure.partition(":")
    old = None
    if before:
        from benchmarks import before as before_module

        old = before_module.load(Path(before))
    step: Callable[[], object]
    if what == "floor":
        step = dict(harness.read_floor_probes(1000))[harness.READ_EXP_FLOOR]
    elif what in ("end", "end-before"):
        from observability import ConfidenceCallbackHandler

        handler_class = old.ConfidenceCallbackHandler if what == "end-before" and old else ConfidenceCallbackHandler
        _, step = harness.end_of_run_probe(what, handler_class, 1000)
    else:
        names = [cfg.BASELINE, cfg.NOOP, cfg.FULL]
        configurations = {c.name: c for c in cfg.build(names, cfg.Sinks(), before=old, before_sinks=cfg.Sinks())}
        config = configurations[{"none": cfg.BASELINE, "noop": cfg.NOOP, "full": cfg.FULL,
                                 "full-before": cfg.BEFORE_FULL}[what]]
        workload = workloads.stream_sync(2000)

        def step() -> object:
            with config.active():
                return workload.run(config.callbacks)
    step()  # warm-up: imports, caches, specialisation
    for _ in range(REPEAT):
        gc.collect()  # (as make bench does before each sample; counted in the idle run too)
        if not idle:
            step()


def _count(measure: str, before: str | None) -> int:
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
               sys.executable, "-m", "benchmarks.instructions", "--child", measure]
    if before:
        command += ["--before", before]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "PYTHONHASHSEED": "0"})
    found = _REFS.search(done.stderr)
    if done.returncode or not found:
        raise RuntimeError(f"cachegrind on {measure!r} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def _per_repeat(measure: str, before: str | None) -> float:
    return (_count(measure, before) - _count(measure + ":idle", before)) / REPEAT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", metavar="TREE", help="also count an older copy (see benchmarks/before.py)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.before)
        return 0
    if shutil.which("valgrind") is None:
        parser.error("needs valgrind on PATH (Debian: apt-get install valgrind)")
    floor = _per_repeat("floor", args.before)
    print(f"read + exp() floor, 1,000 tokens x 5 alternatives: {floor / 1e6:.2f} M instructions")
    ends = ["end", "end-before"] if args.before else ["end"]
    for measure in ends:
        end = _per_repeat(measure, args.before)
        print(f"end of run ({measure}): {end / 1e6:.2f} M = {end / floor:.2f}x the floor (target 2.5x)")
    base = _per_repeat("none", args.before)
    noop = _per_repeat("noop", args.before)
    print(f"workload 1 (2,000 streamed tokens), no handler: {base / 1e6:.1f} M; "
          f"no-op handler {100 * (noop - base) / base:+.1f}%")
    for measure in ["full", "full-before"] if args.before else ["full"]:
        full = _per_repeat(measure, args.before)
        print(f"workload 1, ours ({measure}): {100 * (full - noop) / base:+.1f} points above the no-op handler "
              "(target 6)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
