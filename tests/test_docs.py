"""The documentation: the site builds without a warning, every relative link of it resolves, and the
README stays short and opens with the two commands (issue 24)."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for _module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
    pytest.importorskip(_module, reason=f"{_module} is not installed: pip install -e '.[docs]' (make docs does)")


def _check_links():
    spec = importlib.util.spec_from_file_location("check_links", ROOT / "tools" / "check_links.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built with `mkdocs build --strict` into a scratch folder (what `make docs` runs)."""
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "WARNING" not in log, log[-4000:]
    return out


def test_the_site_builds_strict_and_every_relative_link_and_anchor_resolves(site):
    broken, pages, checked, _external = _check_links().check(site)
    assert broken == []
    assert pages >= 20 and checked > 500                     # the checker saw the site, not an empty folder
    for page in ("index.html", "getting-started.html", "methods.html", "reliability.html", "results.html",
                 "CHANGES.html", "store_layout.html", "cite.html", "api/open.html", "api/cube.html",
                 "api/science.html"):
        assert (site / page).is_file(), page
    assert (site / "CITATION.cff").read_text() == (ROOT / "CITATION.cff").read_text()


def test_results_page_has_one_entry_per_results_file_with_its_date(site):
    html = (site / "results.html").read_text()
    files = sorted(p for p in (ROOT / "benchmarks" / "results").iterdir() if p.is_file())
    assert files
    for path in files:
        assert f'id="{path.stem}"' in html, path.name
        if path.suffix != ".md":                              # raw copies, linked from the pages
            assert (site / "benchmarks" / "results" / path.name).read_bytes() == path.read_bytes()
    date = re.search(r"\d{4}-\d{2}-\d{2}", files[0].name).group(0)
    assert f"date: {date}" in html
    assert "command: <code>benchmarks/ranking.py --train 256" in html


def test_the_readme_ranking_block_is_on_the_methods_page(site):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- ranking:begin.*?-->(.*?)<!-- ranking:end -->", readme, re.S).group(1)
    header = next(line for line in block.splitlines() if line.startswith("| training skies"))
    html = (site / "methods.html").read_text()
    for cell in header.strip("|").split("|"):
        assert f"<th>{cell.strip()}</th>" in html


def test_link_checker_reports_missing_files_and_anchors(tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<h1 id="top">x</h1><a href="sub/page.html#here">ok</a><a href="#top">ok</a><img src="a.png">'
        '<a href="sub/page.html#nowhere">bad anchor</a><a href="gone.html">bad file</a>'
        '<a href="https://example.org/x">external</a><a href="../outside.html">outside</a>')
    (tmp_path / "sub" / "page.html").write_text('<p id="here"><a href="../index.html#top">back</a></p>')
    (tmp_path / "a.png").write_bytes(b"png")
    check_links = _check_links()
    broken, pages, checked, external = check_links.check(tmp_path)
    assert sorted(link for _, link, _ in broken) == ["../outside.html", "gone.html", "sub/page.html#nowhere"]
    assert (pages, checked, external) == (2, 7, 1)
    assert check_links.main([str(tmp_path)]) == 1
    assert "gone.html: no such file in the site" in capsys.readouterr().out
    assert check_links.main([str(tmp_path / "sub" / "none")]) == 2


def test_readme_is_short_and_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    first_block = re.search(r"```[a-z]*\n(.*?)```", text, re.S).group(1)
    assert re.search(r"^make quickstart\b", first_block, re.M)
    assert re.search(r"^make test\b", first_block, re.M)
