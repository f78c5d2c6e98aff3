"""Every stage uses the beams the store records, never the cmb-ml preset.

A store simulated with non-preset beams (``instrument.beam_overrides``) and the same
data exported to a CMB-ML tree (FWHM cards) and ingested back are cleaned with
those beams: the ILC map differs from the one made with the preset beams, and its
residual against the truth is lower than the preset-beam (wrong) cleaning's.
"""
import json

import healpy as hp
import numpy as np
import pytest

import cmbcube
from cmbcube import cube
from cmbcube.cli import main
from cmbcube.interop.cmbml_files import read_header
from cmbcube.science import instrument, sht
from cmbcube.stages import export, ilc, ingest, simulate
from cmbcube.testing import make_example_tree
from helpers import rms, small_recipe

NSIDE = 32
DETS = (70, 100, 143, 217, 353)
# sharper than the cmb-ml preset (55, 43, 32.4, 22.3, 22.0): Planck-like resolutions
OVERRIDES = {70: 13.08, 100: 9.66, 143: 7.22, 217: 4.90, 353: 4.92}


@pytest.fixture(scope="module")
def beam_stores(tmp_path_factory):
    """(simulated store with beam overrides, the same data ingested from its CMB-ML export)."""
    base = tmp_path_factory.mktemp("beams")
    r = small_recipe(nside=NSIDE, detectors=list(DETS), fields=["I"], splits={"train": 0, "valid": 0, "test": 1},
                     keep=["cmb"], instrument__beam_overrides=dict(OVERRIDES),
                     foregrounds__components=["dust", "synchrotron"])
    sim_store = str(base / "sim.zarr")
    assert simulate.run(r, sim_store, scheduler="synchronous", progress=False).ok
    tree = base / "tree"
    assert export.run(sim_store, tree, units="store", scheduler="synchronous", progress=False).ok
    ing_store = str(base / "ingested.zarr")
    assert ingest.run(tree, ing_store, scheduler="synchronous", progress=False).ok
    return sim_store, ing_store, tree


def _truth_at(ds, fwhm, nside):
    """The stored truth (pixel window, no beam) at a Gaussian beam, RING."""
    lmax = 3 * nside - 1
    nest = hp.ring2nest(nside, np.arange(12 * nside ** 2))
    t = ds.cmb.sel(split="test", sim=0, field="I").values[nest].astype(float)
    return sht.alm2map(sht.almxfl(sht.map2alm(t, lmax, 3), instrument.gaussian_beam(fwhm, lmax)[0]), nside)


def test_store_records_the_beams_it_was_made_with(beam_stores):
    sim_store, ing_store, tree = beam_stores
    assert cube.detector_beams(sim_store) == OVERRIDES
    assert cube.detector_beams(ing_store) == OVERRIDES          # from the exported files' FWHM cards
    assert cube.detector_beams(ing_store, [143]) == {143: 7.22}
    assert cube.truth_beam(sim_store) == 0.0
    source = json.loads(cube.read_attrs(ing_store)["source_beams"])
    assert source["143"] == "7.22 (FWHM card)" and set(source) == {str(d) for d in DETS}
    with pytest.raises(cube.StoreError, match="not in the store"):
        cube.detector_beams(sim_store, [44])


@pytest.mark.parametrize("method", ["nilc", "hilc"])
def test_ilc_cleans_with_the_recorded_beams(beam_stores, method):
    sim_store, ing_store, _ = beam_stores
    maps = {}
    for name, store in (("sim", sim_store), ("ing", ing_store)):
        report = ilc.run(store, ilc.ILCConfig(method=method, fields=("I",)), scheduler="synchronous", progress=False)
        assert report.ok and report.written == [("test", 0)]
        maps[name] = cmbcube.open(store).pred.sel(run=method, split="test", sim=0, field="I").values.astype(float)
    # the same data, beams from the recipe or from the FWHM cards: the same map
    assert np.allclose(maps["sim"], maps["ing"], rtol=0, atol=1e-4 * rms(maps["sim"]))

    # the same sim cleaned with the preset (wrong) beams, as the stage did before
    ds = cmbcube.open(sim_store)
    config = ilc.resolve_config(sim_store, ilc.ILCConfig(method=method, fields=("I",)))
    obs = ds.obs.sel(split="test", sim=0, detector=list(DETS)).values
    preset = [instrument.detector(d).fwhm_arcmin for d in DETS]
    wrong = ilc.clean_sim(obs, list(DETS), ["I"], [str(u) for u in ds.unit.values], config, NSIDE, "uK_CMB",
                          beams_arcmin=preset)[0].astype(float)
    nest = hp.ring2nest(NSIDE, np.arange(12 * NSIDE ** 2))
    truth = _truth_at(ds, 20.6, NSIDE)
    right_resid = rms(hp.remove_dipole(maps["sim"][nest] - truth))
    wrong_resid = rms(hp.remove_dipole(wrong[nest] - truth))
    assert rms(wrong - maps["sim"]) > 0.05 * rms(maps["sim"]), "preset beams gave (nearly) the same map"
    assert right_resid < 0.8 * wrong_resid, (right_resid, wrong_resid)


def test_clean_sim_needs_one_beam_per_detector(beam_stores):
    sim_store, _, _ = beam_stores
    config = ilc.resolve_config(sim_store, ilc.ILCConfig(method="hilc", fields=("I",)))
    obs = cmbcube.open(sim_store).obs.sel(split="test", sim=0).values
    with pytest.raises(TypeError):
        ilc.clean_sim(obs, list(DETS), ["I"], ["uK_CMB"] * 5, config, NSIDE, "uK_CMB")     # no silent preset
    with pytest.raises(ValueError, match="5 detector"):
        ilc.clean_sim(obs, list(DETS), ["I"], ["uK_CMB"] * 5, config, NSIDE, "uK_CMB", beams_arcmin=[5.0])


def test_export_writes_the_recorded_beams(beam_stores):
    _, ing_store, tree = beam_stores
    header = read_header(tree / "Simulation" / "Test" / "sim0000" / "obs_143_map.fits")
    assert header["FWHM"] == pytest.approx(7.22)


def test_ingest_dry_run_says_which_beam_each_detector_gets(beam_stores, tmp_path, capsys):
    _, _, tree = beam_stores
    assert main(["ingest-cmbml", str(tree), "--store", str(tmp_path / "x.zarr"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "143 GHz: 7.22' (FWHM card)" in out and "70 GHz: 13.08' (FWHM card)" in out
    assert not (tmp_path / "x.zarr").exists()
    partial = tmp_path / "partial"
    make_example_tree(partial, nside=16, splits={"test": 1}, detectors=[100, 143],
                            fwhm_cards={143: 7.22})
    assert main(["ingest-cmbml", str(partial), "--store", str(tmp_path / "y.zarr"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "143 GHz: 7.22' (FWHM card)" in out
    assert "100 GHz: 43' (no FWHM card: cmb-ml preset)" in out
