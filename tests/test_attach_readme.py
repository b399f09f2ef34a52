"""The README's quickstart and attach snippets run as pasted, against the real local model.

Each ```python block of the attach section runs in a fresh interpreter. ``ChatOpenAI`` reads the
endpoint from ``OPENAI_BASE_URL`` (the openai client's own variable), so the snippets stay as a
user would paste them while talking to the bundled model (llama.cpp ignores the model name).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from observability._local_model import LocalModelServer

ROOT = Path(__file__).resolve().parent.parent


def snippets(section_name: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split(f"<!-- section:{section_name} -->", 1)[1].split(f"<!-- /section:{section_name} -->", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def attach_snippets() -> list[str]:
    return snippets("attach")


def run_snippet(code: str, base_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBSERVABILITY_", "OTEL_"))}
    env.update(OPENAI_BASE_URL=base_url, OPENAI_API_KEY="unused")
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_the_section_has_the_three_python_snippets() -> None:
    snippets = attach_snippets()
    assert len(snippets) == 3
    assert "config={\"callbacks\": [handler]}" in snippets[0]
    assert "observe_confidence(" in snippets[1]
    assert "ConfidenceInstrumentor()" in snippets[2]


@pytest.mark.real_model
def test_every_python_snippet_runs_as_pasted(local_model: LocalModelServer) -> None:
    explicit, block, instrumentor = (run_snippet(code, local_model.base_url) for code in attach_snippets())
    for result in (explicit, block, instrumentor):
        assert result.returncode == 0, result.stderr[-3000:]
    assert explicit.stdout.strip()  # the model's answer
    lines = block.stdout.strip().splitlines()
    assert len(lines) == 5 and lines[-1] == "open runs left: 0"
    for line in lines[:4]:
        status, probability = line.split()
        assert status == "present" and 0 <= float(probability) <= 1


@pytest.mark.real_model
def test_the_quickstart_runs_as_pasted(local_model: LocalModelServer) -> None:
    [quickstart] = snippets("quickstart")
    result = run_snippet(quickstart, local_model.base_url)
    assert result.returncode == 0, result.stderr[-3000:]
    report_line, *answer = result.stdout.strip().splitlines()
    assert report_line.startswith("ok ConfidenceReport(token_count=")
    assert answer and "".join(answer).strip()
