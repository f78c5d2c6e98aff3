"""The analysis' layers: pure science modules, the cube's typed reads and writes, the stage on top."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cmbcube
from cmbcube import cube
from cmbcube.cube import analysis_io
from cmbcube.science import metrics, spectra
from cmbcube.stages import analyze, ilc


def test_science_modules_import_no_store_or_cluster_library():
    code = ("import sys, cmbcube.science.metrics, cmbcube.science.spectra; "
            "print(sorted(m for m in ('zarr', 'dask', 'distributed', 'xarray', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, tiny_store):
    pytest.importorskip("pymaster", reason="NaMaster missing: make pymaster")
    path = str(tmp_path_factory.mktemp("io") / "a.zarr")
    shutil.copytree(tiny_store, path)
    ilc.run(path, ilc.ILCConfig(method="hilc"), splits=("test",), scheduler="synchronous")
    assert not analyze.run(path, scheduler="synchronous", progress=False).failed
    return path


def test_stored_windows_give_the_theory_the_metrics_were_scored_against(analysed):
    """The report's theory (stored bandpower windows x cl_theory, science.spectra.window_theory) is the one
    the stage scored cl_err_theory against: recomputed from the stored spectra it gives the stored metric."""
    ds = cmbcube.open(analysed)
    inputs = analysis_io.read_analysis_inputs(analysed, 0, "test", 1)
    expected = spectra.window_theory(ds.spectra_window.values, inputs.cl_theory)
    nm = analysis_io.namaster_for(inputs.nside, inputs.apod, inputs.mask, ds.sizes["ell_bin"], analysed)
    assert np.allclose(expected, nm.expected(inputs.cl_theory), rtol=1e-12, atol=0)
    stored = ds.spectra.sel(run=ds.run.values[0], split="test", sim=1).values
    fields = [f for k, f in enumerate(inputs.fields) if np.isfinite(inputs.pred[k]).all()]
    assert fields
    errors = spectra.spectrum_errors(stored, inputs.cl_theory, fields, inputs.nside, nm)
    values = ds.metrics.sel(run=ds.run.values[0], split="test", sim=1, beam=0.0)  # by value: no beam
    for field, errs in errors.items():
        for name, value in errs.items():
            assert np.isfinite(value)
            assert value == float(values.sel(field=field, metric=name)), (field, name)
    # the stored truth spectrum of this sim, scored against the same theory: within cosmic variance on average
    k = spectra.SPECTRA.index("TT")
    assert 0.5 < np.mean(stored[0, k] / expected[k]) < 1.5


def test_todo_lists_exactly_the_predicted_sims_not_yet_analysed(analysed, tmp_path):
    path = str(tmp_path / "b.zarr")
    shutil.copytree(analysed, path)
    todo, already = analysis_io.analysis_todo(path, [0], ("test",))
    assert todo == [] and already == 2
    analysis_io.write_analysis(path, 0, "test", 1, np.full((len(metrics.BEAMS), 3, len(metrics.METRICS)), 7.0),
                               np.zeros((len(spectra.KINDS), len(spectra.SPECTRA), 3)))
    assert float(cmbcube.open(path).metrics.sel(split="test", sim=1).max()) == 7.0
    cube.clear_run_done(path, 0, "test", 1, analysis_only=True)
    todo, already = analysis_io.analysis_todo(path, [0], ("test",))
    assert todo == [(0, "test", 1)] and already == 1
