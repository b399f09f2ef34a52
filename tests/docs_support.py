"""Reading the README and docs/*.md: marked sections and their code blocks, for the tests that
run the documentation's examples as pasted."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def section(path: Path, name: str) -> str:
    """The text between ``<!-- section:NAME -->`` and ``<!-- /section:NAME -->`` (exactly one pair)."""
    text = path.read_text(encoding="utf-8")
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    assert text.count(start) == 1 and text.count(end) == 1, f"{path.name}: section {name!r} must be marked once"
    return text.split(start, 1)[1].split(end, 1)[0]


def code_blocks(text: str, language: str) -> list[str]:
    """The bodies of the fenced code blocks of ``language`` (```python …```), in order."""
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)
