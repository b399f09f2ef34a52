"""A second copy of the package, from an older commit, measured in the same process and rounds.

``--before TREE`` points at a directory holding an older ``observability/`` package (with its C
extension built in place, if that commit had one), e.g. the last commit with the C accelerator::

    mkdir -p /tmp/before && git archive 3668d0d observability setup.py | tar -x -C /tmp/before
    (cd /tmp/before && ../../work/main/.venv-bench/bin/python setup.py build_ext --inplace)

The harness copies that package to a scratch directory as ``observability_before``, rewriting
its own absolute imports (``from observability… import``) to the new name, and imports it next
to the current ``observability``. The two copies share LangChain, the OTel SDK and
prometheus_client; each has its own handler class, exporters and sinks. Nothing of the old tree
is written into the repository.
"""

from __future__ import annotations

import importlib
import re
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

NAME = "observability_before"
_IMPORT = re.compile(r"^(\s*)(from|import)(\s+)observability(?=[.\s])", re.M)


def load(tree: Path) -> ModuleType:
    """Import ``tree/observability`` as ``observability_before`` and return the package."""
    source = Path(tree) / "observability"
    if not (source / "__init__.py").is_file():
        raise FileNotFoundError(f"{source} is not a package directory")
    if NAME in sys.modules:
        return sys.modules[NAME]
    scratch = Path(tempfile.mkdtemp(prefix="bench-before-"))
    target = scratch / NAME
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    for path in target.rglob("*.py"):
        text = path.read_text()
        path.write_text(_IMPORT.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{NAME}", text))
    sys.path.insert(0, str(scratch))
    try:
        package = importlib.import_module(NAME)
        importlib.import_module(f"{NAME}.exporters")
    finally:
        sys.path.remove(str(scratch))
    return package


def describe(package: ModuleType) -> str:
    """Whether the old copy's scoring sums run in C (its ``_speedups`` extension loaded)."""
    score = sys.modules.get(f"{package.__name__}._score")
    speedups = getattr(score, "_speedups", None) if score is not None else None
    return "C accelerator loaded" if speedups is not None else "no C accelerator (pure Python)"
