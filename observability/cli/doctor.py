"""``python -m observability doctor``: the zero-code configuration of this environment, checked.

Prints what each ``OBSERVABILITY_*`` variable holds and means, and every problem activation
would log (the same messages), also for the parts activation starts: the logprobs patch
(langchain-openai present, its private methods as the patch expects) and the ``/metrics`` port
(free on its address). It also checks that the model endpoint the openai client would use
(``OPENAI_BASE_URL``; OpenAI itself when only ``OPENAI_API_KEY`` is set) answers at all: one
``GET /models`` with a short timeout, no credentials and no content sent, any HTTP answer counts.
Exit code 0 when nothing is wrong, 1 otherwise, for CI jobs that want to fail fast. It reads the
environment and binds the port for a moment; it attaches nothing and calls no model.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import TextIO

from observability.attach.activation import (
    DOCTOR_HINT,
    config_problem_message,
    logprobs_patch_problem,
    metrics_server_problem,
)
from observability.attach.config import (
    OBSERVABILITY_CALIBRATION,
    OBSERVABILITY_LANGCHAIN,
    VARIABLES,
    AttachConfig,
    read_activation,
    read_env,
)

_MEANING = {
    "on": "attaches to every LangChain run on `import observability`",
    "off": "never attaches process-wide (opentelemetry-instrument does nothing either)",
    "auto": "attaches only under opentelemetry-instrument",
}


def diagnose(environ: Mapping[str, str] | None = None) -> tuple[AttachConfig, list[tuple[int, str]]]:
    """The configuration activation would use and every (level, message) it would log."""
    env = os.environ if environ is None else environ
    problems: list[tuple[int, str]] = []
    activation, bad_activation = read_activation(env)
    reading = read_env(env)
    problems.extend((logging.ERROR, config_problem_message(p)) for p in reading.problems)
    config = reading.config
    if bad_activation is None and activation != "off" and not reading.fatal:
        if config.enable_logprobs:
            from observability.langchain import enable_logprobs as _enable_logprobs

            try:
                _enable_logprobs.base_class()
            except Exception as exc:
                problems.append(logprobs_patch_problem(exc))
        if config.prometheus_port is not None:
            from observability.demo.process import port_in_use

            if port_in_use(config.prometheus_port, config.prometheus_host):
                problems.append((logging.ERROR, metrics_server_problem(
                    config, "the port is in use or the address is not one of this host's")))
    return config, problems


OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
ENDPOINT_TIMEOUT_S = 3.0


def check_endpoint(env: Mapping[str, str]) -> tuple[str, tuple[int, str] | None]:
    """The line about the model endpoint, and its problem (level, message) when it does not answer.

    Sends ``GET {base}/models`` without credentials or content: any HTTP status (401 included)
    means something answers there. Names the URL scrubbed (no user, password or query) and the
    failure by type only."""
    from observability.langchain.enable_logprobs import scrub_url

    base = (env.get("OPENAI_BASE_URL") or "").strip().rstrip("/")
    if not base:
        if not (env.get("OPENAI_API_KEY") or "").strip():
            return "model endpoint: not checked (set OPENAI_BASE_URL, or OPENAI_API_KEY for OpenAI)", None
        base = OPENAI_DEFAULT_BASE_URL
    shown = scrub_url(base)
    if not base.startswith(("http://", "https://")):
        return f"model endpoint: {shown}", (logging.ERROR, f"OPENAI_BASE_URL={shown!r} is not an http(s) URL: "
                                                           "use e.g. http://127.0.0.1:8080/v1")
    try:
        # to the scrubbed URL: no user or password in the request either
        with urllib.request.urlopen(f"{shown.rstrip('/')}/models", timeout=ENDPOINT_TIMEOUT_S) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"model endpoint: {shown}", (
            logging.ERROR, f"the model endpoint {shown} does not answer (GET /models: "
                           f"{type(reason).__name__}, {ENDPOINT_TIMEOUT_S:g} s timeout): check OPENAI_BASE_URL and "
                           "that the server runs and listens there")
    return f"model endpoint: {shown} answers (GET /models: HTTP {status}; nothing sent but the request)", None


def run_doctor(out: TextIO, environ: Mapping[str, str] | None = None) -> int:
    """Print the diagnosis; return 0 when nothing is wrong, else 1."""
    env = os.environ if environ is None else environ
    config, problems = diagnose(env)
    out.write("observability configuration (docs/configuration.md lists every variable):\n")
    width = max(len(name) for name in VARIABLES)
    for name in VARIABLES:
        raw = env.get(name)
        shown = "(unset)" if raw is None or not raw.strip() else repr(raw if len(raw) <= 60 else raw[:57] + "...")
        out.write(f"  {name:<{width}}  {shown}\n")
    activation = read_activation(env)[0]
    out.write(f"activation: {activation} ({OBSERVABILITY_LANGCHAIN}): {_MEANING[activation]}\n")
    if activation != "off" and read_env(env).fatal:
        out.write("in effect: nothing: the handler is not attached (the error below says why)\n")
    elif activation != "off":
        metrics = f"{config.prometheus_host}:{config.prometheus_port}" if config.prometheus_port else "off"
        calibration = config.calibration
        calibrated = (f"on ({calibration.metric}, {calibration.method}, {calibration.labels} labels)"
                      if calibration is not None else _no_calibration(env))
        out.write(f"in effect: threshold {config.low_confidence_threshold}, metadata labels "
                  f"{list(config.metadata_labels)}, run-tree spans {'on' if config.trace_run_tree else 'off'}, "
                  f"logprobs patch {f'on (top {config.top_logprobs})' if config.enable_logprobs else 'off'}, "
                  f"/metrics {metrics}, calibration {calibrated}\n")
    endpoint, unreachable = check_endpoint(env)
    out.write(endpoint + "\n")
    if unreachable is not None:
        problems = [*problems, unreachable]
    for level, message in problems:
        text = message.removeprefix("observability: ").removesuffix(DOCTOR_HINT)
        out.write(f"{logging.getLevelName(level).lower()}: {text}\n")
    out.write("no problems found\n" if not problems else f"{len(problems)} problem(s) found\n")
    return 1 if problems else 0


def _no_calibration(env: Mapping[str, str]) -> str:
    if env.get(OBSERVABILITY_CALIBRATION, "").strip():
        return f"off ({OBSERVABILITY_CALIBRATION} is set but unusable: see the error below)"
    return "off"
