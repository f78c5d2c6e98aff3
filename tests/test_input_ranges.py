"""Issue 21, items 1, 4 and 6: a mistyped store path is "no such store" (exit 2) in every stage, and every
numeric recipe field is finite and inside a stated physical range, refused before anything is created
with a message naming the field and the range."""
import pytest

from cmbcube.cli import main


@pytest.mark.parametrize("argv", [
    ["ilc", "{store}", "--method", "nilc"],
    ["analyze", "{store}"],
    ["train", "{store}", "--model", "cmbnncs-unet5", "--epochs", "1"],
    ["predict", "{store}", "--run", "cmbnncs-unet5"],
])
def test_a_mistyped_store_is_no_such_store(argv, tmp_path, capsys):
    store = tmp_path / "quickstart.zar"
    assert main([a.format(store=store) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "no such store" in err and "Traceback" not in err
    assert not store.exists()


@pytest.mark.parametrize("setting,field,allowed", [
    ("noise.scale=.inf", "noise.scale", "from 0 to 1000"),
    ("noise.scale=.nan", "noise.scale", "from 0 to 1000"),
    ("instrument.beam_overrides.143=.nan", "instrument.beam_overrides.143", "from 0 to 600"),
    ("cmb.target_beam_arcmin=.nan", "cmb.target_beam_arcmin", "from 0 to 600"),
    ("cmb.prior_width=.inf", "cmb.prior_width", "from 0 to 10"),
    ("cmb.lens_potential_accuracy=1000000", "cmb.lens_potential_accuracy", "from 1 to 8"),
    ("instrument.map2alm_iterations=100000000", "instrument.map2alm_iterations", "from 0 to 20"),
    ("storage.level=1000", "storage.level", "from 0 to 22"),
    ("pipeline.f_sky=7", "pipeline.f_sky", "to 1"),
    ("pipeline.f_sky=0", "pipeline.f_sky", "to 1"),
    ("foregrounds.shared_structure=-0.5", "foregrounds.shared_structure", "from 0 to 1"),
])
def test_numbers_outside_their_range_are_refused(setting, field, allowed, capsys):
    assert main(["check-recipe", "recipes/quickstart.yaml", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert field in err and allowed in err, err


def test_blosc_level_is_checked_before_anything_is_computed(tmp_path, capsys):
    store = tmp_path / "s.zarr"
    code = main(["simulate", "recipes/quickstart.yaml", "--store", str(store), "--set", "storage.compression=blosc-lz4",
                 "--set", "storage.level=50", "--scheduler", "synchronous", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "storage.level" in err and "from 0 to 9" in err
    assert not store.exists()


def test_an_infinite_noise_scale_creates_no_store(tmp_path):
    store = tmp_path / "inf.zarr"
    assert main(["simulate", "recipes/quickstart.yaml", "--store", str(store), "--set", "noise.scale=.inf",
                 "--scheduler", "synchronous", "--no-progress"]) == 2
    assert not store.exists()


def test_a_malformed_set_value_names_the_key(capsys):
    """Issue 21, item 10: --set 'splits={train: [1' was a yaml traceback (exit 1)."""
    assert main(["check-recipe", "recipes/quickstart.yaml", "--set", "splits={train: [1"]) == 2
    err = capsys.readouterr().err
    assert "--set splits" in err and "not valid YAML" in err and "Traceback" not in err


def test_a_dry_run_refuses_what_the_run_would_refuse(tmp_path, capsys):
    """Issue 21, item 3: --dry-run ran none of the real run's checks (a run the real one refuses exited 0).
    Now a plan over the caps exits 2 naming the problem, and a store of another recipe exits 2; nothing
    is created either way."""
    store = tmp_path / "big.zarr"
    assert main(["run", "recipes/quickstart.yaml", "--store", str(store), "--set", "splits.train=1000000000",
                 "--dry-run"]) == 2
    assert "refused" in capsys.readouterr().err and not store.exists()
    other = tmp_path / "other.zarr"
    assert main(["simulate", "recipes/quickstart.yaml", "--store", str(other), "--set", "nside=8",
                 "--set", "splits={train: 1}", "--scheduler", "synchronous", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["simulate", "recipes/quickstart.yaml", "--store", str(other), "--dry-run"]) == 2
    assert "another recipe" in capsys.readouterr().err


def test_view_names_a_wrong_detector_or_run_as_wrong_not_missing(tmp_path, capsys):
    """Issue 21, item 12: `view --detector 150` and `--run nosuch` said the option was "required" although
    it was given."""
    store = tmp_path / "v.zarr"
    assert main(["simulate", "recipes/quickstart.yaml", "--store", str(store), "--set", "nside=8",
                 "--set", "splits={train: 1}", "--scheduler", "synchronous", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["view", str(store), "--detector", "150", "--split", "train", "--out", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert "--detector 150: not a detector of this store" in err and "required" not in err
    assert main(["view", str(store), "--product", "pred", "--run", "nosuch", "--split", "train",
                 "--out", str(tmp_path / "b.png")]) == 2
    err = capsys.readouterr().err
    assert "--run 'nosuch': not a run of this store" in err and "required" not in err
