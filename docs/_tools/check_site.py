"""Check a built site: every internal link, image and script resolves, navigation included.

    python docs/_tools/check_site.py site/

``mkdocs build --strict`` already checks the links written in the Markdown pages; this
checks the HTML that came out of it, theme included: the navigation (tabs, sidebar,
previous/next), the API reference's cross-references, the images the hooks copied from
``results/``, and ``#fragment`` targets. Standard library only, so CI runs it without a
browser. Exit status 1 and one line per broken link if anything does not resolve.
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

LINK_ATTRS = {("a", "href"), ("img", "src"), ("link", "href"), ("script", "src"), ("source", "src")}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str, bool]] = []  # (tag, url, inside a nav element)
        self.ids: set[str] = set()
        self._nav_depth = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "nav":
            self._nav_depth += 1
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        for t, attr in LINK_ATTRS:
            if tag == t and a.get(attr):
                self.links.append((tag, a[attr], self._nav_depth > 0))

    def handle_endtag(self, tag):
        if tag == "nav" and self._nav_depth:
            self._nav_depth -= 1


def _target(site: Path, page: Path, url: str) -> tuple[Path, str] | None:
    """The file a relative URL points to, and its fragment; None for external URLs."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or url.startswith(("mailto:", "javascript:", "data:")):
        return None
    path = unquote(parts.path)
    if not path:
        return page, parts.fragment
    base = site if path.startswith("/") else page.parent
    target = (base / path.lstrip("/")).resolve()
    if target.is_dir() or path.endswith("/"):
        target = target / "index.html"
    return target, parts.fragment


def check_site(site: Path) -> tuple[list[str], dict[str, int]]:
    """Return (problems, counts) for the built site in ``site``."""
    site = site.resolve()
    pages = sorted(site.rglob("*.html"))
    parsed: dict[Path, _Page] = {}
    for page in pages:
        p = _Page()
        p.feed(page.read_text(encoding="utf-8"))
        parsed[page] = p
    problems: list[str] = []
    counts = {"pages": len(pages), "links": 0, "nav_links": 0}
    for page, p in parsed.items():
        if page.name == "404.html":
            continue  # its links are written for the site root, wherever it is served
        for tag, url, in_nav in p.links:
            t = _target(site, page, url)
            if t is None:
                continue
            counts["links"] += 1
            counts["nav_links"] += in_nav
            target, fragment = t
            where = f"{page.relative_to(site)}: <{tag}> {url}"
            if not target.is_file():
                problems.append(f"{where}: no such file {target}")
                continue
            if fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else set()
                if fragment not in ids:
                    problems.append(f"{where}: no id {fragment!r} in {target.relative_to(site)}")
    return problems, counts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    site = Path(argv[0] if argv else "site")
    if not (site / "index.html").is_file():
        print(
            f"check_site: {site} has no index.html; build it with `mkdocs build`", file=sys.stderr
        )
        return 1
    problems, counts = check_site(site)
    for line in problems:
        print(line, file=sys.stderr)
    status = "FAILED" if problems else "ok"
    print(
        f"check_site: {counts['pages']} pages, {counts['links']} internal links "
        f"({counts['nav_links']} in navigation), {len(problems)} broken: {status}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
