"""The README stays a five-minute read and the docs hold together: every relative link (and
#anchor) in README.md and docs/*.md points at something that exists, every docs page is linked
from the README, and every metric the exporters define is in the metrics reference. No server."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

from observability.exporters import DEFAULT_PREFIX, HISTOGRAMS
from tests.docs_support import DOCS, README, ROOT

PAGES = [README, *sorted(DOCS.glob("*.md"))]
# [text](target) and ![alt](target), outside code; the target ends at whitespace or ")".
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", flags=re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def prose(text: str) -> str:
    """``text`` without fenced blocks and inline code, where brackets are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page.read_text(encoding="utf-8")))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]{1,2}(?=\S)|(?<=\S)[`*_]{1,2}", lambda m: "_" if m.group() == "_" else "", heading)
    text = "".join(c for c in text.strip().lower()
                   if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    found: set[str] = set()
    counts: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.MULTILINE):
        base = slug(heading)
        n = counts.get(base, 0)
        counts[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    found.update(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", text))
    return found


def relative(target: str) -> bool:
    return not re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.IGNORECASE) and not target.startswith("//")


def test_slug_follows_github() -> None:
    assert slug("2. Wrap a block: `observe_confidence()`") == "2-wrap-a-block-observe_confidence"
    assert slug('"Turn logprobs on" (opt-in): exactly what is patched') == \
        "turn-logprobs-on-opt-in-exactly-what-is-patched"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if not relative(target):
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and unquote(fragment) not in anchors(resolved):
            broken.append(f"{target}: no heading #{fragment} in {resolved.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_link_finder_sees_links_and_skips_code() -> None:
    sample = "see [a](docs/a.md#x) and ![img](b.png) but not `[c](d.md)`\n```\n[e](f.md)\n```\n"
    assert LINK.findall(prose(sample)) == ["docs/a.md#x", "b.png"]


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(README) if relative(t)}
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


def test_the_readme_is_a_five_minute_read() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    assert "make demo" in text and "make test" in text  # the CI hook looks for both
    # The README speaks to users: no project bookkeeping.
    assert not re.search(r"\b(issues?|targets?|TODO)\b", prose(text), flags=re.IGNORECASE)


def test_every_metric_is_in_the_metrics_reference() -> None:
    reference = (DOCS / "metrics.md").read_text(encoding="utf-8")
    names = [f"{DEFAULT_PREFIX}_responses_total", f"{DEFAULT_PREFIX}.responses"]
    for definition in HISTOGRAMS:
        otel_name = (definition.otel_instrument_name(DEFAULT_PREFIX) if hasattr(definition, "otel_instrument_name")
                     else f"{DEFAULT_PREFIX}.{definition.otel_name}")  # a conventions metric keeps its own name
        names += [f"{DEFAULT_PREFIX}_{definition.name}", otel_name]
    rows = [line for line in reference.splitlines() if line.startswith("|")]
    missing = [name for name in names if not any(f"`{name}`" in row for row in rows)]
    assert not missing, f"metrics missing from the table in docs/metrics.md: {missing}"
