"""The README's links, which the strict MkDocs build (docs/ only) does not see, and every
external URL in the docs.

Relative links in README.md must name a file of the repository, and an
``#anchor`` a heading of that file (GitHub's slugs). External URLs cannot be
fetched here (CI has no network): each must at least parse as an http(s) URL
with a host, so a typo in a scheme or a stray character is caught.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, ROOT / "mkdocs.yml", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
URL = re.compile(r"https?://[^\s)>\]`'\"]+")
FENCE = re.compile(r"^ *(`{3,}|~{3,}).*?^ *\1", re.M | re.S)
HEADING = re.compile(r"^#{1,6} +(?P<title>.+?) *$", re.M)


def github_slug(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", title.replace("`", "").lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {github_slug(m["title"]) for m in HEADING.finditer(prose)}


def test_github_slugs_as_github_makes_them() -> None:
    assert github_slug("Retries: `Idempotency-Key`") == "retries-idempotency-key"
    assert github_slug("`tether serve`") == "tether-serve"
    assert github_slug("Use tether as a gateway: OpenAI's and Anthropic's APIs") == (
        "use-tether-as-a-gateway-openais-and-anthropics-apis"
    )


def test_the_readme_links_to_files_and_headings_that_exist() -> None:
    prose = FENCE.sub("", README.read_text(encoding="utf-8"))
    broken = []
    for m in LINK.finditer(prose):
        target = m["target"]
        if urlsplit(target).scheme:
            continue
        file, _, anchor = target.partition("#")
        path = (README.parent / file) if file else README
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no such heading")
    assert broken == []


def test_every_external_url_parses() -> None:
    bad = []
    for page in PAGES:
        for url in URL.findall(page.read_text(encoding="utf-8")):
            parts = urlsplit(url.rstrip(".,:;"))
            host = parts.hostname or ""
            if parts.scheme not in ("http", "https") or not ("." in host or host == "localhost"):
                bad.append(f"{page.name}: {url}")
    assert bad == []
