"""Check that imports inside the package point one way and form no cycle.

    python -m tools.check_imports        # exit 1 and one line per problem, or "imports ok"

The rooms and what each may import (docs/development.md has the map):

    core        the standard library only
    exporters   core (and OpenTelemetry, prometheus_client)
    langchain   core, exporters (and langchain-core)
    report      core, exporters            evaluation   core, exporters
    attach      core, exporters, langchain
    cli, demo   anything in the package; nothing but the command line imports them

Every import counts, also one inside a function: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "observability"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# room → rooms it may import (its own room always allowed). Top-level modules are rooms of their own.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "exporters": {"core"},
    "langchain": {"core", "exporters"},
    "report": {"core", "exporters"},
    "evaluation": {"core", "exporters"},
    "testing": {"core", "exporters", "langchain"},
    "attach": {"core", "exporters", "langchain"},
    "instrumentation": {"attach"},
    "__init__": {"core", "exporters", "langchain", "attach"},
    "demo": {"core", "exporters", "langchain", "attach", "report", "evaluation"},
    "cli": {"core", "exporters", "langchain", "attach", "report", "evaluation", "demo"},
    "__main__": {"cli"},
}
STDLIB_ONLY = {"core"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def room(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def imports(path: Path, module: str, root: Path) -> Iterator[str]:
    """Every module ``path`` imports, absolute, with ``from package import module`` resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            for alias in node.names:  # `from observability.langchain import handler` names a module
                candidate = f"{base}.{alias.name}"
                if (root.parent / candidate.replace(".", "/")).with_suffix(".py").exists():
                    yield candidate


def problems(root: Path = ROOT) -> list[str]:
    """One line per import against the direction, per core import outside the standard library,
    and per cycle, in the package at ``root``."""
    graph: dict[str, set[str]] = {}
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        graph[module] = set()
        for target in imports(path, module, root):
            top = target.split(".")[0]
            if top != PACKAGE:
                if room(module) in STDLIB_ONLY and top not in sys.stdlib_module_names and top != "__future__":
                    found.append(f"{module} imports {target}: the core uses the standard library only")
                continue
            if module.startswith(f"{target}."):  # a module's own package is being imported already
                continue
            graph[module].add(target)
            source, goal = room(module), room(target)
            if goal != source and goal not in ALLOWED.get(source, set()):
                found.append(f"{module} imports {target}: {source} may import only {sorted(ALLOWED.get(source, ()))}")
    found.extend(f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    if not found:
        print("imports ok")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
