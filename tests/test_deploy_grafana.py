"""The Grafana dashboard and provisioning, checked without a Grafana server.

The dashboard JSON is type-checked with ``tsc`` against ``@grafana/schema`` of the Grafana version
docker-compose.yml pins (deploy/grafana/typecheck.py says how); broken copies must fail that check.
The rest checks references: data source uids, variables, exemplar links, layout.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from tests.deploy_support import (
    COMPOSE,
    DASHBOARD,
    DASHBOARD_PROVIDERS,
    DATASOURCES,
    GRAFANA,
    dashboard,
    dashboard_queries,
    load_yaml,
    run,
    tool,
)

GRAFANA_BUILTINS = {"__rate_interval", "__range", "__interval"}


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"deploy_grafana_{name}", GRAFANA / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def typecheck() -> Callable[[dict[str, Any]], Any]:
    checker = _module("typecheck")
    node = tool("node")

    def check(board: dict[str, Any]) -> Any:
        try:
            return checker.typecheck(board, node=node)
        except checker.SchemaCheckError as exc:
            pytest.fail(str(exc), pytrace=False)

    return check


def test_committed_dashboard_is_what_the_generator_builds() -> None:
    result = run([sys.executable, str(GRAFANA / "dashboard.py"), "--check"])
    assert result.returncode == 0, result.stderr


@pytest.mark.system_tools
def test_dashboard_matches_grafana_schema(typecheck: Callable[[dict[str, Any]], Any]) -> None:
    result = typecheck(dashboard())
    assert result.returncode == 0, result.stdout + result.stderr


def _misspelt_key(board: dict[str, Any]) -> None:
    board["panels"][5]["fieldConfig"]["defaults"]["unitt"] = "s"


def _unknown_draw_style(board: dict[str, Any]) -> None:
    board["panels"][5]["fieldConfig"]["defaults"]["custom"]["drawStyle"] = "lines"


def _bad_heatmap_scale(board: dict[str, Any]) -> None:
    next(p for p in board["panels"] if p["type"] == "heatmap")["options"]["color"]["scale"] = "log"


def _missing_schema_version(board: dict[str, Any]) -> None:
    del board["schemaVersion"]


def _grid_width_as_text(board: dict[str, Any]) -> None:
    board["panels"][0]["gridPos"]["w"] = "4"


@pytest.mark.system_tools
@pytest.mark.parametrize("breakage", [_misspelt_key, _unknown_draw_style, _bad_heatmap_scale,
                                      _missing_schema_version, _grid_width_as_text],
                         ids=lambda f: f.__name__.strip("_"))
def test_schema_check_rejects_a_broken_dashboard(typecheck: Callable[[dict[str, Any]], Any],
                                                 breakage: Callable[[dict[str, Any]], None]) -> None:
    board = copy.deepcopy(dashboard())
    breakage(board)
    result = typecheck(board)
    assert result.returncode != 0
    assert "error TS" in result.stdout


def test_pinned_versions_agree_and_the_lock_file_only_uses_the_npm_registry() -> None:
    package = json.loads((GRAFANA / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((GRAFANA / "package-lock.json").read_text(encoding="utf-8"))
    grafana_version = _module("dashboard").GRAFANA_VERSION
    assert package["devDependencies"]["@grafana/schema"] == grafana_version
    assert f"image: grafana/grafana:{grafana_version}\n" in COMPOSE.read_text(encoding="utf-8")
    packages = {path: entry for path, entry in lock["packages"].items() if path}
    assert packages["node_modules/@grafana/schema"]["version"] == grafana_version
    assert packages["node_modules/typescript"]["version"] == package["devDependencies"]["typescript"]
    for path, entry in packages.items():
        assert entry["integrity"].startswith("sha512-"), path
        resolved = entry.get("resolved")
        assert resolved is None or resolved.startswith("https://registry.npmjs.org/"), (path, resolved)
        assert "link" not in entry, path


# ---- references -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def datasources() -> dict[str, dict[str, Any]]:
    entries = load_yaml(DATASOURCES)["datasources"]
    uids = [entry["uid"] for entry in entries]
    assert len(uids) == len(set(uids))
    return {entry["uid"]: entry for entry in entries}


def _datasource_refs(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        found = [node["datasource"]] if isinstance(node.get("datasource"), dict) else []
        return found + [ref for value in node.values() for ref in _datasource_refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _datasource_refs(value)]
    return []


def test_every_datasource_reference_is_provisioned(datasources: dict[str, dict[str, Any]]) -> None:
    refs = _datasource_refs(dashboard())
    assert len(refs) > 20
    for ref in refs:
        assert ref["uid"] in datasources, ref
        assert ref["type"] == datasources[ref["uid"]]["type"], ref


def test_exemplars_link_to_the_provisioned_trace_store(datasources: dict[str, dict[str, Any]]) -> None:
    destinations = datasources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert destinations == [{"name": "trace_id", "datasourceUid": "jaeger"}]  # the exporters' exemplar label
    assert datasources["jaeger"]["type"] == "jaeger"
    assert datasources["prometheus"]["url"] == "http://prometheus:9090"
    assert datasources["jaeger"]["url"] == "http://jaeger:16686"
    # the confidence panels ask for exemplars
    board = dashboard()
    for title in ("Sequence probability (p10 / p50 / p90)", "Min token probability (p10 / p50 / p90)",
                  "Low-confidence ratio", "Sequence probability distribution"):
        panel = next(p for p in board["panels"] if p["title"] == title)
        assert any(target["exemplar"] for target in panel["targets"]), title


def test_queries_use_only_defined_variables_and_filter_by_provider_and_model() -> None:
    board = dashboard()
    defined = {variable["name"] for variable in board["templating"]["list"]}
    assert defined == {"provider", "model"}
    for where, target in dashboard_queries(board):
        used = set(re.findall(r"\$(\w+)", target["expr"]))
        assert used <= defined | GRAFANA_BUILTINS, (where, used)
        if where.startswith("panel"):
            assert {"provider", "model"} <= used, f"{where} ignores the provider/model variables"


def test_panel_ids_are_unique_and_the_grid_has_no_overlap() -> None:
    panels = dashboard()["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]


def test_the_panels_the_issue_asks_for_are_there() -> None:
    board = dashboard()
    by_title = {panel["title"]: panel for panel in board["panels"]}
    exprs = " ".join(target["expr"] for panel in board["panels"] for target in panel["targets"])
    assert "sum by (status)" in by_title["Response rate by status"]["targets"][0]["expr"]
    assert "sum by (logprobs)" in by_title["Response rate by logprobs status"]["targets"][0]["expr"]
    missing = by_title["Responses without logprobs"]
    assert missing["options"]["colorMode"] == "background"  # shown loudly: red as soon as it is above zero
    assert missing["fieldConfig"]["defaults"]["thresholds"]["steps"][1] == {"value": 0.001, "color": "red"}
    for metric in ("llm_response_sequence_probability", "llm_response_min_token_probability"):
        for quantile in ("0.1", "0.5", "0.9"):
            assert f"histogram_quantile({quantile}, sum by (le) (rate({metric}_bucket" in exprs
    heatmap = by_title["Sequence probability distribution"]
    assert heatmap["type"] == "heatmap" and heatmap["targets"][0]["format"] == "heatmap"
    assert "llm_response_sequence_probability_bucket" in heatmap["targets"][0]["expr"]
    assert "llm_response_low_confidence_ratio" in exprs and "llm_time_to_first_token_seconds_bucket" in exprs
    assert by_title["Per-model comparison"]["type"] == "table"
    assert all("by (model" in t["expr"] for t in by_title["Per-model comparison"]["targets"])
    reliability = by_title["Accuracy per confidence bucket"]  # the live reliability diagram
    assert reliability["type"] == "table"
    queries = {target["refId"]: target["expr"] for target in reliability["targets"]}
    assert all("sum by (confidence) (increase(llm_feedback_total{" in expr and 'confidence!="none"' in expr
               for expr in queries.values())
    assert 'outcome="correct"' in queries["A"]
    for tenth in range(10):  # the expected accuracy of each bucket is its midpoint
        assert f'vector({tenth / 10 + 0.05:.2f}), "confidence", "{tenth / 10:.1f}"' in queries["B"]


def test_dashboard_provider_loads_the_mounted_folder() -> None:
    provider = load_yaml(DASHBOARD_PROVIDERS)["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in COMPOSE.read_text(encoding="utf-8")
    assert DASHBOARD.parent.name == "dashboards"
