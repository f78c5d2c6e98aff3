import healpy as hp
import numpy as np
import pytest

from cmbcube.science import instrument, needlets, sht


def test_windows_partition_unity():
    for peaks, lmax in (([0, 200, 715, 1025], 1024), ([0, 100, 200, 300, 383], 382), ([0, 25, 50, 75, 96], 95)):
        h = needlets.cosine_windows(peaks, lmax)
        assert np.allclose((h ** 2).sum(0), 1, atol=1e-12)
        assert np.argmax(h[1]) == peaks[1]
    g = needlets.gaussian_windows([300, 120, 60, 30], 383)
    assert np.allclose((g ** 2).sum(0), 1, atol=1e-12) and g.shape == (5, 384)


@pytest.mark.parametrize("peaks, message", [
    ([0, 50, 40, 96], "strictly increasing"),
    ([0, 50, 200], "above lmax"),
    ([5, 50, 96], "first peak must be 0"),
])
def test_bad_peaks(peaks, message):
    with pytest.raises(needlets.ILCError, match=message):
        needlets.cosine_windows(peaks, 95)


def test_default_peaks_rule():
    assert needlets.default_peaks(512) == [0, 200, 715, 1025]
    assert needlets.default_peaks(128) == [0, 100, 200, 300, 383]
    assert needlets.default_peaks(32) == [0, 25, 50, 75, 96]
    for nside in (8, 16, 64, 256):
        p = needlets.default_peaks(nside)
        assert p[-1] == 3 * nside and all(b > a for a, b in zip(p[:-1], p[1:]))


def _channels(nside, seed, noise_uk, fwhms, foreground=None, sed=None, pol=False):
    """CMB (+ foreground with SED) + white noise per channel, beam-convolved, as scalar alms."""
    lmax = 3 * nside - 1
    rng = np.random.default_rng(seed)
    ell = np.arange(lmax + 1)
    cl = np.zeros(lmax + 1)
    cl[2:] = 2000 * 2 * np.pi / (ell[2:] * (ell[2:] + 1.0))       # flat D_l = 2000 uK^2
    np.random.seed(seed)
    cmb = hp.synalm(cl, lmax=lmax)
    alms, transfers = [], []
    for k, (sig, fwhm) in enumerate(zip(noise_uk, fwhms)):
        bl = instrument.gaussian_beam(fwhm, lmax)[0]
        a = sht.almxfl(cmb, bl)
        if foreground is not None:
            a = a + sed[k] * sht.almxfl(foreground, bl)
        noise = rng.standard_normal(12 * nside ** 2) * sig
        a = a + sht.map2alm(noise, lmax, 3)
        alms.append(a)
        transfers.append(bl)
    return cmb, np.array(alms), np.array(transfers)


def test_nilc_on_cmb_plus_white_noise_is_close_to_the_ideal_combination():
    nside, lmax = 32, 95
    noise = [40.0, 25.0, 60.0, 30.0]
    fwhms = [60.0, 45.0, 40.0, 50.0]
    cmb, alms, transfers = _channels(nside, 1, noise, fwhms)
    common = instrument.gaussian_beam(60.0, lmax)[0]
    windows = needlets.cosine_windows(needlets.default_peaks(nside), lmax)
    out = needlets.nilc(alms, transfers, common, windows, nside, np.ones(4))
    resid = out - sht.almxfl(cmb, common)
    measured = hp.alm2cl(resid)
    # ideal: inverse-noise weighting in harmonic space, at the common beam
    nl = np.array([(s ** 2) * 4 * np.pi / (12 * nside ** 2) for s in noise])
    ideal = 1.0 / np.sum(transfers ** 2 / (common[None] ** 2 * nl[:, None]), axis=0)
    # at l >= 40 the scales hold enough modes for the ILC bias (chance CMB-noise
    # correlations, ~ (n_channels - 1) / n_modes of the CMB power) to be negligible
    band = slice(40, 80)
    ratio = measured[band].sum() / ideal[band].sum()
    assert 0.9 < ratio < 1.1, ratio
    hilc = hp.alm2cl(needlets.hilc(alms, transfers, common, np.ones(4)) - sht.almxfl(cmb, common))
    assert 0.9 < hilc[band].sum() / ideal[band].sum() < 1.15
    # far better than the best single channel
    best = min(np.sum((nl[i] * common ** 2 / transfers[i] ** 2)[band]) for i in range(4))
    assert measured[band].sum() < 0.6 * best


def test_deprojection_removes_a_strong_foreground_to_numerical_precision():
    nside, lmax = 32, 95
    np.random.seed(5)
    ell = np.arange(lmax + 1)
    fg = hp.synalm(np.r_[0, 0, 1e7 / ell[2:] ** 2.5], lmax=lmax)          # huge, red foreground
    sed = np.array([0.2, 0.5, 1.0, 3.0, 9.0])
    noise = [20.0] * 5
    fwhms = [40.0] * 5
    cmb, alms, transfers = _channels(nside, 2, noise, fwhms, fg, sed)
    common = transfers[0]
    windows = needlets.cosine_windows(needlets.default_peaks(nside), lmax)
    out, infos, weights = needlets.nilc(alms, transfers, common, windows, nside, np.ones(5),
                                        deproject=sed[:, None], return_info=True)
    for w, info in zip(weights, infos):
        assert np.abs(w @ np.ones(len(info.channels)) - 1).max() < 1e-9          # CMB response exactly 1
        assert np.abs(w @ sed[info.channels]).max() < 1e-9 * np.abs(w).max()   # foreground response 0
    # with w.f = 0 the foreground drops out of both the output and the variance being
    # minimised, so the result equals that of the same sky without the foreground
    _, clean_alms, _ = _channels(nside, 2, noise, fwhms)
    clean = needlets.nilc(clean_alms, transfers, common, windows, nside, np.ones(5), deproject=sed[:, None])
    fg_power = hp.alm2cl(sht.almxfl(fg, common))[2:].sum()
    assert hp.alm2cl(out - clean)[2:].sum() < 1e-12 * fg_power
    assert hp.alm2cl(out - sht.almxfl(cmb, common))[2:].sum() < 1e-4 * fg_power      # noise is what remains


def test_hilc_and_response():
    nside = 32
    cmb, alms, transfers = _channels(nside, 3, [40.0, 25.0, 60.0], [50.0, 50.0, 50.0])
    out, w = needlets.hilc(alms, transfers, transfers[0], np.ones(3), return_weights=True)
    assert np.allclose(w.sum(1)[2:], 1)
    resid = hp.alm2cl(out - sht.almxfl(cmb, transfers[0]))
    best = hp.alm2cl(alms[1] - sht.almxfl(cmb, transfers[0]))
    assert resid[10:80].sum() < best[10:80].sum()


def test_too_few_channels_and_unknown_sed():
    w = needlets.cosine_windows([0, 50, 96], 95)
    alms = np.zeros((1, sht.alm_size(95)), dtype=complex)
    with pytest.raises(needlets.ILCError, match="need at least 2"):
        needlets.nilc(alms, np.ones((1, 96)), np.ones(96), w, 32, np.ones(1), deproject=np.ones((1, 1)))
    with pytest.raises(needlets.ILCError, match="allowed: dust"):
        needlets.sed_vector("co", [100.0], ["uK_CMB"])


def test_cmbml_needlets_at_nside_512_keep_a_channel_at_every_scale():
    """CMB-ML's nside-512 peaks end at ELLMAX 1024 (its PyILC configuration); every scale then keeps channels
    whose beams carry signal. Run to 3 nside - 1 instead, the last scale reached l = 1535, where no CMB-ML
    beam (857 GHz, 20.6', ends at l = 1460) does: NILC refused every sim at nside 512."""
    lmax = 3 * 512 - 1
    peaks = needlets.default_peaks(512)
    ends = [needlets.beam_end(instrument.gaussian_beam(instrument.detector(f).fwhm_arcmin, lmax)[0])
            for f in (44, 70, 100, 143, 217, 353, 545, 857)]
    assert needlets.cosine_lmax(peaks, lmax) == 1024
    for h in needlets.cosine_windows(peaks, needlets.cosine_lmax(peaks, lmax)):
        assert needlets.top_ell(h) <= max(ends)
    assert needlets.top_ell(needlets.cosine_windows(peaks, lmax)[-1]) > max(ends)      # the old band limit
    assert needlets.cosine_lmax(needlets.default_peaks(256), 767) == 767                # scaled peaks: unchanged
