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


# ------------------------------------------------------------------------------------------------ map figures
@pytest.fixture(scope="module")
def two_runs():
    """A small analysed-looking dataset: one truth, a good and a bad run (residuals 1 and 10 uK), a mask."""
    import healpy as hp
    nside = 16
    npix = hp.nside2npix(nside)
    rng = np.random.default_rng(3)
    truth = rng.normal(0.0, 100.0, (1, 1, 1, npix))
    pred = np.stack([truth + rng.normal(0.0, s, truth.shape) for s in (1.0, 10.0)])
    theta, _ = hp.pix2ang(nside, np.arange(npix), nest=True)
    mask = (np.abs(np.pi / 2 - theta) > np.radians(20)).astype(np.uint8)          # the Galactic plane cut
    pred[:, ..., mask == 0] += 500.0                                              # foregrounds left there
    ds = xr.Dataset(
        {"cmb": (("split", "sim", "field", "pixel"), truth, {"units": "uK_CMB", "beam_fwhm_arcmin": 0.0}),
         "pred": (("run", "split", "sim", "field", "pixel"), pred),
         "run_beam_fwhm_arcmin": (("run",), [0.0, 0.0]), "mask": (("pixel",), mask)},
        coords={"run": ["good", "bad"], "split": ["test"], "sim": [0], "field": ["I"]}, attrs={"nside": nside})
    return ds, mask


def test_residual_maps_of_every_run_share_one_colour_range_and_show_the_mask(two_runs):
    ds, mask = two_runs
    figs = {run: report_figures.map_figure(ds, run, "test", 0, "I", None) for run in ("good", "bad")}
    resid = {run: [im for ax in fig.axes for im in ax.get_images()][2] for run, fig in figs.items()}
    limits = {run: im.get_clim() for run, im in resid.items()}
    assert limits["good"] == limits["bad"] and limits["bad"][0] == -limits["bad"][1]       # one symmetric scale
    kept = np.ma.compressed(resid["bad"].get_array())
    assert limits["bad"][1] >= np.percentile(np.abs(kept), 99)                 # the worse run's residual fits
    assert limits["bad"][1] < 100                                              # the masked plane (500) set nothing
    for fig in figs.values():
        maps = [ax for ax in fig.axes if ax.get_images()]
        assert all(ax.collections for ax in maps)                              # the mask's outline on every map
        image = maps[2].get_images()[0]
        assert image.get_cmap().get_bad()[:3] == pytest.approx(report_figures.MASKED_GREY[:3])
        inside = np.isfinite(np.ma.getdata(image.get_array()))                 # in the ellipse (-inf outside)
        grey = np.ma.getmaskarray(image.get_array()) & inside
        assert 0.25 < grey.sum() / inside.sum() < 0.45                         # the masked ~34% of the sky
    assert 0.25 < 1 - mask.mean() < 0.45


def test_box_plots_draw_every_sim_as_a_point():
    runs, sims = ["nilc", "net"], 4
    rng = np.random.default_rng(0)
    values = rng.normal(10.0, 2.0, (2, 1, sims, 1, 1, 3))
    ds = xr.Dataset({"metrics": (("run", "split", "sim", "beam", "field", "metric"), values),
                     "analysis_done": (("run", "split", "sim"), np.ones((2, 1, sims), dtype=np.uint8)),
                     "cmb": (("pixel",), np.zeros(1), {"units": "uK_CMB"})},
                    coords={"run": runs, "split": ["test"], "sim": np.arange(sims), "beam": [20.6], "field": ["I"],
                            "metric": ["mae", "rmse", "psnr"]})
    fig = report_figures.distribution_figure(ds, "test", "I", 20.6, None)
    assert len(fig.axes) == values.shape[-1]            # one panel per metric, each checked
    for m, ax in enumerate(fig.axes):
        points = [(x, y) for line in ax.get_lines() if line.get_marker() not in ("None", "", " ", None)
                  for x, y in zip(line.get_xdata(), line.get_ydata())]
        for r in range(len(runs)):
            ys = sorted(y for x, y in points if abs(x - (r + 1)) < 0.4)
            assert ys == pytest.approx(sorted(values[r, 0, :, 0, 0, m])), (ax.get_title(), r)


# ------------------------------------------------------------------------------------------------ sky statistics
def test_sky_statistics_give_545_857_in_mjy_per_sr_and_label_the_ringing_below_zero(tiny_store):
    ds = cmbcube.open(tiny_store)
    text = report.component_table(ds, "test")
    rows = {tuple(cells[:3]): cells for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| "))}
    header = rows[("component", "detector [GHz]", "field")]
    assert header[-1] == "< 0" and header[3] == "unit"
    for det in ("545", "857"):
        assert {cells[3] for key, cells in rows.items() if key[1] == det} == {"MJy/sr"}
    assert rows[("dust", "353", "I")][3] == "uK_CMB"
    # the same numbers, converted with the store's band: Planck's 857 GHz coefficient is 2.27 MJy/sr per K_CMB
    band = {d.freq: d for d in from_store_attrs(ds.attrs).detectors()}[857]
    factor = instrument.band_unit_factor(band, "uK_CMB", "MJy/sr")
    assert factor == pytest.approx(2.268e-6, rel=0.01)
    dust = ds.components.sel(split="test", component="dust", detector=857, field="I").isel(sim=0).values
    assert float(rows[("dust", "857", "I")][6]) == pytest.approx(float(np.median(dust)) * factor, rel=6e-3)
    assert float(rows[("dust", "857", "I")][8]) < 1e4                          # not 1e8 uK_CMB
    # negative pixels of positive components are counted and explained as the band limit's ringing
    assert f"ell_max = 3 nside - 1 = {3 * int(ds.attrs['nside']) - 1}" in text and "ringing" in text
    below = float(rows[("radio", "30", "I")][-1].rstrip("%"))
    assert below == pytest.approx(100 * np.mean(ds.components.sel(split="test", component="radio", detector=30,
                                                                  field="I").isel(sim=0).values < 0), abs=0.05)


# ------------------------------------------------------------------------------------------------ view
def test_view_writes_next_to_the_store_not_into_the_current_directory(tiny_store, tmp_path, monkeypatch, capsys):
    import healpy as hp
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    views = Path(tiny_store + ".views")
    drawn = {}
    gnomview = hp.gnomview

    def spy(*args, **kwargs):
        drawn.update(kwargs)
        return gnomview(*args, **kwargs)

    monkeypatch.setattr(hp, "gnomview", spy)
    try:
        assert cli.main(["view", tiny_store, "--product", "radio", "--detector", "30", "--rot", "30,40"]) == 0
        written = Path(capsys.readouterr().out.strip())
        assert written.parent == views and written.is_file() and written.stat().st_size > 1000
        assert not list(cwd.iterdir())                                         # nothing in the current directory
        assert drawn["cmap"] == "viridis" and drawn["min"] >= 0                # positive: sequential, from 0
        radio = cmbcube.open(tiny_store).components.sel(split="test", component="radio", detector=30,
                                                        field="I").isel(sim=0).values
        assert (radio < 0).mean() > 0.01                                       # though ringing dips below 0
        out = tmp_path / "figs"
        out.mkdir()
        assert cli.main(["view", tiny_store, "--product", "cmb", "--out", str(out)]) == 0
        assert Path(capsys.readouterr().out.strip()) == out / "cmb_I_test_0000.png"
        assert (out / "cmb_I_test_0000.png").is_file() and not list(cwd.iterdir())
        with pytest.raises(InputError, match="no such directory"):
            view.output_path(tiny_store, "x.png", str(tmp_path / "nowhere" / "x.png"))
        assert cli.main(["view", tiny_store, "--product", "cmb", "--out", str(tmp_path / "x.txt")]) == 2
        assert "allowed suffixes: .png" in capsys.readouterr().err
    finally:
        shutil.rmtree(views, ignore_errors=True)
