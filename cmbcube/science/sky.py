"""One simulation: cosmology -> CMB, foregrounds, beams, pixel window, noise.

Pure science on numpy arrays: no Dask, no Zarr, no files.  A :class:`Simulator` holds
what is shared by every sim of a recipe (beams, windows, noise rms maps,
fixed foregrounds) so worker processes build it once.  It is configured by a
:class:`SimSpec` (built from a recipe by ``cmbcube.stages.simspec``), whose readers
hand it what lives in files (pysm3 templates, variance maps, a parameter chain).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np

from cmbcube.science import cosmology, foregrounds, instrument, noise, pixwin, seeds, sht


def _pad(alm: np.ndarray, nc: int) -> np.ndarray:
    """(k, nalm) alms with zero rows appended up to ``nc`` components (T only -> T, E=0, B=0)."""
    if alm.shape[0] >= nc:
        return alm[:nc]
    return np.concatenate([alm, np.zeros((nc - alm.shape[0], alm.shape[1]), dtype=alm.dtype)])


@dataclasses.dataclass
class SimResult:
    obs: np.ndarray                 # (detector, field, pixel) float32, NESTED
    cmb: np.ndarray                 # (field, pixel) float32, NESTED
    params: np.ndarray              # (param,) float64
    cls: np.ndarray                 # (spectrum, ell) float64, uK_CMB^2
    components: np.ndarray | None = None   # (component, detector, field, pixel)
    noise: np.ndarray | None = None        # (detector, field, pixel)
    timings: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class SimSpec:
    """Everything one recipe's simulations depend on, as explicit values.

    ``units``: the recipe's choice (uK_CMB, K_CMB or native).  ``analysis_lmax``: ``pysm3`` or ``sky``.
    ``foreground_model``: a synthetic sky model, ``pysm3`` or ``none``; ``components``: the store's
    component axis (synthetic components or pysm3 presets).  The readers are called when needed:
    ``load_presets()`` -> {preset: pysm3 model} (``foreground_model: pysm3``),
    ``variance_map(freq=, field=)`` -> per-pixel variance (native unit^2, NESTED, output nside)
    (``noise_model: variance_maps``); ``chain``: {parameter: column} when ``cmb_prior`` is ``chain``.
    """

    seed: int
    nside: int
    sky_nside: int
    fields: tuple
    detectors: tuple
    units: str = "uK_CMB"
    pixel_window: bool = True
    analysis_lmax: str = "pysm3"
    map2alm_iterations: int = 1
    cmb_enabled: bool = True
    cmb_prior: str = "planck2018"
    cmb_prior_width: float = 1.0
    lens_potential_accuracy: int = 1
    lensing: str = "corrected"
    lensing_correction: tuple | None = None     # cosmology.lensing_correction of this spec, when known
    target_beam_arcmin: float = 0.0
    foreground_model: str = "synthetic"
    components: tuple = ()
    foreground_vary: str = "per_sim"
    foreground_shared: float = 1.0     # foregrounds.shared_structure (foregrounds.synthetic_sky)
    noise_model: str = "white"
    noise_scale: float = 1.0
    noise_hits: str = "scan"
    keep: tuple = ("cmb",)
    chain: dict | None = None
    load_presets: Callable[[], dict] | None = None
    variance_map: Callable[..., np.ndarray] | None = None


cmb_unit = instrument.cmb_unit          # the CMB maps' unit for a recipe's ``units``


class Simulator:
    def __init__(self, spec: SimSpec):
        import healpy as hp
        self.spec = spec
        self.seed = spec.seed
        self.nside, self.sky_nside = spec.nside, spec.sky_nside
        self.npix = 12 * self.nside ** 2
        self.npix_sky = 12 * self.sky_nside ** 2
        self.lmax_out, self.lmax_sky = 3 * self.nside - 1, 3 * self.sky_nside - 1
        # band limit of the sky-model analysis: pysm3's rule for a lower output nside
        # (1.5 x the sky nside, i.e. the output band limit when sky_nside = 2 x nside), or the
        # sky model's own band limit (2.5x-4x slower, errors 5e-4 -> 1.5e-4 on a red sky)
        self.lmax_analysis = max(self.lmax_out, min(self.lmax_sky, int(1.5 * self.sky_nside))) \
            if spec.analysis_lmax == "pysm3" else self.lmax_sky
        self.fields = list(spec.fields)
        self.polarised = any(f in ("Q", "U") for f in self.fields)
        self.detectors = list(spec.detectors)
        self.units = {d.freq: instrument.resolve_unit(spec.units, d) for d in self.detectors}
        self.cmb_unit = cmb_unit(spec.units)
        self.ring2nest = hp.nest2ring(self.nside, np.arange(self.npix))   # nest_map = ring_map[ring2nest]
        window = np.ones((3, self.lmax_out + 1))
        if spec.pixel_window:
            pw_t = pixwin.pixel_window(self.nside, self.lmax_out)
            pw_p = pixwin.polarisation_window(self.nside, self.lmax_out)
            window = np.stack([pw_t, pw_p, pw_p])
        self.window = window
        self.transfer = {d.freq: instrument.gaussian_beam(d.fwhm_arcmin, self.lmax_out) * window
                         for d in self.detectors}
        self.target_transfer = instrument.gaussian_beam(spec.target_beam_arcmin, self.lmax_out) * window
        self.components = list(spec.components)
        self.keep = list(spec.keep)
        self._noise_sigma = {}       # (freq, field) -> (pattern map, scalar)
        self._noise_pattern = None
        self._fixed_models = None
        self._fixed_alms = {}        # fixed foregrounds: their alms per detector, computed once
        model = spec.foreground_model
        # the point the lensing correction is expanded around (cosmology.lensed_spectra)
        self.lensing_expansion = cosmology.expansion_point(spec.cmb_prior, spec.cmb_prior_width, spec.chain) \
            if spec.cmb_enabled and spec.lensing == "corrected" else None
        self._foregrounds_fixed = model == "pysm3" or (model in foregrounds.SKY_MODELS
                                                       and spec.foreground_vary == "fixed")

    # -- static pieces ------------------------------------------------------------
    def noise_sigma(self, det: instrument.Detector, field: str) -> np.ndarray:
        """Per-pixel noise rms (NESTED) in the detector's cube unit.

        Depth-model noise is a scalar per (detector, field) times one hit-pattern map shared by
        all of them, so the cache holds one map, not one per (detector, field) (630 MB at nside 512).
        """
        key = (det.freq, field)
        if key not in self._noise_sigma:
            spec = self.spec
            to_unit = instrument.band_unit_factor(det, det.native_unit, self.units[det.freq])
            if spec.noise_model == "variance_maps":
                var = spec.variance_map(freq=det.freq, field=field)
                self._noise_sigma[key] = (np.sqrt(np.clip(var, 0, None)).astype(np.float32), to_unit * spec.noise_scale)
            else:
                if self._noise_pattern is None:
                    hits = noise.scan_hits(self.nside) if spec.noise_hits == "scan" else None
                    self._noise_pattern = np.broadcast_to(noise.pixel_sigma(1.0, self.nside, hits), (self.npix,))
                scalar = det.noise_depth_arcmin(field) * to_unit * spec.noise_scale
                self._noise_sigma[key] = (self._noise_pattern, scalar)
        pattern, scalar = self._noise_sigma[key]
        return pattern * scalar

    def noise_realisation(self, split: str, sim: int, det: instrument.Detector, field: str) -> np.ndarray:
        """The noise map (NESTED, the detector's cube unit) of (split, sim, detector, field): the one
        inside that sim's obs."""
        n = seeds.rng(self.seed, split, sim, "noise", det.freq, field).standard_normal(self.npix)
        n *= self.noise_sigma(det, field)
        return n

    def foreground_models(self, split: str, sim: int) -> dict:
        spec = self.spec
        if spec.foreground_model == "none":
            return {}
        if spec.foreground_model == "pysm3":
            if self._fixed_models is None:
                self._fixed_models = spec.load_presets()
            return self._fixed_models
        if spec.foreground_vary == "fixed":
            if self._fixed_models is None:
                self._fixed_models = foregrounds.synthetic_sky(
                    spec.components, self.sky_nside,
                    lambda name: seeds.rng(self.seed, "fixed", 0, "foreground-" + name), lambda name: None,
                    spec.foreground_model, spec.foreground_shared)
            return self._fixed_models
        return foregrounds.synthetic_sky(spec.components, self.sky_nside,
                                         *seeds.foreground_streams(self.seed, split, sim), spec.foreground_model,
                                         spec.foreground_shared)

    def _analyse(self, maps: np.ndarray, iterations: int) -> np.ndarray:
        """Sky-model map -> alm at the output band limit (analysis at ``lmax_analysis``, then truncated).

        Single-precision transforms: half the time of double precision, relative errors ~1e-6,
        far below those of the quadrature itself (~5e-4 after one iteration).
        """
        alm = sht.map2alm(maps, self.lmax_analysis, iterations, single=True)
        return sht.truncate_alm(alm, self.lmax_out).astype(np.complex128)

    def _uniform_alms(self, models: dict, iterations: int) -> dict:
        """{name: (alm of the reference maps, SED factor function)} of the components whose SED
        is the same everywhere: one analysis per sim instead of one per detector."""
        out = {}
        for name, mdl in models.items():
            if not foregrounds.is_uniform(mdl):
                continue
            # in single precision, as the analysis reads it, and I alone when Q and U are zero
            ref = foregrounds.reference_maps(mdl, None if self.polarised else 1, np.float32)
            out[name] = (self._analyse(ref, iterations), foregrounds.uniform_sed(mdl))
            del ref
        return out

    # -- one sim ------------------------------------------------------------------
    def run(self, split: str, sim: int) -> SimResult:
        timings: dict[str, float] = {}

        @contextmanager
        def timed(name):
            t0 = time.perf_counter()
            yield
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0

        spec = self.spec
        ncomp_alm = 3 if self.polarised else 1
        with timed("cmb"):
            if spec.cmb_enabled:
                params = cosmology.draw_params(seeds.rng(self.seed, split, sim, "cosmology"),
                                               spec.cmb_prior, spec.cmb_prior_width, spec.chain)
                # the CMB enters every map band-limited at the output lmax: the realisation runs to
                # lmax_out, not to the sky model's; its spectra are accurate there (lensed BB included)
                cls = cosmology.lensed_spectra(params, self.lmax_out, spec.lens_potential_accuracy, spec.lensing,
                                               self.lensing_expansion, spec.lensing_correction)
                cmb_alm = cosmology.synalm(cls, seeds.rng(self.seed, split, sim, "cmb"))[:ncomp_alm]
                param_vec = np.array([params[p] for p in cosmology.PARAMS])
            else:
                cls = np.zeros((4, self.lmax_out + 1))
                cmb_alm = np.zeros((ncomp_alm, sht.alm_size(self.lmax_out)), dtype=np.complex128)
                param_vec = np.full(len(cosmology.PARAMS), np.nan)
        ndet, nfield = len(self.detectors), len(self.fields)
        names = self.components if spec.foreground_model != "none" else []
        keep_comp = "components" in self.keep and bool(names)
        # fixed foregrounds (pysm3 presets, vary: fixed): their alms per detector are the same in
        # every sim, so they are computed once per worker and the templates are then freed (not
        # when component truths are kept: that cache would hold every component's alms)
        fixed = self._foregrounds_fixed and bool(names) and not keep_comp
        cache_ready = fixed and len(self._fixed_alms) == ndet
        models = {}
        if not cache_ready:
            with timed("foreground_templates"):
                models = dict(self.foreground_models(split, sim))
        obs = np.full((ndet, nfield, self.npix), np.nan, dtype=np.float32)
        comps = np.full((len(names), ndet, nfield, self.npix), np.nan, dtype=np.float32) if keep_comp else None
        noise_maps = np.full((ndet, nfield, self.npix), np.nan, dtype=np.float32) if "noise" in self.keep else None
        field_index = {f: k for k, f in enumerate(self.fields)}
        iterations = spec.map2alm_iterations
        uniform = {}
        if models:
            with timed("harmonic_transforms"):
                uniform = self._uniform_alms(models, iterations)
            for name in uniform:          # their maps are no longer needed: free them early
                del models[name]

        for i, det in enumerate(self.detectors):
            unit = self.units[det.freq]
            nc = 3 if (self.polarised and det.polarised) else 1
            rj_to_unit = instrument.band_unit_factor(det, "uK_RJ", unit)      # band-integrated uK_RJ -> unit
            if cache_ready:
                fg_total, comp_alms = self._fixed_alms[det.freq]
            else:
                comp_alms = {}
                with timed("harmonic_transforms"):
                    for name, (alm, factor) in uniform.items():
                        comp_alms[name] = _pad(alm[:nc], nc) * (det.band_average(factor) * rj_to_unit)
                varying = None
                for name, mdl in models.items():
                    if keep_comp:
                        with timed("foreground_emission"):
                            # single precision, like the transforms that follow
                            emission = foregrounds.emission(mdl, det.band_ghz, nc, rj_to_unit, np.float32,
                                                            det.band_weights)
                        with timed("harmonic_transforms"):
                            comp_alms[name] = self._analyse(emission, iterations)
                        del emission
                        continue
                    with timed("foreground_emission"):
                        if varying is None:          # one running sum: bounded memory at high nside
                            varying = np.zeros((nc, self.npix_sky), dtype=np.float32)
                        foregrounds.add_emission(varying, mdl, det.band_ghz, rj_to_unit, det.band_weights)
                with timed("harmonic_transforms"):
                    fg_total = sum(comp_alms.values()) if comp_alms else 0
                    if varying is not None:
                        fg_total = fg_total + self._analyse(varying, iterations)
                del varying
                if fixed:
                    # cached in single precision, as computed (half the memory: 255 MB at nside 512),
                    # and used rounded in this sim too, so a sim's bytes never depend on whether
                    # its worker filled the cache or found it filled
                    fg_total = np.asarray(fg_total).astype(np.complex64)
                    self._fixed_alms[det.freq] = (fg_total, comp_alms)
            with timed("harmonic_transforms"):
                total = fg_total + cmb_alm[:nc] * instrument.band_unit_factor(det, "uK_CMB", unit)
                transfer = self.transfer[det.freq][:nc]
                sky_map = sht.alm2map(sht.almxfl(total, transfer).astype(np.complex64), self.nside)[:, self.ring2nest]
                if keep_comp:
                    for c, name in enumerate(names):
                        cmap = sht.alm2map(sht.almxfl(comp_alms[name], transfer).astype(np.complex64),
                                           self.nside)[:, self.ring2nest]
                        for k, f in enumerate("IQU"[:nc]):
                            if f in field_index:
                                comps[c, i, field_index[f]] = cmap[k]
            with timed("noise"):
                for k, f in enumerate("IQU"[:nc]):
                    if f not in field_index:
                        continue
                    value = sky_map[k]
                    if spec.noise_model != "none":
                        n = self.noise_realisation(split, sim, det, f)
                        value = value + n
                        if noise_maps is not None:
                            noise_maps[i, field_index[f]] = n
                    elif noise_maps is not None:
                        noise_maps[i, field_index[f]] = 0.0
                    obs[i, field_index[f]] = value

        if fixed and len(self._fixed_alms) == ndet:
            self._fixed_models = None          # every detector's alms are cached: templates not needed
        del models
        with timed("cmb"):
            scale = 1.0 / instrument.to_uk_cmb(self.cmb_unit)
            target = sht.alm2map(sht.almxfl(cmb_alm, self.target_transfer[:ncomp_alm]), self.nside)
            target = target[:, self.ring2nest] * scale
            cmb = np.stack([target["IQU".index(f)] for f in self.fields]).astype(np.float32)
        return SimResult(obs, cmb, param_vec, cls, comps, noise_maps, timings)
