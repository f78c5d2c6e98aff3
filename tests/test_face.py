"""The face: the command table and the ILC method registry, extended from a test file alone."""
import healpy as hp
import numpy as np
import pytest

from cmbcube import cli
from cmbcube.recipe import RecipeError, validate
from cmbcube.science import instrument, sht
from cmbcube.stages import ilc


def test_every_subcommand_comes_from_the_command_table():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == list(cli.COMMANDS)
    for name, command in cli.COMMANDS.items():
        assert callable(command.handler) and command.help, name


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def _channel_average(calls):
    """A toy ILC method: each channel brought to the common beam, then the plain mean (CMB units)."""
    def combine(alms, transfers, common, response, deproject, *, config, windows, nside, lmax):
        calls.append(alms.shape)
        ell = sht.ell_of_alm(sht.lmax_from_size(alms.shape[1]))
        ratio = common[ell][None] / transfers[:, ell]
        out = np.mean(alms * ratio / response[:, None], axis=0)
        return sht.truncate_alm(out[None], lmax)[0]
    return combine


@pytest.fixture
def toy_method():
    calls = []
    ilc.METHODS.register("toy-average", _channel_average(calls))
    yield calls
    ilc.METHODS.unregister("toy-average")


def test_a_method_registered_from_a_test_file_is_used_everywhere(toy_method):
    # the command line offers it
    args = cli.build_parser().parse_args(["ilc", "store.zarr", "--method", "toy-average"])
    assert args.method == "toy-average"
    # the recipe accepts it for `cmbcube run`
    assert validate({"name": "t", "pipeline": {"ilc": ["nilc", "toy-average"]}})["pipeline"]["ilc"][1] == "toy-average"
    # and clean_sim runs it: a CMB-only sky seen through four wide beams comes back at the common beam
    nside, lmax = 32, 95
    dets = [70, 100, 143, 217]
    fwhm = {70: 120.0, 100: 90.0, 143: 60.0, 217: 40.0}     # 5% to 23% of the signal lost at l = 48
    np.random.seed(3)
    ell = np.arange(lmax + 1)
    cl = np.zeros(lmax + 1)
    cl[2:] = 2000 * 2 * np.pi / (ell[2:] * (ell[2:] + 1.0))
    cl[48 + 1:] = 0.0           # band-limited below 3 nside: the map <-> alm round trips hold to ~1e-3
    truth = hp.synalm(cl, lmax=lmax)
    nest = hp.ring2nest(nside, np.arange(12 * nside ** 2))
    obs = np.zeros((len(dets), 1, 12 * nside ** 2))
    for k, d in enumerate(dets):
        beamed = sht.almxfl(truth, instrument.gaussian_beam(fwhm[d], lmax)[0])
        obs[k, 0, nest] = sht.alm2map_scalar(beamed[None], nside)[0]
    config = ilc.ILCConfig(method="toy-average", detectors=tuple(dets), fields=("I",), peaks=(0, 24, 48, 96))
    out = ilc.clean_sim(obs, dets, ["I"], ["uK_CMB"] * len(dets), config, nside, "uK_CMB",
                        beams_arcmin=[fwhm[d] for d in dets])
    assert toy_method == [(len(dets), sht.alm_size(lmax))]
    expected = sht.alm2map_scalar(sht.almxfl(truth, instrument.gaussian_beam(20.6, lmax)[0])[None], nside)[0]
    got = out[0][nest]
    assert np.sqrt(np.mean((got - expected) ** 2)) < 5e-3 * np.std(expected)


def test_an_unknown_method_names_the_registered_ones(toy_method):
    with pytest.raises(RecipeError, match=r"pipeline.ilc\[0\]: 'pilc' is not allowed; allowed values: nilc, hilc, "
                                          r"toy-average"):
        validate({"name": "t", "pipeline": {"ilc": ["pilc"]}})
    ilc.METHODS.unregister("toy-average")
    with pytest.raises(RecipeError, match="allowed values: nilc, hilc$"):
        validate({"name": "t", "pipeline": {"ilc": ["toy-average"]}})
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["ilc", "store.zarr", "--method", "toy-average"])


@pytest.mark.parametrize("argv, message", [
    (["view", "{store}", "--product", "cmb", "--rot", "a,b"], "--rot 'a,b': expected LON,LAT"),
    (["view", "{store}", "--product", "cmb", "--sim", "99"], "--sim 99: allowed: 0 to 2"),
    (["analyze", "{store}", "--split", "x", "--scheduler", "synchronous"], "--split 'x': allowed: train, valid, test"),
    (["analyze", "{store}", "--mask", "{missing}", "--scheduler", "synchronous"], "no such file"),
    (["report", "{store}", "--out", "{missing}", "--sims", "a"], "comma-separated list of numbers"),
    (["train", "{store}", "--detectors", "100,x"], "comma-separated list of numbers"),
    (["preprocess", "{store}", "--scheduler", "nowhere"], "--scheduler: 'nowhere' is not a scheduler address"),
    (["report", "{store}", "--out", "{store}/zarr.json"], "is a file; the report needs a directory"),
    (["report", "{store}", "--out", "{missing}"], "no analysed test sims yet; run cmbcube analyze first"),
])
def test_bad_options_exit_2_with_the_option_named_and_the_store_untouched(tiny_store, tmp_path, capsys, argv,
                                                                          message):
    from helpers import zarr_files
    before = zarr_files(tiny_store)
    missing = str(tmp_path / "missing.fits")
    assert cli.main([a.format(store=tiny_store, missing=missing) for a in argv]) == 2
    assert message in capsys.readouterr().err
    assert zarr_files(tiny_store) == before
    assert not (tmp_path / "missing.fits").exists()


def test_predict_refuses_an_ilc_run_by_name(tiny_store, tmp_path, capsys):
    """An ILC run has predictions but no network: predict names the run and what it is, exit 2."""
    import shutil
    store = str(tmp_path / "ilc.zarr")
    shutil.copytree(tiny_store, store)
    assert cli.main(["ilc", store, "--method", "hilc", "--fields", "I", "--scheduler", "synchronous",
                     "--no-progress"]) == 0
    capsys.readouterr()
    assert cli.main(["predict", store, "--run", "hilc", "--no-progress"]) == 2
    assert "--run 'hilc': a hilc run, not a trained network" in capsys.readouterr().err


def test_a_failed_stage_of_run_exits_1_with_its_message(tmp_path, monkeypatch, capsys):
    import yaml
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "fail", "nside": 16, "splits": {"train": 1, "test": 1},
                                      "detectors": [100, 143], "foregrounds": {"model": "none"},
                                      "cluster": {"kind": "synchronous"}}))
    monkeypatch.setenv("CMBCUBE_FAIL_SIMS", "test/0")
    rc = cli.main(["run", str(recipe), "--store", str(tmp_path / "s.zarr"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "cmbcube: simulate: 1 sim(s) failed" in err and "injected failure for test/0" in err
    assert "Traceback" not in err
