"""Issue 21, items 12-13: every option explains itself, `assets` never contradicts itself, and what the report
and `view` write is honest (escaped LaTeX, residual maps on one scale with the mask shown, every sim's point in
the box plots, 545/857 GHz statistics in MJy/sr with the ringing below zero labelled, sequential colours for
positive components, no PNG dropped into the current directory)."""
import argparse
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import cmbcube
from cmbcube import cli
from cmbcube.errors import InputError
from cmbcube.interop import assets
from cmbcube.recipe import from_store_attrs, load
from cmbcube.science import instrument
from cmbcube.science.metrics import METRICS
from cmbcube.stages import report, report_figures, view

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ help texts
def _options(parser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, path + (name,))
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield " ".join(path) or "cmbcube", "/".join(action.option_strings) or action.dest, action.help


def test_every_option_of_every_command_has_a_help_text():
    """A new option without help= fails here (item 12: --epochs, --batch-size, --lr-*, --bias-tolerance, ...)."""
    options = list(_options(cli.build_parser()))
    assert len({cmd for cmd, _, _ in options}) == len(cli.COMMANDS) + 1      # every subcommand was walked
    silent = [f"{cmd} {opt}" for cmd, opt, text in options if not (text or "").strip() or text == argparse.SUPPRESS]
    assert not silent, "options without a help text: " + ", ".join(silent)


# ------------------------------------------------------------------------------------------------ assets
def _rows(text):
    return [line.split()[:2] for line in text.splitlines()[2:] if line.startswith("  ") and
            line.split()[0] in ("present", "missing", "absent")]


def test_assets_keeps_optional_files_apart_from_needed_ones(tmp_path, monkeypatch):
    monkeypatch.delenv("PYSM_LOCAL_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    quick = load(str(ROOT / "recipes" / "quickstart.yaml"))      # embedded synthetic sky: needs no file
    text = assets.format_listing(quick, assets.list_assets(quick))
    rows = _rows(text)
    assert len(rows) >= 2 and all(row == ["absent", "optional"] for row in rows), rows
    assert "missing" not in text and "needs no external file" in text
    assert f"{len(rows)} optional file(s) not here" in text and "pysm3 templates" in text and "mask" in text
    # a recipe needing a chain file that is not there: the needed one is missing, the optional ones stay apart
    chain = load(str(ROOT / "recipes" / "quickstart.yaml"),
                 ["cmb.prior=chain", f"cmb.chain_file={tmp_path / 'chain.txt'}"])
    listed = assets.list_assets(chain)
    text = assets.format_listing(chain, listed)
    assert ["missing", "yes"] in _rows(text)
    said = assets.summary(chain, listed)
    assert said.startswith("1 of 1 needed file(s) missing (cosmology chain); ") and "present" not in said
    assert said in text and "optional file(s) not here" in said
    (tmp_path / "chain.txt").write_text("H0 ombh2 omch2 ns tau logA\n")
    text = assets.format_listing(chain, assets.list_assets(chain))
    assert "all 1 needed file(s) present" in text and "missing" not in text


# ------------------------------------------------------------------------------------------------ LaTeX
def _bare_specials(tex: str) -> list[str]:
    """Characters LaTeX would read as syntax in text: _ ^ % # $ outside $...$ and not escaped, & inside a cell."""
    found = []
    for line in tex.splitlines():
        text = re.sub(r"\$[^$]*\$", "", re.sub(r"\\[\\_%#$&{}]", "", line))    # drop escapes, then math
        for char in "_^%#$":
            if char in text:
                found.append(f"{char} in {line!r}")
    return found


def test_latex_tables_escape_every_caption_header_and_cell(tmp_path):
    row = {"run": "net_v2 50%", "method": "patch-unet", "sims": 2}
    row.update({m: (0.5, 0.1) for m in METRICS})
    caption = "test split, field I, common beam 20.6 arcmin (map metrics in uK_CMB, PSNR in dB)"
    report.write_tables([row], tmp_path, "t", caption, report_figures.metric_units(None))
    tex = (tmp_path / "t.tex").read_text()
    assert r"\caption{test split, field I, common beam 20.6 arcmin (map metrics in uK\_CMB, PSNR in dB)}" in tex
    assert r"MSE [uK\_CMB$^{2}$]" in tex and r"R$^{2}$" in tex
    assert r"net\_v2 50\% (patch-unet) & " in tex
    assert not _bare_specials(tex), _bare_specials(tex)
    assert tex.count("{") == tex.count("}") - tex.count(r"\}") + tex.count(r"\{")
    assert report.latex_escape("uK_CMB 5% & #1 $") == r"uK\_CMB 5\% \& \#1 \$"
    body = [ln for ln in tex.splitlines() if ln.endswith("\\\\")]
    assert all(ln.count(" & ") == len(report.TABLE_METRICS) for ln in body)        # one & per column, none in cells

