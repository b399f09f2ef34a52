"""Helpers for the demo, CLI, heatmap and HTML report tests: the Korean seed, process checks."""

from __future__ import annotations

import ast
import contextlib
import os
import uuid
from pathlib import Path

from observability import extract_token_logprobs
from observability.core.types import ResponseRecord, RunStart, TokenLogprobs

KOREAN_SEED = Path(__file__).resolve().parent / "seeds" / "004_3e01e40e1f640dc1.txt"
KOREAN_TEXT = "대한민국의 수도는 서울입니다."  # the answer printed in the seed


def korean_tokens() -> TokenLogprobs:
    """The recorded OpenAI logprobs of the seed (tokens split into UTF-8 byte pieces), parsed."""
    text = KOREAN_SEED.read_text(encoding="utf-8")
    start = text.index("'logprobs': ") + len("'logprobs': ")
    depth, end = 0, start
    while True:
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            break
        end += 1
    return extract_token_logprobs(ast.literal_eval(text[start:end + 1]))


def expected_pieces(tokens: TokenLogprobs) -> list[tuple[str, list[int]]]:
    """Group tokens greedily until their bytes decode as whole characters: what a reader must see
    as one piece each. Independent of ``token_offsets``."""
    pieces: list[tuple[str, list[int]]] = []
    pending = b""
    members: list[int] = []
    for index, token in enumerate(tokens):
        assert token.bytes is not None
        pending += token.bytes
        members.append(index)
        try:
            text = pending.decode("utf-8")
        except UnicodeDecodeError:
            continue
        pieces.append((text, members))
        pending, members = b"", []
    assert not pending
    return pieces


def record_for(tokens: TokenLogprobs, *, text: str | None = None, status: str = "ok",
               model: str = "gpt-3.5-turbo", question: str | None = None) -> ResponseRecord:
    """A ResponseRecord as the handler would build it for these tokens (asked ``question``)."""
    from observability import score_confidence
    from observability.report import token_offsets

    start = RunStart(run_id=uuid.uuid4(), parent_run_id=None, kind="chat", name="ChatOpenAI",
                     started_at_ns=1_700_000_000_000_000_000, provider="openai", request_model=model,
                     logprobs_requested=True, question=question)
    return ResponseRecord(start=start, status=status, logprobs="present",  # type: ignore[arg-type]
                          report=score_confidence(tokens), choice_index=0,
                          ended_at_ns=start.started_at_ns + 1_250_000_000, response_model=model,
                          text=text if text is not None else token_offsets(tokens)[0], tokens=tuple(tokens))


def processes_tagged(tag: str) -> list[int]:
    """PIDs of live processes whose environment holds ``DEMO_TEST_TAG=tag`` (children inherit it)."""
    needle = f"DEMO_TEST_TAG={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            status = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if needle in environ.split(b"\0") and ") Z " not in status:  # zombies are already gone
            found.append(int(entry))
    return found


def new_tag() -> str:
    return uuid.uuid4().hex


def demo_env(tag: str, **extra: str) -> dict[str, str]:
    """The environment for a demo subprocess: tagged (to find what it leaves behind), local model,
    spans to a file, no colour unless asked, and Python's fault handler on (a test that finds the
    demo hung sends SIGABRT to see every thread's stack)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "FORCE_COLOR", "NO_COLOR")
           and not k.startswith(("OTEL_", "OBSERVABILITY_"))}
    env.update({"DEMO_TEST_TAG": tag, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1", **extra})
    return env


def wait_until_gone(tag: str, timeout: float = 20.0) -> list[int]:
    """Poll until no process carries the tag; return the ones still alive after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        left = processes_tagged(tag)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def kill_tagged(tag: str) -> None:
    """Clean up after a failed test: SIGKILL what still carries this test's tag (ours by construction)."""
    import signal

    for pid in processes_tagged(tag):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
