"""CMB-ML interop: a tree in CMB-ML's layout -> cube -> tree, and a simulated cube -> tree -> cube."""
import shutil

import healpy as hp
import numpy as np
import pytest
import yaml

import cmbcube
from cmbcube import cube
from cmbcube.cli import main
from cmbcube.interop.cmbml_files import CMBMLError, map_info, read_header
from cmbcube.science import cosmology, instrument
from cmbcube.stages import export, ingest
from cmbcube.testing import make_example_tree
from helpers import zarr_files

NSIDE = 16
SPLITS = {"train": 2, "valid": 1, "test": 1}
SPLIT_DIRS = {"train": "Train", "valid": "Valid", "test": "Test"}


def ring_to_nest(ring):
    """Independent of healpy's read_map(nest=True): NESTED pixel p holds RING pixel nest2ring(p)."""
    nside = hp.npix2nside(ring.shape[-1])
    return ring[..., hp.nest2ring(nside, np.arange(ring.shape[-1]))]


def read_ring(path):
    return np.atleast_2d(hp.read_map(str(path), field=None, nest=False, dtype=None))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmbml") / "CMB-ML_tiny"
    make_example_tree(root, nside=NSIDE, splits=SPLITS, seed=3, shared_cosmology=("valid",))
    return root


@pytest.fixture(scope="module")
def ingested(tree, tmp_path_factory):
    store = str(tmp_path_factory.mktemp("ing") / "ingested.zarr")
    report = ingest.run(tree, store, scheduler="synchronous", progress=False)
    assert report.ok and report.status == "created" and len(report.written) == 4 and report.already_done == 0
    return store


def test_example_tree_has_cmbml_layout(tree):
    sim = tree / "Simulation" / "Train" / "sim0001"
    names = sorted(p.name for p in sim.iterdir())
    assert names == sorted([f"obs_{f}_map.fits" for f in instrument.FREQS]
                           + ["cmb_map_fid.fits", "wmap_params.yaml", "cmb_ps_fid.txt"])
    header = dict(hp.read_map(str(sim / "obs_143_map.fits"), field=None, h=True)[1])
    assert header["ORDERING"] == "RING" and header["NSIDE"] == NSIDE and header["TUNIT1"] == "uK_CMB"
    assert read_ring(sim / "obs_857_map.fits").shape == (1, 12 * NSIDE ** 2)      # temperature only
    valid = tree / "Simulation" / "Valid"
    assert (valid / "wmap_params.yaml").is_file() and not (valid / "sim0000" / "wmap_params.yaml").exists()
    assert read_header(sim / "obs_143_map.fits")["TUNIT3"] == "uK_CMB"     # the small card reader


def test_ingest_maps_units_params_and_spectra(tree, ingested):
    ds = cmbcube.open(ingested)
    assert list(ds.detector.values) == list(instrument.FREQS) and list(ds.field.values) == ["I", "Q", "U"]
    assert list(ds.n_sims.values) == [2, 1, 1] and ds.attrs["units_choice"] == "uK_CMB"
    assert set(ds.unit.values) == {"uK_CMB"}
    for split, count in SPLITS.items():
        for sim in range(count):
            folder = tree / "Simulation" / SPLIT_DIRS[split] / f"sim{sim:04d}"
            for freq in instrument.FREQS:
                ring = read_ring(folder / f"obs_{freq}_map.fits")
                got = ds.obs.sel(split=split, sim=sim, detector=freq).values
                assert np.array_equal(got[: ring.shape[0]], ring_to_nest(ring))
                if freq >= 545:     # Q/U do not exist there: absent, NaN
                    assert np.isnan(got[1:]).all()
                    assert not ds.has_field.sel(detector=freq, field="Q")
            cmb = ds.cmb.sel(split=split, sim=sim).values
            assert np.array_equal(cmb, ring_to_nest(read_ring(folder / "cmb_map_fid.fits")))
            params_file = folder / "wmap_params.yaml"
            if not params_file.exists():
                params_file = folder.parent / "wmap_params.yaml"
            raw = yaml.safe_load(params_file.read_text())
            p = ds.cosmo_params.sel(split=split, sim=sim)
            for name, key in (("H0", "H0"), ("ombh2", "omegabh2"), ("omch2", "omegach2"), ("ns", "ns002"),
                              ("tau", "tau")):
                assert float(p.sel(param=name)) == raw[key]
            assert np.isnan(float(p.sel(param="As")))           # the example tree has no amplitude
            spectra = np.loadtxt(params_file.parent / "cmb_ps_fid.txt")
            cls = ds.cl_theory.sel(split=split, sim=sim).values
            ell = np.arange(2, cls.shape[1])
            for k in range(4):
                dl = cls[k, 2:] * ell * (ell + 1) / (2 * np.pi)
                assert np.allclose(dl, spectra[2:cls.shape[1], k + 1], rtol=1e-12)
            assert np.all(cls[:, :2] == 0)
    # the valid split shares one cosmology (CMB-ML's split-level files)
    assert ds.attrs["source_format"] == "cmb-ml"
    assert ds.attrs["source_dir"] == str((tree / "Simulation").resolve())
    assert str((tree / "Simulation").resolve()) in cube.store_recipe(ingested)["description"]
    assert ds.attrs["source_params_ignored"] == '["chain_idx"]'
    assert ds.cmb.attrs["beam_fwhm_arcmin"] == 0 and not ds.attrs["pixel_window_applied"]
    assert np.allclose(ds.beam_fwhm_arcmin.values, [instrument.BEAM_PRESETS["cmb-ml"][f] for f in instrument.FREQS])
    assert int(ds.sim_done.sum()) == 4


def test_rerun_resumes_and_two_workers_write_the_same_bytes(tree, ingested, tmp_path):
    before = zarr_files(ingested)
    again = ingest.run(tree, ingested, scheduler="synchronous", progress=False)
    assert again.status == "existing" and again.already_done == 4 and not again.written
    assert zarr_files(ingested) == before                   # a rerun with nothing to do writes nothing
    # a sim whose flag was lost is redone, and only it
    partial = str(tmp_path / "partial.zarr")
    shutil.copytree(ingested, partial)
    cube.clear_done(partial, "train", 1)
    rerun = ingest.run(tree, partial, scheduler="synchronous", progress=False)
    assert rerun.written == [("train", 1)]
    parallel = str(tmp_path / "parallel.zarr")
    report = ingest.run(tree, parallel, workers=2, progress=False)
    assert report.ok and len(report.written) == 4
    a, b = zarr_files(ingested), zarr_files(parallel)
    a.pop("zarr.json"), b.pop("zarr.json")            # root metadata: creation and ingest times
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)


def test_units_of_the_files_are_converted(tree, ingested, tmp_path):
    native = tmp_path / "native"
    make_example_tree(native, nside=NSIDE, splits=SPLITS, seed=3, shared_cosmology=("valid",),
                            units="native")
    assert map_info(native / "Simulation/Test/sim0000/obs_545_map.fits").unit == "MJy/sr"
    # kept in the files' units (recipe units: native) ...
    kept = str(tmp_path / "kept.zarr")
    assert ingest.run(native, kept, scheduler="synchronous", progress=False).ok
    ds = cmbcube.open(kept)
    assert ds.attrs["units_choice"] == "native"
    assert list(ds.unit.values) == ["K_CMB"] * 7 + ["MJy/sr"] * 2
    ring = read_ring(native / "Simulation/Test/sim0000/obs_857_map.fits")
    assert np.array_equal(ds.obs.sel(split="test", sim=0, detector=857, field="I").values, ring_to_nest(ring)[0])
    # ... or converted to uK_CMB: the same numbers as the uK_CMB tree, up to float32 rounding
    converted = str(tmp_path / "uk.zarr")
    assert ingest.run(native, converted, scheduler="synchronous", progress=False, units="uK_CMB").ok
    got = cmbcube.open(converted).obs.values
    want = cmbcube.open(ingested).obs.values
    assert np.allclose(got, want, rtol=1e-5, atol=1e-3, equal_nan=True)
    assert np.array_equal(np.isnan(got), np.isnan(want))


def _broken(tree, tmp_path, name):
    copy = tmp_path / name
    shutil.copytree(tree, copy)
    return copy


def test_bad_trees_are_refused_and_stores_left_untouched(tree, ingested, tmp_path):
    store = str(tmp_path / "kept.zarr")
    shutil.copytree(ingested, store)
    before = zarr_files(store)
    npix = 12 * NSIDE ** 2

    missing = _broken(tree, tmp_path, "missing")
    (missing / "Simulation/Train/sim0001/obs_70_map.fits").unlink()
    with pytest.raises(CMBMLError, match=r"Train/sim0001/obs_70_map\.fits: missing"):
        ingest.run(missing, store, scheduler="synchronous")

    nside = _broken(tree, tmp_path, "nside")
    hp.write_map(str(nside / "Simulation/Test/sim0000/obs_100_map.fits"), [np.zeros(12 * 64)] * 3,
                 column_units=["uK_CMB"] * 3, overwrite=True, dtype=np.float32)
    with pytest.raises(CMBMLError, match=r"Test/sim0000/obs_100_map\.fits: nside 8, but .* nside 16"):
        ingest.run(nside, store, scheduler="synchronous")

    units = _broken(tree, tmp_path, "units")
    hp.write_map(str(units / "Simulation/Valid/sim0000/obs_30_map.fits"), [np.zeros(npix)] * 3,
                 column_units=["furlong"] * 3, overwrite=True, dtype=np.float32)
    with pytest.raises(CMBMLError, match=r"obs_30_map\.fits: unknown unit 'furlong' .*allowed: uK_CMB"):
        ingest.run(units, store, scheduler="synchronous")

    gap = _broken(tree, tmp_path, "gap")
    shutil.move(gap / "Simulation/Train/sim0001", gap / "Simulation/Train/sim0002")
    with pytest.raises(CMBMLError, match=r"numbered 0..N-1; missing sim0001"):
        ingest.run(gap, store, scheduler="synchronous")

    split = _broken(tree, tmp_path, "split")
    (split / "Simulation/Tests").mkdir()
    with pytest.raises(CMBMLError, match=r"Tests: unknown split folder; allowed: Train, Valid, Test"):
        ingest.run(split, store, scheduler="synchronous")

    with pytest.raises(FileNotFoundError, match="no such directory"):
        ingest.run(tmp_path / "nowhere", store, scheduler="synchronous")

    # a good tree, but another one than the store holds: refused, store untouched
    other = _broken(tree, tmp_path, "other")
    with pytest.raises(cube.StoreError, match="different recipe"):
        ingest.run(other, store, scheduler="synchronous")
    assert zarr_files(store) == before
    # the command line says what is wrong and exits 2
    assert main(["ingest-cmbml", str(missing), "--store", store, "--scheduler", "synchronous"]) == 2
    assert main(["ingest-cmbml", str(units), "--store", str(tmp_path / "new.zarr")]) == 2
    assert not (tmp_path / "new.zarr").exists()
    assert zarr_files(store) == before


def test_export_reproduces_the_source_tree(tree, ingested, tmp_path):
    out = tmp_path / "export"
    report = export.run(ingested, out, scheduler="synchronous", progress=False)
    assert report.ok and len(report.written) == 4
    for split, count in SPLITS.items():
        for sim in range(count):
            src = tree / "Simulation" / SPLIT_DIRS[split] / f"sim{sim:04d}"
            dst = out / "Simulation" / SPLIT_DIRS[split] / f"sim{sim:04d}"
            for name in [f"obs_{f}_map.fits" for f in instrument.FREQS] + ["cmb_map_fid.fits"]:
                a, ha = hp.read_map(str(src / name), field=None, h=True, dtype=None)
                b, hb = hp.read_map(str(dst / name), field=None, h=True, dtype=None)
                assert a.dtype == b.dtype
                assert np.array_equal(a, b)
                ha, hb = dict(ha), dict(hb)
                assert hb["ORDERING"] == "RING" and hb["NSIDE"] == NSIDE
                assert [hb.get(f"TUNIT{k}") for k in (1, 2, 3)] == [ha.get(f"TUNIT{k}") for k in (1, 2, 3)]
                assert [hb.get(f"TTYPE{k}") for k in (1, 2, 3)] == [ha.get(f"TTYPE{k}") for k in (1, 2, 3)]
            side = src if (src / "wmap_params.yaml").exists() else src.parent
            a = yaml.safe_load((side / "wmap_params.yaml").read_text())
            b = yaml.safe_load((dst / "wmap_params.yaml").read_text())
            assert {k: a[k] for k in b} == b and set(b) == {"H0", "omegabh2", "omegach2", "ns002", "tau"}
            sa, sb = np.loadtxt(side / "cmb_ps_fid.txt"), np.loadtxt(dst / "cmb_ps_fid.txt")
            nell = cmbcube.open(ingested).sizes["ell"]         # the cube's multipoles, all finite here
            assert sb.shape == (nell, 5) and np.array_equal(sb[:, 0], np.arange(nell))
            assert np.allclose(sb[:, 1:], sa[: len(sb), 1:5], rtol=2e-7)
    # complete sims are skipped on a rerun; --overwrite rewrites them
    again = export.run(ingested, out, scheduler="synchronous", progress=False)
    assert not again.written and len(again.skipped) == 4
    assert len(export.run(ingested, out, splits=["test"], overwrite=True, scheduler="synchronous").written) == 1
    assert not list(out.rglob("*.partial"))
    # and the export ingests back into the same cube
    back = str(tmp_path / "back.zarr")
    assert ingest.run(out, back, scheduler="synchronous", progress=False).ok
    x, y = cmbcube.open(ingested), cmbcube.open(back)
    assert np.array_equal(x.obs.values, y.obs.values, equal_nan=True)
    assert np.array_equal(x.cmb.values, y.cmb.values, equal_nan=True)
    assert np.array_equal(x.cosmo_params.values, y.cosmo_params.values, equal_nan=True)
    assert np.allclose(x.cl_theory.values, y.cl_theory.values, rtol=1e-7, equal_nan=True)


def test_export_of_a_simulated_store(tiny_store, tmp_path):
    out = tmp_path / "tiny-cmbml"
    assert main(["export-cmbml", tiny_store, str(out), "--scheduler", "synchronous", "--no-progress"]) == 0
    ds = cmbcube.open(tiny_store)
    sim = out / "Simulation" / "Test" / "sim0001"
    for i, freq in enumerate(ds.detector.values):
        maps, header = hp.read_map(str(sim / f"obs_{freq}_map.fits"), field=None, h=True, nest=True, dtype=None)
        header = dict(header)
        maps = np.atleast_2d(maps)
        want = ds.obs.sel(split="test", sim=1, detector=freq).values
        assert maps.shape[0] == (1 if freq >= 545 else 3)
        assert np.array_equal(maps, want[: maps.shape[0]])
        assert header["TUNIT1"] == "uK_CMB" and header["FWHM"] == float(ds.beam_fwhm_arcmin[i])
        assert header["PIXWIN"] is True
    cmb = hp.read_map(str(sim / "cmb_map_fid.fits"), field=None, nest=True, dtype=None)
    assert np.array_equal(cmb, ds.cmb.sel(split="test", sim=1).values)
    params = yaml.safe_load((sim / "wmap_params.yaml").read_text())
    truth = dict(zip(cosmology.PARAMS, ds.cosmo_params.sel(split="test", sim=1).values))
    assert params["omegach2"] == truth["omch2"] and params["a002"] == pytest.approx(truth["As"] * 1e9, rel=1e-15)
    assert sorted(p.name for p in (out / "Simulation").iterdir()) == ["Test", "Train", "Valid"]
    assert len(list((out / "Simulation" / "Train").iterdir())) == 3
    # K_CMB on request
    kout = tmp_path / "k"
    export.run(tiny_store, kout, splits=["valid"], units="K_CMB", scheduler="synchronous")
    k = hp.read_map(str(kout / "Simulation/Valid/sim0000/obs_143_map.fits"), field=0, nest=True)
    assert np.allclose(k, ds.obs.sel(split="valid", sim=0, detector=143, field="I").values * 1e-6, rtol=1e-6)
    # back into a cube: the same maps, beams, pixel window, parameters and spectra
    back = str(tmp_path / "back.zarr")
    assert ingest.run(out, back, scheduler="synchronous", progress=False).ok
    b = cmbcube.open(back)
    assert np.array_equal(b.obs.values, ds.obs.values, equal_nan=True)
    assert np.array_equal(b.cmb.values, ds.cmb.values, equal_nan=True)
    assert np.array_equal(b.beam_fwhm_arcmin.values, ds.beam_fwhm_arcmin.values)
    assert b.attrs["pixel_window_applied"] is True
    assert np.allclose(b.cosmo_params.values, ds.cosmo_params.values, rtol=1e-14, equal_nan=True)
    n = min(b.cl_theory.shape[-1], ds.cl_theory.shape[-1])
    assert np.allclose(b.cl_theory.values[..., 2:n], ds.cl_theory.values[..., 2:n], rtol=1e-7, equal_nan=True)


def test_export_errors(ingested, tmp_path):
    with pytest.raises(CMBMLError, match="allowed: train, valid, test"):
        export.run(ingested, tmp_path / "x", splits=["training"])
    with pytest.raises(CMBMLError, match="allowed: uK_CMB, K_CMB, store"):
        export.run(ingested, tmp_path / "x", units="Jy")
    with pytest.raises(cube.StoreError):
        export.run(str(tmp_path / "none.zarr"), tmp_path / "x")
    assert main(["export-cmbml", ingested, str(tmp_path / "y"), "--split", "nope"]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
