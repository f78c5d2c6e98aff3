"""Check every relative link of a built documentation site (``make docs`` runs it over site/).

    python tools/check_links.py [SITE_DIR]      # default: site

Parses every HTML page under SITE_DIR and checks that each relative ``href`` / ``src`` resolves to a
file inside SITE_DIR (a folder counts when it holds index.html) and that each ``#anchor`` names an
``id`` (or ``name``) on the target page.  External links (http, https, and other schemes such as
mailto) cannot be checked offline: they are counted, not followed.  Prints the broken links, page by
page, and exits 1 when there is any; exit 2 when SITE_DIR holds no HTML page.
"""
from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

LINK_ATTRS = {"href", "src"}


class _Page(HTMLParser):
    """The anchors a page defines and the links it makes."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (name == "name" and tag == "a"):
                self.ids.add(value)
            elif name in LINK_ATTRS and tag != "base":
                self.links.append(value)


def parse(path: Path) -> _Page:
    """Parse one HTML file."""
    page = _Page()
    page.feed(path.read_text(errors="replace"))
    return page


def check(site: Path) -> tuple[list[tuple[str, str, str]], int, int, int]:
    """Check ``site``; returns (broken links as (page, link, why), pages, links checked, external links)."""
    site = site.resolve()
    pages = sorted(site.rglob("*.html"))
    parsed: dict[Path, _Page] = {}

    def page_of(path: Path) -> _Page:
        if path not in parsed:
            parsed[path] = parse(path)
        return parsed[path]

    broken, checked, external = [], 0, 0
    for path in pages:
        for link in page_of(path).links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc:
                external += 1
                continue
            checked += 1
            rel = str(path.relative_to(site))
            if parts.path:
                base = site if parts.path.startswith("/") else path.parent
                target = (base / unquote(parts.path).lstrip("/")).resolve()
                if not target.is_relative_to(site):
                    broken.append((rel, link, "points outside the site"))
                    continue
                if target.is_dir():
                    target = target / "index.html"
                if not target.is_file():
                    broken.append((rel, link, "no such file in the site"))
                    continue
            else:
                target = path
            fragment = unquote(parts.fragment)
            if fragment and target.suffix == ".html" and fragment not in page_of(target).ids:
                broken.append((rel, link, f"no anchor #{fragment} in {target.relative_to(site)}"))
    return broken, len(pages), checked, external


def main(argv=None) -> int:
    """Command line: check the site folder given (default site/) and report."""
    argv = sys.argv[1:] if argv is None else argv
    site = Path(argv[0] if argv else "site")
    if not site.is_dir() or not any(site.rglob("*.html")):
        print(f"check_links: {site}: no HTML pages (build the site first: make docs)", file=sys.stderr)
        return 2
    broken, pages, checked, external = check(site)
    for page, link, why in broken:
        print(f"{page}: {link}: {why}")
    print(f"check_links: {pages} page(s), {checked} relative link(s) checked, {len(broken)} broken; "
          f"{external} external link(s) not checked (offline)")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
