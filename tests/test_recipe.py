import subprocess
import sys
from pathlib import Path

import pytest

from cmbcube import recipe
from cmbcube.science import instrument

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["quickstart", "cmb-ml-128", "cmb-ml-512"])
def test_shipped_recipes_validate_and_plan(name):
    r = recipe.load(ROOT / "recipes" / f"{name}.yaml")
    assert r.name == name
    assert [d.freq for d in r.detectors()] == list(instrument.FREQS)
    if name.startswith("cmb-ml"):
        assert r.splits == {"train": 1000, "valid": 250, "test": 200}
        assert r["nside"] == int(name.split("-")[-1]) and r["sky_nside"] == 2 * r["nside"]
        assert [d.fwhm_arcmin for d in r.detectors()] == [75, 65, 55, 43, 32.4, 22.3, 22.0, 21.5, 20.6]
        assert [d.centre_ghz for d in r.detectors()] == [28.4, 44.1, 70.4, 100.89, 142.876, 221.156, 357.5, 555.2,
                                                         866.8]
    else:
        assert r["nside"] == 32 and sum(r.splits.values()) == 24


@pytest.mark.parametrize("raw, field, hint", [
    ({"colour": 1}, "colour", "unknown key"),
    ({"nside": 48}, "nside", "power of two"),
    ({"nside": "32"}, "nside", "expected integer"),
    ({"detectors": [143, 150]}, "detectors[1]", "30, 44, 70"),
    ({"splits": {"train": -1}}, "splits.train", "negative"),
    ({"splits": {"training": 4}}, "splits.training", "train, valid, test"),
    ({"foregrounds": {"model": "pysm3", "presets": ["d9", "zz9"]}}, "foregrounds.presets[1]", "d9"),
    ({"foregrounds": {"vary": "sometimes"}}, "foregrounds.vary", "per_sim, fixed"),
    ({"units": "Jy"}, "units", "uK_CMB"),
    ({"nside": 64, "sky_nside": 64}, "sky_nside", "twice"),
    ({"fields": ["I", "V"]}, "fields[1]", "I, Q, U"),
    ({"instrument": {"beams": "wmap"}}, "instrument.beams", "cmb-ml, planck2018"),
    ({"keep": ["everything"]}, "keep[0]", "cmb, components, noise"),
    ({"cmb": {"prior": "chain"}}, "cmb.chain_file", "required"),
])
def test_bad_recipes_name_the_field_and_allowed_values(raw, field, hint):
    with pytest.raises(recipe.RecipeError) as err:
        recipe.validate({"name": "bad", **raw})
    assert str(err.value).startswith(field)
    assert hint in str(err.value)


def test_overrides_apply_validate_and_change_the_hash():
    base = recipe.load(ROOT / "recipes" / "quickstart.yaml")
    r = recipe.load(ROOT / "recipes" / "quickstart.yaml",
                    ["nside=64", "splits.train=100", "instrument.beam_overrides.143=10"])
    assert r["nside"] == 64 and r["sky_nside"] == 128
    assert r.splits["train"] == 100 and r.overrides[0] == "nside=64"
    assert r.detectors()[4].fwhm_arcmin == 10.0
    assert r.hash != base.hash
    with pytest.raises(recipe.RecipeError, match="^nside"):
        recipe.load(ROOT / "recipes" / "quickstart.yaml", ["nside=100"])
    # the cluster section describes how to compute, not what: same hash
    assert recipe.load(ROOT / "recipes" / "quickstart.yaml", ["cluster.workers=7"]).hash == base.hash


def test_cli_bad_recipe_exits_2_and_creates_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nnside: 33\n")
    store = tmp_path / "never.zarr"
    proc = subprocess.run([sys.executable, "-m", "cmbcube.cli", "simulate", str(bad), "--store", str(store)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "nside" in proc.stderr and "power of two" in proc.stderr
    assert not store.exists() and list(tmp_path.iterdir()) == [bad]
    proc = subprocess.run([sys.executable, "-m", "cmbcube.cli", "simulate", str(ROOT / "recipes" / "quickstart.yaml"),
                           "--store", str(store), "--set", "detectors=[100,999]"], capture_output=True, text=True)
    assert proc.returncode == 2 and "detectors[1]" in proc.stderr and not store.exists()
