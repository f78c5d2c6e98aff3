"""Tabulated band-integrated SEDs (cmbcube.science.foregrounds.bandtable) give pysm3's own answer.

The simulator no longer evaluates a spatially varying SED pixel by pixel at every band frequency: it
reads it from a (beta) or (beta, T) table.  The reference is pysm3's ``get_emission`` over the same band
(its weights make pysm3's trapezoid the detector's quadrature), on the same model objects.
"""
import numpy as np
import pysm3.models as m
import pysm3.units as u
import pytest

from cmbcube.science import foregrounds, instrument, seeds

VARYING = ["dust", "synchrotron", "radio"]
TOLERANCE = 5e-7          # relative, per pixel: the interpolation error (bandtable's docstring says < 2e-7)


@pytest.fixture(scope="module")
def models():
    return foregrounds.synthetic_sky(VARYING, 32, lambda n: seeds.rng(5, "test", 2, "foreground-" + n),
                                     lambda n: seeds.rng(5, "test", 2, "sed-" + n))


def pysm3_band(model, det):
    if det.bandpass == "delta":
        return model.get_emission(det.centre_ghz * u.GHz).to_value(u.uK_RJ)
    return model.get_emission(det.band_ghz * u.GHz, det.pysm3_weights).to_value(u.uK_RJ)


def relative_error(ours, ref):
    nonzero = ref != 0
    return float(np.max(np.abs(ours[nonzero] - ref[nonzero]) / np.abs(ref[nonzero])))


@pytest.mark.parametrize("bandpass", ["tophat", "delta"])
def test_tabulated_emission_equals_pysm3_in_every_band(models, bandpass):
    assert not any(foregrounds.is_uniform(mdl) for mdl in models.values())     # the table path is taken
    worst = 0.0
    for freq in instrument.FREQS:
        det = instrument.detector(freq, bandpass=bandpass)
        for name, model in models.items():
            ref = pysm3_band(model, det)
            out = np.zeros((3, ref.shape[1]))
            foregrounds.add_emission(out, model, det.band_ghz, 1.0, det.band_weights)
            assert np.array_equal(out == 0, ref == 0), (name, freq)      # zero exactly where pysm3's is
            worst = max(worst, relative_error(out, ref))
            assert relative_error(out, ref) < TOLERANCE, (name, freq, relative_error(out, ref))
    assert worst > 0          # the table is an approximation, and the comparison saw it


def test_emission_is_added_into_the_running_sum_in_single_precision(models):
    det = instrument.detector(353, bandpass="tophat")
    dust = models["dust"]
    start = np.random.default_rng(0).normal(size=(3, 12 * 32 ** 2)).astype(np.float32)
    out = start.copy()
    foregrounds.add_emission(out, dust, det.band_ghz, 2.5, det.band_weights)
    expected = start.astype(np.float64) + 2.5 * pysm3_band(dust, det)
    assert out.dtype == np.float32
    assert np.allclose(out, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    # only I asked for: Q and U are not touched
    only_i = np.zeros((1, start.shape[1]), dtype=np.float32)
    foregrounds.add_emission(only_i, dust, det.band_ghz, 1.0, det.band_weights)
    assert np.allclose(only_i[0], pysm3_band(dust, det)[0], rtol=1e-6)


def test_one_parameter_tables_for_curved_power_laws_and_black_bodies_of_one_temperature():
    """A modified black body with a beta map but one temperature, and a curved power law with a beta
    map, are read from one-dimensional tables; both still match pysm3."""
    nside = 16
    rng = np.random.default_rng(4)
    amp = rng.lognormal(size=(3, 12 * nside ** 2))
    beta = 1.5 + 0.1 * rng.normal(size=12 * nside ** 2)
    mbb = m.ModifiedBlackBody(map_I=amp[0] * u.uK_RJ, map_Q=amp[1] * u.uK_RJ, map_U=amp[2] * u.uK_RJ,
                              freq_ref_I="353 GHz", freq_ref_P="353 GHz", map_mbb_index=beta * u.dimensionless_unscaled,
                              map_mbb_temperature=20.0 * u.K, nside=nside)
    curved = m.CurvedPowerLaw(map_I=amp[0] * u.uK_RJ, map_Q=amp[1] * u.uK_RJ, map_U=amp[2] * u.uK_RJ,
                              freq_ref_I="23 GHz", freq_ref_P="23 GHz",
                              map_pl_index=(beta - 4.5) * u.dimensionless_unscaled,
                              spectral_curvature=-0.1 * u.dimensionless_unscaled, freq_curve="23 GHz", nside=nside)
    for model in (mbb, curved):
        assert not foregrounds.is_uniform(model)
        for freq in (30, 143, 857):
            det = instrument.detector(freq, bandpass="tophat")
            out = np.zeros((3, 12 * nside ** 2))
            foregrounds.add_emission(out, model, det.band_ghz, 1.0, det.band_weights)
            assert relative_error(out, pysm3_band(model, det)) < TOLERANCE, (type(model).__name__, freq)
