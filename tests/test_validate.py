"""``cmbcube validate``: every check is printed next to its outside reference and a verdict, a sky
with a known defect fails, and bad input exits 2 without touching anything."""
import json

import numpy as np
import pytest
import zarr

from cmbcube.cli import main
from cmbcube.stages import validate
from cmbcube.stages.simulate import run as simulate
from helpers import small_recipe

GROUPS = {"lensed CMB", "units", "beams", "noise", "galaxy", "extragalactic", "independence"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("validate") / "v.zarr")
    r = small_recipe(nside=32, splits={"train": 1, "valid": 0, "test": 2}, keep=["cmb", "components"])
    assert simulate(r, path, scheduler="synchronous", progress=False).ok
    return path


def test_every_check_has_a_reference_and_passes(store, tmp_path, capsys):
    """The default sky at nside 32 (Galaxy at 64) passes every check: CAMB, pysm3 and Planck's published
    numbers on one side, the store on the other; the JSON lists the same rows."""
    out = tmp_path / "checks.json"
    assert main(["validate", store, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    rows = json.loads(out.read_text())["checks"]
    assert {r["group"] for r in rows} == GROUPS
    assert all(r["status"] in ("pass", "info") for r in rows), [r for r in rows if r["status"] == "FAIL"]
    assert all(r["source"] for r in rows)
    for r in rows:
        assert r["quantity"] in text
    # the lensing rows compare each finished sim's own parameters (the store has 3, --sims defaults to 4)
    assert sum(r["group"] == "lensed CMB" for r in rows) == 4 * 3
    assert all("mean of 3 sim(s)" in r["quantity"] for r in rows if r["group"] == "galaxy")
    assert any("BB/EE" in r["quantity"] and "dust" in r["quantity"] for r in rows)
    assert any("cos 2phi" in r["quantity"] for r in rows)


def test_a_store_with_the_old_lensing_defect_fails(store, tmp_path):
    """BB at 0.69 of the truth (what CAMB to the map's band limit gave at nside 32 before the fix) fails
    the lensing check, and the command exits 1."""
    import shutil
    bad = str(tmp_path / "bad.zarr")
    shutil.copytree(store, bad)
    group = zarr.open_group(bad, mode="r+")
    cl = np.asarray(group["cl_theory"][2, 0])
    cl[2] *= 0.69
    group["cl_theory"][2, 0] = cl
    report = validate.run(bad, sims=1, galaxy=False)
    failed = [c.quantity for c in report.failed]
    assert failed == ["test/0 BB: max |C/C_ref - 1|"], failed
    assert main(["validate", bad, "--sims", "1", "--no-galaxy"]) == 1


def test_bad_input_exits_2(store, tmp_path):
    assert main(["validate", str(tmp_path / "nowhere.zarr")]) == 2
    assert not (tmp_path / "nowhere.zarr").exists()
    assert main(["validate", store, "--out", str(tmp_path)]) == 2                      # a directory
    assert main(["validate", store, "--out", str(tmp_path / "no" / "x.json")]) == 2    # no such directory
    assert main(["validate", store, "--sims", "0"]) == 2


def test_rows_regenerated_for_another_sky_version_are_not_judged(store, tmp_path):
    """A store whose synthetic sky is another version than this cmbcube's: the Galaxy rows (regenerated
    with today's code) are reported as info, saying why, not as a pass for the store."""
    import shutil
    other = str(tmp_path / "other.zarr")
    shutil.copytree(store, other)
    group = zarr.open_group(other, mode="r+")
    group.attrs["foreground_model_version"] = "2.0"
    report = validate.run(other, sims=2)
    galaxy = [c for c in report.checks if c.group == "galaxy"]
    assert galaxy and all(c.status == "info" and "version 2.0" in c.tolerance for c in galaxy)
    lensed = [c for c in report.checks if c.group == "lensed CMB"]
    assert lensed and all(c.status == "pass" for c in lensed)


def test_a_store_without_cmb_validates(tmp_path):
    """CMB off: no lensing or beam rows, no NaN correlation counted as a failure."""
    path = str(tmp_path / "nocmb.zarr")
    r = small_recipe(splits={"train": 0, "valid": 0, "test": 2}, cmb__enabled=False)
    assert simulate(r, path, scheduler="synchronous", progress=False).ok
    report = validate.run(path, sims=2, galaxy=False)
    assert not report.failed, [c.quantity for c in report.failed]
    assert not [c for c in report.checks if c.group in ("lensed CMB", "beams")]


def test_a_beam_too_narrow_to_bend_the_spectrum_at_this_nside_is_reported_unresolved_not_failed():
    import healpy as hp
    import numpy as np

    from cmbcube.science import validation
    ell = np.arange(3 * 32)
    cl = np.r_[0, 0, 1.0 / ell[2:] ** 2]
    np.random.seed(5)
    cmb32 = hp.synfast(cl, 32, lmax=95)
    beamed = hp.smoothing(cmb32, fwhm=np.radians(60 / 60), lmax=95, iter=3)
    assert validation.beam_check(100, 60.0, beamed, cmb32).status == "pass"
    assert validation.beam_check(100, 60.0, cmb32, cmb32).status == "FAIL"     # beam recorded, never applied
    cmb16 = hp.ud_grade(cmb32, 16)
    narrow = validation.beam_check(100, 5.0, cmb16, cmb16)      # lowers the transfer by 0.02% at ell 32
    assert narrow.status == "info" and "unresolved at nside 16" in narrow.source


def test_a_wide_beam_in_the_maps_of_a_low_nside_store_that_records_a_narrow_one_still_fails():
    import healpy as hp
    import numpy as np

    from cmbcube.science import validation
    ell = np.arange(48)
    np.random.seed(6)
    cmb16 = hp.synfast(np.r_[0, 0, 1.0 / ell[2:] ** 2], 16, lmax=47)
    wide = hp.smoothing(cmb16, fwhm=np.radians(3.0), lmax=47, iter=3)           # 180' in the maps
    assert validation.beam_check(100, 5.0, wide, cmb16).status == "FAIL"        # 5' recorded
