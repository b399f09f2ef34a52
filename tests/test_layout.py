"""The package's rooms: imports point one way (tools/check_imports.py), the top level stays small,
names that moved still import, with a warning, and one response walks downhill, entering each module once
(tools/walk.py)."""

from __future__ import annotations

import shutil
import types
import warnings
from pathlib import Path
from typing import Any

import pytest

import observability
from observability.exporters import _otel_spans
from observability.exporters._otel_spans import OpenTelemetryTracingExporter
from observability.langchain import peers
from tools import check_imports, walk


def test_the_package_imports_point_one_way_without_cycles() -> None:
    assert check_imports.problems() == []


def test_one_response_walks_through_the_core_once() -> None:
    """Issue 26: the handler calls the core once (``score``), which reads (``extract``), locates
    (``text``: the text, the spans' edges, every token's range for a JSON answer) and scores the
    fields (``fields``), each entered once; no core module calls back into another."""
    stops = walk.walk_on_llm_end().stops
    core = [(caller.removeprefix("observability."), callee.removeprefix("observability."))
            for caller, callee in stops if callee.startswith("observability.core.")
            and caller.startswith(("observability.core.", "observability.langchain.handler"))]
    assert core == [("langchain.handler", "core.score"), ("core.score", "core.extract"), ("core.score", "core.text"),
                    ("core.score", "core.fields")]


def test_one_json_answer_enters_each_module_once_and_never_climbs() -> None:
    result = walk.walk_on_llm_end()
    callees = [callee for _, callee in result.stops]
    assert result.climbs == 0, result.stops
    assert result.reentries == 0, result.stops
    assert len(callees) == len(set(callees)), result.stops
    # the stages, in the order the data goes: read, score, export
    for earlier, later in [("observability.langchain.payload", "observability.core.score"),
                           ("observability.core.score", "observability.exporters._otel_spans"),
                           ("observability.exporters._otel_spans", "observability.exporters._prometheus")]:
        assert callees.index(earlier) < callees.index(later)


def test_the_walk_sees_an_exporter_that_calls_back_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # The check can fail: an exporter that asks the LangChain layer for peers at export time climbs.
    export, find_records = OpenTelemetryTracingExporter.export, peers.find_records

    def climbing_export(self: OpenTelemetryTracingExporter, records: Any) -> None:
        find_records(records[0].start.run_id)
        export(self, records)

    # the function runs as the exporter module's own code (the walk tells modules by their globals)
    as_exporter = types.FunctionType(climbing_export.__code__, vars(_otel_spans), "export", None,
                                     climbing_export.__closure__)
    monkeypatch.setattr(OpenTelemetryTracingExporter, "export", as_exporter)
    result = walk.walk_on_llm_end()
    assert result.climbs >= 1


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    root = tmp_path / "observability"
    shutil.copytree(check_imports.ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    assert check_imports.problems(root) == []
    return root


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


@pytest.mark.parametrize(("module", "line", "expected"), [
    pytest.param("core/score.py", "from observability.langchain import handler", "core may import only []",
                 id="core-climbs-to-langchain"),
    pytest.param("exporters/_prometheus.py", "def later():\n    from observability.attach import config",
                 "exporters may import only ['core']", id="lazy-import-counts"),
    pytest.param("core/text.py", "import opentelemetry.trace", "the core uses the standard library only",
                 id="core-imports-a-third-party"),
    pytest.param("langchain/handler.py", "from observability.demo import progress", "langchain may import only",
                 id="library-imports-the-demo"),
    pytest.param("core/types.py", "from observability.core import score", "import cycle:", id="cycle"),
])
def test_the_check_catches(package_copy: Path, module: str, line: str, expected: str) -> None:
    _append(package_copy / module, line)
    found = check_imports.problems(package_copy)
    assert any(expected in problem for problem in found), found


def test_the_top_level_is_what_an_app_uses() -> None:
    assert len(observability.__all__) <= 15
    for name in observability.__all__:
        assert getattr(observability, name) is not None


@pytest.mark.parametrize("name", ["Exporter", "JsonlRecorder", "OpenTelemetryMetricsExporter",
                                  "OpenTelemetryTracingExporter", "PrometheusExporter", "default_exporters"])
def test_a_moved_name_still_imports_with_a_warning_naming_its_home(name: str) -> None:
    import observability.exporters

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = getattr(observability, name)
    assert value is getattr(observability.exporters, name)
    assert [w.category for w in caught] == [DeprecationWarning]
    assert "observability.exporters" in str(caught[0].message)


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = observability.no_such_name
