"""Helpers for the deploy/ tests: paths, reading the dashboard and rules, and PromQL rewriting.

The rewriting is what lets a few minutes of real traffic exercise rules written for days of it:
``shrink`` swaps every range and offset for short ones, ``operands`` splits an alert at its
top-level set operators (``and``, ``or``, ``unless``) and ``boolify`` turns each filtering comparison
into a ``bool`` one, so "returns data" means "every series the rule reads exists and has a value",
whether or not the alert's condition holds right now.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules" / "llm-confidence.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "llm-confidence.test.yml"
CONSOLES = DEPLOY / "prometheus" / "consoles"
CONSOLE_LIBRARIES = DEPLOY / "prometheus" / "console_libraries"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "llm-confidence.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "datasources.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
COLLECTOR = DEPLOY / "otel-collector" / "config.yaml"
COMPOSE = REPO / "docker-compose.yml"
ARTIFACTS = REPO / "tests" / "artifacts"

# What Grafana substitutes before a query reaches Prometheus, for a window that covers a test's traffic.
GRAFANA_SUBSTITUTIONS = {"$__rate_interval": "10m", "$__range": "10m", "$__interval": "15s",
                         "$provider": ".*", "$model": ".*"}


def tool(name: str) -> str:
    """Path of a command-line tool the tests need; a clear failure message names the install step."""
    import pytest

    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make system-deps` (Debian packages), then retry", pytrace=False)
    return found


def run(command: list[str], timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return result


def dashboard_queries(board: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, target)`` for every PromQL query of the dashboard: panels and annotations."""
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} {panel['title']!r} {target['refId']}", target
    for annotation in board.get("annotations", {}).get("list", []):
        if "target" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["target"]


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    if "$" in expr:
        raise AssertionError(f"unknown Grafana variable left in {expr!r}")
    return expr


def rules() -> list[dict[str, Any]]:
    """Every rule of the rules file, recording and alerting, in file order."""
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recording_rules() -> dict[str, str]:
    """``{recorded series name: expression}``."""
    return {rule["record"]: rule["expr"] for rule in rules() if "record" in rule}


_DURATION = r"\d+(?:ms|[smhdwy])"


def shrink(expr: str, window: str = "10m", offset: str = "1s") -> str:
    """Every range selector becomes ``[window]`` and every offset ``offset``."""
    expr = re.sub(rf"\[\s*{_DURATION}\s*\]", f"[{window}]", expr)
    return re.sub(rf"\boffset\s+{_DURATION}", f"offset {offset}", expr)


def _scan(expr: str) -> Iterator[tuple[int, int, str]]:
    """``(index, parenthesis depth, char)`` for characters outside label matchers and strings."""
    depth = braces = 0
    quote = ""
    for index, char in enumerate(expr):
        if quote:
            if char == quote and expr[index - 1] != "\\":
                quote = ""
            continue
        if char in "\"'`":
            quote = char
        elif char == "{":
            braces += 1
        elif char == "}":
            braces -= 1
        elif not braces:
            depth += (char == "(") - (char == ")")
            yield index, depth, char


def operands(expr: str) -> list[str]:
    """Split at top-level ``and`` / ``or`` / ``unless`` (with their ``on(...)``/``ignoring(...)``)."""
    top = {index for index, depth, _ in _scan(expr) if depth == 0}
    parts, start = [], 0
    for match in re.finditer(r"\b(and|or|unless)\b(\s+(on|ignoring)\s*\([^)]*\))?", expr):
        if match.start() in top:
            parts.append(expr[start:match.start()])
            start = match.end()
    parts.append(expr[start:])
    return [part.strip() for part in parts if part.strip()]


def boolify(expr: str) -> str:
    """Add ``bool`` to every comparison outside label matchers, so it yields 0/1 instead of filtering."""
    comparisons = []
    scan = [(index, char) for index, _, char in _scan(expr) if not char.isspace()]
    for position, (index, char) in enumerate(scan):
        following = scan[position + 1][1] if position + 1 < len(scan) else ""
        previous = scan[position - 1][1] if position else ""
        if (char in "<>" and following != "=") or (char == "=" and previous in "<>=!" and previous):
            comparisons.append(index + 1)
    for index in reversed(comparisons):
        if not expr[index:].lstrip().startswith("bool"):
            expr = f"{expr[:index]} bool{expr[index:]}"
    return expr


def shrunk_rules(path: Path, window: str = "10m") -> Path:
    """Write a copy of the rules with short windows and ``for: 1s`` next to ``path``; returns ``path``."""
    document = load_yaml(RULES)
    for group in document["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["expr"] = shrink(rule["expr"], window)
            if "for" in rule:
                rule["for"] = "1s"
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return path


def prometheus_query(base_url: str, promql: str) -> list[dict[str, Any]]:
    """An instant query against a Prometheus we did not start in this process."""
    import urllib.parse
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}",
                                timeout=30) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def chromium(url: str, *, screenshot: Path | None = None, window: str = "1400,1300",
             budget_ms: int = 15000) -> str:
    """Load ``url`` in headless Chromium (fresh profile, no background traffic); the rendered DOM.

    With ``screenshot``, a PNG of the page is written there instead and the DOM is not returned.
    ``budget_ms`` of virtual time lets the page's scripts fetch and draw before the capture.
    """
    import tempfile

    binary = tool("chromium")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                   f"--user-data-dir={profile}", f"--window-size={window}", f"--virtual-time-budget={budget_ms}"]
        command += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
        result = run([*command, url], timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout
