"""Parameters of the synthetic skies: SED centres, per-sim spreads and template shapes.

Centres and spreads follow the Planck 2018 component separation results and pysm3's
documentation.  ``PARAMS`` is the Gaussian-template Galaxy (``synthetic-gaussian``) and the
extragalactic components; ``GALAXY`` the filamentary Galaxy (``synthetic``), whose calibration
is described in :mod:`cmbcube.science.foregrounds.galaxy`.
"""
from __future__ import annotations

# name: dict of SED centres (per-sim spread in *_sim) and template shapes.
PARAMS = {
    "dust": dict(freq_ref_ghz=353.0, high_lat_uK_RJ=10.0, slab_height=0.02, log_sigma=0.6, cl_index=-2.5,
                 pol_fraction=0.07, pol_cl_index=-2.4, eb_ratio=2.0,
                 beta=1.53, beta_sim=0.03, beta_spatial=0.05, temp_K=19.6, temp_sim=0.5, temp_spatial=1.0),
    "synchrotron": dict(freq_ref_ghz=23.0, high_lat_uK_RJ=40.0, slab_height=0.08, log_sigma=0.5, cl_index=-2.8,
                        pol_fraction=0.12, pol_cl_index=-2.8, eb_ratio=2.0,
                        beta=-3.05, beta_sim=0.03, beta_spatial=0.1),
    "freefree": dict(freq_ref_ghz=30.0, high_lat_uK_RJ=1.0, slab_height=0.015, log_sigma=1.0, cl_index=-2.0,
                     beta=-2.14),
    "ame": dict(freq_ref_ghz=23.0, dust_ratio=0.3, log_sigma=0.3, cl_index=-2.5,
                beta=-2.0, curvature=-0.7, curvature_sim=0.05),
    "cib": dict(freq_ref_ghz=545.0, mean_uK_RJ=65.0, rel_rms=0.12, cl_index=-1.2,
                beta=1.6, beta_sim=0.05, temp_K=22.0, temp_sim=1.0),
    "tsz": dict(mean_count=4000, y_area_min_arcmin2=3e-4, y_area_max_arcmin2=0.1, count_slope=2.5),
    "radio": dict(freq_ref_ghz=30.0, count_above_0p5Jy=1000, flux_min_jy=0.1, count_slope=2.5,
                  flux_index=-0.7, flux_index_spread=0.3, pol_fraction=0.03),
}

SKY_MODELS = {
    "synthetic": {"version": "3.0", "description": "filamentary Galaxy: lognormal dust, polarisation from an "
                  "ordered + turbulent magnetic field in layers (healpy/COSMO Stokes U) with the field along the "
                  "dust's ridges and iso-intensity contours; synchrotron from the same field with E > B "
                  "filaments at full resolution, a sky-varying depolarisation and Loop I; calibrated with "
                  "B-purified spectra; SED parameters correlated with intensity"},
    "synthetic-gaussian": {"version": "1.1", "description": "Gaussian random-field templates under a latitude "
                           "law (the default before 2.0); 1.1: its dust and synchrotron unchanged, the free-free, "
                           "AME and CIB it shares with the filamentary sky independent of the resolution"},
}

GALAXY = {
    "field": dict(l0_deg=70.0, b0_deg=24.0, f_m=0.9, alpha_m=-2.8, layers=3, lmax=191, nside_max=64),
    "dust": dict(freq_ref_ghz=353.0, high_lat_uK_RJ=30.0, slab_height=0.02, log_sigma=0.8, cl_index=-2.5,
                 p0=0.25, align=0.7, ridge_rho=0.6, ridge_index=0.12, ridge_soft=0.3,
                 contour_weight=1.7, contour_index=-1.3,
                 beta=1.53, beta_sim=0.03, beta_spatial=0.05, beta_rho=0.4,
                 temp_K=19.6, temp_sim=0.5, temp_spatial=1.0, temp_rho=-0.5),
    "synchrotron": dict(freq_ref_ghz=23.0, high_lat_uK_RJ=55.0, slab_height=0.08, log_sigma=0.4, cl_index=-2.8,
                        pol_align=0.99, pol_index=-2.95, pol_b_over_e=0.02, pol_rho=0.3, pol_soft=1.0,
                        depol_mean=-0.35, depol_sigma=0.6, depol_index=-3.5,
                        # Loop I (Berkhuijsen et al. 1971): centre (l, b), radius, shell width [deg],
                        # intensity boost, depolarisation factor kept in the shell, weight of its pattern
                        loop=(329.0, 17.5, 58.0, 4.0, 0.5, 0.6, 1.0),
                        beta=-3.05, beta_sim=0.03, beta_spatial=0.1, beta_rho=0.5),
}
