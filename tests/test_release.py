"""The release: `python -m build` gives an sdist and one pure `py3-none-any` wheel that pass
`twine check`, carry the LICENSE and hold the library and its demo only; the wheel, installed with
langchain-openai into a clean virtualenv, scores a real call of the bundled model exactly as the
server's raw response says.

Nothing here reaches a package index: the build requirements and the runtime dependencies come
from the wheelhouse that `make wheelhouse` (part of `make test`) downloads beforehand.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from observability.demo.model_server import MODEL_NAME, LocalModelServer
from tests.conftest import raw_chat_completion

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / ".wheelhouse"
pytestmark = pytest.mark.real_model


def offline_pip_env() -> dict[str, str]:
    if not (WHEELHOUSE / ".downloaded").exists():
        pytest.fail(f"{WHEELHOUSE} is missing: run `make wheelhouse` (part of `make test`)", pytrace=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "OBSERVABILITY_", "OTEL_"))}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(WHEELHOUSE), PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def run(args: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", out, ROOT], env=offline_pip_env(), cwd=out)
    yield out


def test_one_pure_wheel_and_an_sdist_that_twine_accepts(dist: Path) -> None:
    wheels = sorted(p.name for p in dist.glob("*.whl"))
    sdists = sorted(p.name for p in dist.glob("*.tar.gz"))
    assert wheels == ["langchain_confidence-0.1.0-py3-none-any.whl"], wheels
    assert sdists == ["langchain_confidence-0.1.0.tar.gz"], sdists
    checked = run([sys.executable, "-m", "twine", "check", "--strict", *dist.iterdir()])
    assert checked.stdout.count("PASSED") == 2, checked.stdout


def test_the_wheel_holds_the_license_and_the_library_only(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read("langchain_confidence-0.1.0.dist-info/METADATA").decode()
    assert "langchain_confidence-0.1.0.dist-info/licenses/LICENSE" in names
    assert "License-Expression: Apache-2.0" in metadata
    assert "Requires-Dist: opentelemetry-api" in metadata
    assert "Requires-Dist: opentelemetry-sdk" not in metadata.split("Provides-Extra")[0]  # the SDK is an extra
    assert {n.split("/")[0] for n in names} == {"observability", "langchain_confidence-0.1.0.dist-info"}
    compiled = [n for n in names if n.endswith((".c", ".so", ".pyd", ".pyi"))]
    assert compiled == [], compiled
    assert "observability/py.typed" in names


def test_the_sdist_carries_the_license(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    assert "langchain_confidence-0.1.0/LICENSE" in names


SCORE_ONE_CALL = """
import json, sys
from langchain_openai import ChatOpenAI
from observability import ConfidenceCallbackHandler

records = []
handler = ConfidenceCallbackHandler(exporters=(), on_report=records.append)
llm = ChatOpenAI(model=sys.argv[2], base_url=sys.argv[1], api_key="unused", temperature=0, max_tokens=16,
                 logprobs=True, top_logprobs=3, max_retries=0)
llm.invoke("Name one colour.", config={"callbacks": [handler]})
(record,) = records
print(json.dumps({"status": record.status, "logprobs": record.logprobs,
                  "tokens": record.report.token_count, "sum": record.report.sequence_logprob}))
"""


def test_the_wheel_scores_a_real_call_from_a_clean_virtualenv(dist: Path, tmp_path: Path,
                                                             local_model: LocalModelServer) -> None:
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    (wheel,) = dist.glob("*.whl")
    run([python, "-m", "pip", "install", "--quiet", wheel, "langchain-openai"], env=offline_pip_env())
    # A clean environment: neither the checkout nor the project's virtualenv is on its path.
    where = run([python, "-c", "import observability, sys; print(observability.__file__)"], cwd=tmp_path)
    assert str(venv) in where.stdout and str(ROOT) not in where.stdout
    result = run([python, "-c", SCORE_ONE_CALL, local_model.base_url, MODEL_NAME], cwd=tmp_path,
                 env={k: v for k, v in os.environ.items() if not k.startswith(("OBSERVABILITY_", "OTEL_"))})
    scored = json.loads(result.stdout.strip().splitlines()[-1])
    raw = raw_chat_completion(local_model.base_url, {
        "model": MODEL_NAME, "messages": [{"role": "user", "content": "Name one colour."}],
        "temperature": 0, "max_tokens": 16, "logprobs": True, "top_logprobs": 3})
    entries = raw["choices"][0]["logprobs"]["content"]
    assert scored["status"] == "ok" and scored["logprobs"] == "present"
    assert scored["tokens"] == len(entries)
    assert math.isclose(scored["sum"], math.fsum(e["logprob"] for e in entries), abs_tol=1e-9)
