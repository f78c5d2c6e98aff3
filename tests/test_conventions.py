"""The polarisation convention is recorded and honoured: stores and exported FITS maps say COSMO
(HEALPix's: Q/U on the local (e_theta, e_phi) basis, FITS POLCCONV), and IAU files (U of the other
sign) are converted on ingest."""
import healpy as hp
import numpy as np

import cmbcube
from cmbcube.cli import main
from cmbcube.stages import ingest


def test_store_and_exported_files_say_cosmo_and_iau_files_are_flipped(tiny_store, tmp_path):
    ds = cmbcube.open(tiny_store)
    assert ds.attrs["polarization_convention"] == "COSMO"
    out = tmp_path / "tree"
    assert main(["export-cmbml", tiny_store, str(out), "--scheduler", "synchronous", "--no-progress"]) == 0
    sim_dir = out / "Simulation" / "Test" / "sim0000"
    _, header = hp.read_map(str(sim_dir / "obs_143_map.fits"), field=None, h=True, nest=True, dtype=None)
    assert dict(header)["POLCCONV"] == "COSMO"
    # the same tree with every polarised file rewritten in the IAU convention (U negated, POLCCONV = IAU)
    for path in out.glob("Simulation/*/*/*.fits"):
        maps, header = hp.read_map(str(path), field=None, h=True, nest=False, dtype=None)
        maps = np.atleast_2d(maps)
        if maps.shape[0] < 3:
            continue
        header = dict(header)
        extra = [(k, header[k]) for k in ("FWHM", "PIXWIN") if k in header] + [("POLCCONV", "IAU")]
        hp.write_map(str(path), [maps[0], maps[1], -maps[2]], nest=False, coord="G", overwrite=True,
                     column_names=["I_STOKES", "Q_STOKES", "U_STOKES"], column_units=[header["TUNIT1"]] * 3,
                     dtype=np.float32, extra_header=extra)
    back = str(tmp_path / "back.zarr")
    assert ingest.run(out, back, scheduler="synchronous", progress=False).ok
    b = cmbcube.open(back)
    assert b.attrs["polarization_convention"] == "COSMO"
    assert np.array_equal(b.obs.values, ds.obs.values, equal_nan=True)
    assert np.array_equal(b.cmb.values, ds.cmb.values, equal_nan=True)
    # a convention cmbcube does not know is refused, naming the card and the allowed values
    path = next(out.glob("Simulation/Test/sim0000/obs_143_map.fits"))
    maps = hp.read_map(str(path), field=None, nest=False, dtype=None)
    hp.write_map(str(path), list(maps), nest=False, overwrite=True, column_units=["uK_CMB"] * 3,
                 column_names=["I_STOKES", "Q_STOKES", "U_STOKES"], extra_header=[("POLCCONV", "ECLIPTIC")])
    assert main(["ingest-cmbml", str(out), "--store", str(tmp_path / "bad.zarr"), "--scheduler", "synchronous",
                 "--no-progress"]) == 2
    assert not (tmp_path / "bad.zarr").exists()
