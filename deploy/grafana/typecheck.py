"""Type-check a dashboard JSON against Grafana's own schema: ``@grafana/schema`` with ``tsc``.

``python deploy/grafana/typecheck.py [DASHBOARD.json]`` (default: dashboards/llm-confidence.json)
exits with tsc's status and prints its errors. Needs ``npm ci`` in deploy/grafana first (``make
grafana-schema``): the versions are pinned in package.json / package-lock.json to the Grafana release
docker-compose.yml runs.

How: the JSON is written into a TypeScript file as object literals with declared types, so tsc
applies its strictest checks — missing required fields, wrong value types, and excess property
checks (a misspelt key is an error). The whole dashboard is checked as ``Dashboard`` (annotation
queries as Prometheus queries, which the schema leaves as a bare ``DataQuery``); because the
schema types panel ``options`` and ``fieldConfig.defaults.custom`` only as ``Record<string,
unknown>``, each panel's options and custom field config are also checked against its plugin's own
``Options`` / ``FieldConfig`` types. String enums in the schema (``"line"`` for
``GraphDrawStyle.Line``) are accepted as their string values, the form JSON has.

Standard library only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NODE_MODULES = HERE / "node_modules"
SCHEMA_TYPES = NODE_MODULES / "@grafana" / "schema" / "dist" / "types"
TSC = NODE_MODULES / "typescript" / "bin" / "tsc"
DEFAULT_DASHBOARD = HERE / "dashboards" / "llm-confidence.json"

PANEL_TYPES = {
    # panel type: (module under raw/composable, its types file)
    "timeseries": "timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen",
    "stat": "stat/panelcfg/x/StatPanelCfg_types.gen",
    "heatmap": "heatmap/panelcfg/x/HeatmapPanelCfg_types.gen",
    "table": "table/panelcfg/x/TablePanelCfg_types.gen",
    "bargauge": "bargauge/panelcfg/x/BarGaugePanelCfg_types.gen",
}
"""Panel plugins whose option types are checked; a dashboard using another type is refused."""

_PRELUDE = """\
import type { AnnotationQuery, Dashboard, DataQuery } from '@grafana/schema';
{imports}

// The schema types an annotation's query as the bare DataQuery; a Prometheus one also has these
// fields (Grafana's Prometheus data source reads them from annotation.target).
interface PrometheusAnnotationTarget extends DataQuery {
  expr: string;
  titleFormat?: string;
  textFormat?: string;
  tagKeys?: string;
  step?: string;
  useValueForTime?: boolean;
}
type CheckedDashboard = Omit<Dashboard, 'annotations'> & {
  annotations?: { list?: Array<AnnotationQuery<PrometheusAnnotationTarget>> };
};

// JSON form of a schema type: string enums become their string values; everything else as declared.
type Json<T> = unknown extends T ? T
  : T extends string ? `${T}`
  : T extends number | boolean | null | undefined ? T
  : { [K in keyof T]: Json<T[K]> };

"""


class SchemaCheckError(RuntimeError):
    """The checker itself cannot run (tools not installed, unknown panel type)."""


def typescript_source(dashboard: dict[str, Any]) -> str:
    """The TypeScript file that declares the dashboard and each panel's options with their schema types."""
    used = sorted({panel.get("type", "") for panel in dashboard.get("panels", [])})
    unknown = [kind for kind in used if kind not in PANEL_TYPES]
    if unknown:
        raise SchemaCheckError(f"no option types known for panel type(s) {unknown}; add them to PANEL_TYPES")
    imports = "\n".join(f"import type * as {kind} from '@grafana/schema/dist/types/raw/composable/{PANEL_TYPES[kind]}';"
                        for kind in used)
    lines = [_PRELUDE.replace("{imports}", imports),
             f"export const dashboard: Json<CheckedDashboard> = {json.dumps(dashboard, indent=2)};\n"]
    for panel in dashboard.get("panels", []):
        kind, number = panel["type"], panel.get("id")
        lines.append(f"// panel {number}: {panel.get('title', '')!r}")
        lines.append(f"export const panel{number}Options: Json<{kind}.Options> = "
                     f"{json.dumps(panel.get('options', {}), indent=2)};")
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is not None and kind != "stat":  # stat has no custom field config
            lines.append(f"export const panel{number}Custom: Json<{kind}.FieldConfig> = "
                         f"{json.dumps(custom, indent=2)};")
        lines.append("")
    return "\n".join(lines)


def tsconfig() -> dict[str, Any]:
    return {
        "compilerOptions": {
            "strict": True,
            "noEmit": True,
            "target": "ES2022",
            "module": "ESNext",
            "moduleResolution": "Bundler",
            "skipLibCheck": False,
            "types": [],
            "baseUrl": str(HERE),
            "paths": {
                "@grafana/schema": [str(SCHEMA_TYPES / "index.d.ts")],
                "@grafana/schema/*": [str(NODE_MODULES / "@grafana" / "schema" / "*")],
                "tslib": [str(NODE_MODULES / "tslib" / "tslib.d.ts")],
            },
        },
        "files": ["dashboard.check.ts"],
    }


def typecheck(dashboard: dict[str, Any], node: str = "node") -> subprocess.CompletedProcess[str]:
    """Run tsc on the dashboard; the completed process (returncode 0 = valid), output in stdout."""
    if not TSC.is_file() or not SCHEMA_TYPES.is_dir():
        raise SchemaCheckError(f"{TSC} or @grafana/schema missing: run `npm ci --prefix {HERE}` "
                               "(or `make grafana-schema`)")
    with tempfile.TemporaryDirectory(prefix="grafana-schema-") as folder:
        work = Path(folder)
        (work / "dashboard.check.ts").write_text(typescript_source(dashboard), encoding="utf-8")
        (work / "tsconfig.json").write_text(json.dumps(tsconfig(), indent=2), encoding="utf-8")
        return subprocess.run([node, str(TSC), "-p", str(work / "tsconfig.json"), "--pretty", "false"],
                              capture_output=True, text=True, timeout=300, cwd=work)


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else DEFAULT_DASHBOARD
    result = typecheck(json.loads(path.read_text(encoding="utf-8")))
    print(result.stdout + result.stderr, end="")
    if result.returncode == 0:
        print(f"{path}: valid against @grafana/schema")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
