"""``python -m observability doctor``: the zero-code configuration of this environment, checked.

Prints what each ``OBSERVABILITY_*`` variable holds and means, and every problem activation
would log (the same messages), also for the parts activation starts: the logprobs patch
(langchain-openai present, its private methods as the patch expects) and the ``/metrics`` port
(free on its address). Exit code 0 when nothing is wrong, 1 otherwise, for CI jobs that want to
fail fast. It reads the environment and binds the port for a moment; it attaches nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TextIO

from observability._attach import DOCTOR_HINT, config_problem_message, logprobs_patch_problem, metrics_server_problem
from observability._config import (
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
            from observability import _enable_logprobs

            try:
                _enable_logprobs.base_class()
            except Exception as exc:
                problems.append(logprobs_patch_problem(exc))
        if config.prometheus_port is not None:
            from observability._process import port_in_use

            if port_in_use(config.prometheus_port, config.prometheus_host):
                problems.append((logging.ERROR, metrics_server_problem(
                    config, "the port is in use or the address is not one of this host's")))
    return config, problems


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
    if activation != "off":
        metrics = f"{config.prometheus_host}:{config.prometheus_port}" if config.prometheus_port else "off"
        calibration = config.calibration
        calibrated = (f"on ({calibration.metric}, {calibration.method}, {calibration.labels} labels)"
                      if calibration is not None else _no_calibration(env))
        out.write(f"in effect: threshold {config.low_confidence_threshold}, metadata labels "
                  f"{list(config.metadata_labels)}, run-tree spans {'on' if config.trace_run_tree else 'off'}, "
                  f"logprobs patch {f'on (top {config.top_logprobs})' if config.enable_logprobs else 'off'}, "
                  f"/metrics {metrics}, calibration {calibrated}\n")
    for level, message in problems:
        text = message.removeprefix("observability: ").removesuffix(DOCTOR_HINT)
        out.write(f"{logging.getLevelName(level).lower()}: {text}\n")
    out.write("no problems found\n" if not problems else f"{len(problems)} problem(s) found\n")
    return 1 if problems else 0


def _no_calibration(env: Mapping[str, str]) -> str:
    if env.get(OBSERVABILITY_CALIBRATION, "").strip():
        return f"off ({OBSERVABILITY_CALIBRATION} is set but unusable: see the error below)"
    return "off"
