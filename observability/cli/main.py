"""The command line: ``python -m observability demo``, ``report`` and ``doctor``.

Exit codes: 0 done (also after Ctrl-C / SIGTERM in the demo), 1 a problem the message explains
with its fix (for ``doctor``: a problem in the configuration), 2 bad arguments (argparse's
convention), including combinations such as ``--base-url`` without ``--model``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from observability.demo.app import DEFAULT_METRICS_PORT, DEFAULT_REQUESTS, DEFAULT_SPANS_FILE, DemoError, DemoOptions


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; use 0 or more")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("0 is not allowed here; use 1 or more")
    return value


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port; use 1-65535 (or 0 for a free one)")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a duration; use 0 or more seconds")
    return value


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{text!r} is not an http(s) URL; e.g. http://127.0.0.1:8000/v1")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m observability",
        description="Model confidence from token logprobs: a live demo, and HTML reports of recorded responses.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{demo,report,evaluate,serve-model,doctor}")
    commands.required = True
    # Parsed by their own modules (see main below); listed here for --help.
    commands.add_parser("evaluate", add_help=False,
                        help="which confidence figure separates right answers from wrong ones (labelled records)")
    commands.add_parser("serve-model", add_help=False,
                        help="serve the bundled SmolLM2 model on 127.0.0.1 (OpenAI-compatible) until Ctrl-C")

    demo = commands.add_parser(
        "demo", help="run a small LangChain app on a real model and show its confidence",
        description="Runs a prompt | model | parser chain (plain, streamed, batch, an uncertain answer, a stream "
                    "broken off, a failing call) with the confidence handler attached, prints a summary and a "
                    "token heatmap per response, serves Prometheus /metrics and exports OpenTelemetry spans. "
                    "Uses the bundled SmolLM2 model unless --base-url or OPENAI_API_KEY says otherwise.")
    demo.add_argument("--requests", type=_non_negative_int, default=DEFAULT_REQUESTS, metavar="N",
                      help=f"model calls to make, then stop (default {DEFAULT_REQUESTS}); 0 = keep going in "
                           "rounds until Ctrl-C or SIGTERM")
    demo.add_argument("--pause", type=_seconds, default=5.0, metavar="SECONDS",
                      help="pause between rounds with --requests 0 (default 5)")
    demo.add_argument("--metrics-port", type=_port, default=DEFAULT_METRICS_PORT, metavar="PORT",
                      help=f"serve Prometheus /metrics on 127.0.0.1:PORT (default {DEFAULT_METRICS_PORT}; "
                           "0 picks a free port)")
    demo.add_argument("--base-url", type=_url, metavar="URL",
                      help="an OpenAI-compatible endpoint to use instead of the bundled model (needs --model)")
    demo.add_argument("--model", metavar="NAME",
                      help="model name at --base-url (or at OpenAI when OPENAI_API_KEY is set; "
                           "default gpt-4o-mini there)")
    demo.add_argument("--record-to", type=Path, metavar="FILE",
                      help="also append every response (text and tokens: content) to this JSON-lines file, "
                           "for `report`")
    demo.add_argument("--report", type=Path, metavar="FILE",
                      help="when the demo ends (or is stopped), render the whole --record-to file as an HTML page "
                           "at FILE and print its path (needs --record-to)")
    demo.add_argument("--spans-file", type=Path, default=Path(DEFAULT_SPANS_FILE), metavar="FILE",
                      help=f"where spans go when OTEL_EXPORTER_OTLP_ENDPOINT is not set (default {DEFAULT_SPANS_FILE})")
    demo.add_argument("--max-tokens", type=_positive_int, default=48, metavar="N",
                      help="longest answer, in tokens (default 48)")
    demo.add_argument("--linger", type=_seconds, default=0.0, metavar="SECONDS",
                      help="after the last request keep serving /metrics this long, for a scraper (default 0)")
    demo.add_argument("--no-color", action="store_true",
                      help="plain text: low-confidence tokens marked «like this» (also when NO_COLOR is set "
                           "or the output is not a terminal; FORCE_COLOR=1 forces colour)")

    report = commands.add_parser(
        "report", help="render a JSON-lines record file as one self-contained HTML page",
        description="Renders responses recorded with --record-to (or ConfidenceCallbackHandler(record_to=...)) "
                    "as token heatmaps with alternatives on hover, confidence figures and summary charts.")
    report.add_argument("input", type=Path, metavar="INPUT", help="the record file (JSON lines)")
    report.add_argument("-o", "--output", type=Path, default=Path("report.html"), metavar="FILE",
                        help="the HTML file to write (default report.html)")
    report.add_argument("--title", default="Model confidence report", help="the page title")

    commands.add_parser(
        "doctor", help="check the OBSERVABILITY_* configuration; exit 1 if something is wrong",
        description="Prints what each OBSERVABILITY_* variable holds and every problem zero-code activation would "
                    "log (a bad value, langchain-openai missing or changed for OBSERVABILITY_ENABLE_LOGPROBS, a busy "
                    "OBSERVABILITY_PROMETHEUS_PORT). Exits 1 when there is one, so CI can fail fast.")
    return parser


def _check_demo_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Combinations argparse cannot express; exit 2 like every other bad argument."""
    if args.base_url and not args.model:
        parser.error("--base-url needs --model NAME: the model to ask at that endpoint")
    if args.report and not args.record_to:
        parser.error("--report needs --record-to FILE: the page renders the responses recorded there")
    if args.model and not args.base_url and not os.environ.get("OPENAI_API_KEY"):
        parser.error("--model needs --base-url URL (or OPENAI_API_KEY for OpenAI); without them the demo runs "
                     "the bundled model")


def _use_color(disabled: bool) -> bool:
    if disabled or os.environ.get("NO_COLOR"):
        return False
    return bool(os.environ.get("FORCE_COLOR")) or sys.stdout.isatty()


def _report(args: argparse.Namespace) -> int:
    from observability.exporters._jsonl import RecordFileError, read_records
    from observability.report.html import write_html_report

    try:
        records = read_records(args.input)
    except FileNotFoundError:
        raise DemoError(f"record file {args.input} not found: write one with `python -m observability demo "
                        f"--record-to {args.input}` or ConfidenceCallbackHandler(record_to=...)") from None
    except IsADirectoryError:
        raise DemoError(f"{args.input} is a directory; give the record file (JSON lines)") from None
    except UnicodeDecodeError as exc:
        raise DemoError(f"{args.input} is not UTF-8 text ({exc}); give a record file (JSON lines)") from None
    except RecordFileError as exc:
        raise DemoError(f"{exc}; give a file written by --record-to / record_to=") from None
    if not records:
        raise DemoError(f"{args.input} holds no records: run the app with record_to= (or the demo with "
                        "--record-to) first")
    try:
        path = write_html_report(records, args.output, title=args.title)
    except OSError as exc:
        raise DemoError(f"cannot write {args.output} ({exc.strerror}): check the folder exists and is "
                        "writable") from None
    tokens = sum(len(r.tokens) for r in records)
    print(f"wrote {path}: {len(records)} response{'' if len(records) == 1 else 's'}, {tokens} tokens")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve-model"]:
        from observability.demo.model_server import main as serve_model

        return serve_model(argv[1:], prog="python -m observability serve-model")
    if argv[:1] == ["evaluate"]:
        from observability.evaluation.evaluate import main as evaluate

        return evaluate(argv[1:], prog="python -m observability evaluate")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from observability.cli.doctor import run_doctor

        return run_doctor(sys.stdout)
    if args.command == "demo":
        _check_demo_arguments(parser, args)
    try:
        if args.command == "report":
            return _report(args)
        from observability.demo.app import run_demo

        options = DemoOptions(
            requests=args.requests, pause=args.pause, metrics_port=args.metrics_port, base_url=args.base_url,
            model=args.model, record_to=args.record_to, report=args.report, spans_file=args.spans_file,
            color=_use_color(args.no_color), linger=args.linger, max_tokens=args.max_tokens,
        )
        return run_demo(options)
    except DemoError as exc:
        sys.stdout.flush()
        print(f"error: {exc}", file=sys.stderr)
        return 1
