"""Spectral energy distributions and physical constants of the foreground components.

The emission SEDs the simulator evaluates per pixel live in :mod:`.pysm` (the factors of
pysm3's model classes); here are the thermal SZ spectrum and the central SEDs per unit
amplitude that the components register for the ILC's deprojection.
"""
from __future__ import annotations

import numpy as np

T_CMB = 2.7255  # K
H_PLANCK = 6.62607015e-34   # J s
K_BOLTZMANN = 1.380649e-23  # J / K


def tsz_spectrum(freq_ghz: float) -> float:
    """Delta T / (T_CMB y) of the thermal SZ effect (non-relativistic)."""
    x = 6.62607015e-34 * freq_ghz * 1e9 / (1.380649e-23 * T_CMB)
    return x / np.tanh(x / 2) - 4


def rj_factor(freq_ghz, unit_from):
    """Factor taking ``unit_from`` to uK_RJ at ``freq_ghz``."""
    from cmbcube.science.instrument import unit_factor
    return unit_factor(freq_ghz, unit_from, "uK_RJ")


def tsz_sed(freq_ghz: float) -> float:
    """uK_RJ of thermal SZ per unit Compton y at ``freq_ghz``."""
    return T_CMB * tsz_spectrum(freq_ghz) * rj_factor(freq_ghz, "K_CMB")


def tsz_uk_cmb(freq_ghz: float) -> float:
    """uK_CMB of thermal SZ per unit Compton y (the deprojection SED)."""
    return T_CMB * 1e6 * tsz_spectrum(freq_ghz)


def modified_black_body(freq_ghz: float, ref_ghz: float, beta: float, temp_k: float) -> float:
    """(nu / nu0)^(beta - 2) B_nu(T) / B_nu0(T): a modified black body in uK_RJ, one at ``ref_ghz``."""
    h_k = 6.62607015e-34 / 1.380649e-23

    def planck(f):
        return f ** 3 / np.expm1(h_k * f * 1e9 / temp_k)
    return (freq_ghz / ref_ghz) ** (beta - 2) * planck(freq_ghz) / planck(ref_ghz)


def power_law(freq_ghz: float, ref_ghz: float, beta: float) -> float:
    """(nu / nu0)^beta in uK_RJ, one at ``ref_ghz``."""
    return (freq_ghz / ref_ghz) ** beta
