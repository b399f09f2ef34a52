"""examples/app.py under ``opentelemetry-instrument``, as docs/attach.md runs it: it says which
LangChain tracers that command turned on, and the documented command leaves the peers off (issue 30:
the dev virtualenv's two peer tracers turned 5 calls into 34 spans without a word)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from observability.demo.model_server import LocalModelServer
from tests.docs_support import DOCS, code_blocks

ROOT = Path(__file__).resolve().parent.parent
INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"
OURS = "langchain_confidence (langchain-confidence)"
PEERS = ["langchain (openinference-instrumentation-langchain)",
         "langchain (opentelemetry-instrumentation-genai-langchain)",
         "langchain (opentelemetry-instrumentation-langchain)"]


def example_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_app", ROOT / "examples" / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def documented_command() -> str:
    """The docs/attach.md command that runs the example under opentelemetry-instrument."""
    [block] = [b for b in code_blocks((DOCS / "attach.md").read_text(encoding="utf-8"), "bash")
               if "examples/app.py" in b]
    [command] = [c for c in block.replace("\\\n", " ").splitlines() if "examples/app.py" in c]
    return command


def test_it_names_the_tracers_opentelemetry_instrument_turns_on() -> None:
    app = example_app()
    # the peers are installed for the peer-tracer tests (pyproject's test extra)
    assert app.langchain_tracers({}) == (sorted([*PEERS, OURS]), [])
    assert app.langchain_tracers({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": " langchain ,requests"}) == ([OURS], PEERS)
    assert app.langchain_tracers({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "*"}) == ([], sorted([*PEERS, OURS]))
    assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=langchain" in documented_command()


@pytest.mark.real_model
def test_the_documented_command_gives_one_span_per_call(local_model: LocalModelServer, tmp_path: Path) -> None:
    words = shlex.split(documented_command())
    settings = dict(w.split("=", 1) for w in words if re.fullmatch(r"[A-Z_]+=.*", w))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBSERVABILITY_", "OTEL_"))}
    env.update(settings, APP_BASE_URL=local_model.base_url)
    result = subprocess.run([str(INSTRUMENT), sys.executable, str(ROOT / "examples" / "app.py")], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[0] == f"LangChain tracers turned on by opentelemetry-instrument: {OURS}"
    assert "done: 5 model calls" in result.stdout
    spans = [json.loads(block) for block in re.findall(r"^\{\n.*?^\}$", result.stdout, flags=re.M | re.S)]
    assert len(spans) == 5, [s.get("name") for s in spans]
    assert all("llm.confidence.logprobs" in s["attributes"] for s in spans)
