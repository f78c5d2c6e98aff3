"""Random fields, envelopes and source counts the synthetic components are built from.

Everything here is RING-ordered numpy; the generators come from the caller
(:mod:`cmbcube.science.seeds`), so a component's draws are the same whatever else is built.
"""
from __future__ import annotations

import functools

import numpy as np

from cmbcube.science import sht

SMOOTH_LMAX = 96      # spectral-index maps are smooth: band-limit them (cheap at any nside)


@functools.lru_cache(maxsize=8)
def galactic_coords(nside: int) -> tuple[np.ndarray, np.ndarray]:
    """Galactic (longitude, latitude) in radians of RING pixels."""
    import healpy as hp
    theta, phi = hp.pix2ang(nside, np.arange(12 * nside * nside))
    return phi, np.pi / 2 - theta


# The Galaxy's frame.  A sky's geometry (the disk and its envelope, the ordered field's direction,
# radio loops) is defined in the Galaxy's own frame; ``frame`` is the rotation (a 3x3 matrix as a
# 9-tuple, rows first) taking a Galactic unit vector to that frame, or None for the Galactic frame
# itself (the sky of every sim shares its large-scale geometry).  See ``random_frame``.
def random_frame(rng: np.random.Generator, shared: float) -> tuple | None:
    """A rotation drawn uniformly over SO(3) (a normalised Gaussian quaternion) with its angle scaled
    by 1 - ``shared``: None for ``shared`` = 1 (no draw), a uniformly random orientation for 0."""
    if shared >= 1:
        return None
    q = rng.standard_normal(4)
    q /= np.linalg.norm(q)
    angle = 2 * np.arccos(min(abs(q[0]), 1.0)) * (1 - shared)
    axis = q[1:] / max(np.linalg.norm(q[1:]), 1e-300)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)      # Rodrigues
    return tuple(float(x) for x in rot.ravel())


def frame_coords(nside: int, frame: tuple | None) -> tuple[np.ndarray, np.ndarray]:
    """(longitude, latitude) of RING pixels in the Galaxy's frame (``galactic_coords`` when None)."""
    if frame is None:
        return galactic_coords(nside)
    import healpy as hp
    vec = np.asarray(frame).reshape(3, 3) @ np.array(hp.pix2vec(nside, np.arange(12 * nside * nside)))
    return np.arctan2(vec[1], vec[0]), np.arcsin(np.clip(vec[2], -1, 1))


def galactic_direction(l_deg: float, b_deg: float, frame: tuple | None) -> tuple[float, float]:
    """Galactic (l, b) in degrees of the direction at (l, b) in the Galaxy's frame."""
    if frame is None:
        return l_deg, b_deg
    lon, lat = np.radians(l_deg), np.radians(b_deg)
    v = np.asarray(frame).reshape(3, 3).T @ np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon),
                                                      np.sin(lat)])
    return float(np.degrees(np.arctan2(v[1], v[0]))), float(np.degrees(np.arcsin(np.clip(v[2], -1, 1))))


def power_law_cl(lmax: int, index: float, ell0: float = 80.0) -> np.ndarray:
    """C_ell ~ ell^index (zero below ell = 2), normalised to unit pixel variance."""
    ell = np.arange(lmax + 1, dtype=float)
    cl = np.zeros(lmax + 1)
    cl[2:] = (ell[2:] / ell0) ** index
    var = np.sum((2 * ell + 1) * cl) / (4 * np.pi)
    return cl / var                                   # unit pixel variance


def gaussian_field(rng: np.random.Generator, nside: int, index: float, lmax: int | None = None) -> np.ndarray:
    """Unit-variance isotropic Gaussian field (RING) with C_ell ~ ell^index."""
    lmax = min(3 * nside - 1, lmax or 3 * nside - 1)
    cl = power_law_cl(lmax, index)
    z = (rng.standard_normal(sht.alm_size(lmax)) + 1j * rng.standard_normal(sht.alm_size(lmax))) / np.sqrt(2)
    z[: lmax + 1] = rng.standard_normal(lmax + 1)
    # single-precision synthesis: a random template needs no more, and it halves the cost
    return sht.alm2map(sht.almxfl(z, np.sqrt(cl)).astype(np.complex64), nside).astype(np.float64)


def polarised_field(rng: np.random.Generator, nside: int, index: float, eb_ratio: float) -> np.ndarray:
    """(2, npix) Q, U with C_EE ~ ell^index and C_BB = C_EE / eb_ratio, each of unit rms."""
    lmax = 3 * nside - 1
    cl = power_law_cl(lmax, index)
    eb = np.zeros((2, sht.alm_size(lmax)), dtype=np.complex64)   # single precision: a random template
    for k, scale in ((0, 1.0), (1, 1.0 / np.sqrt(eb_ratio))):
        z = (rng.standard_normal(eb.shape[1]) + 1j * rng.standard_normal(eb.shape[1])) / np.sqrt(2)
        z[: lmax + 1] = rng.standard_normal(lmax + 1)
        eb[k] = sht.almxfl(z, np.sqrt(cl) * scale)
        del z
    qu = sht.alm2map_spin2(eb, nside).astype(np.float64)
    return qu / np.sqrt(np.mean(qu ** 2))


def slab_envelope(nside: int, height: float, centre_boost: float = 0.6, frame: tuple | None = None) -> np.ndarray:
    """Plane-parallel slab: 1 / sqrt(sin^2 b + h^2), brighter towards the Galactic centre (b, l in the
    Galaxy's ``frame``)."""
    lon, lat = frame_coords(nside, frame)
    dlon = np.mod(lon + np.pi, 2 * np.pi) - np.pi         # longitude in [-pi, pi)
    return (1 + centre_boost * np.exp(-dlon ** 2 / (2 * np.radians(60) ** 2))) / np.sqrt(np.sin(lat) ** 2 + height ** 2)


def lognormal(rng, nside, sigma, index):
    """exp(sigma g - sigma^2 / 2) of a unit Gaussian field g: a lognormal field of mean one."""
    g = gaussian_field(rng, nside, index)
    return np.exp(sigma * g - sigma ** 2 / 2)      # mean one


def random_alm(rng, lmax: int, cl: np.ndarray) -> np.ndarray:
    """Gaussian alm (healpy layout, complex128) with spectrum ``cl``."""
    z = (rng.standard_normal(sht.alm_size(lmax)) + 1j * rng.standard_normal(sht.alm_size(lmax))) / np.sqrt(2)
    z[: lmax + 1] = rng.standard_normal(lmax + 1)
    return sht.almxfl(z, np.sqrt(cl))


def smooth_part(alm: np.ndarray, nside: int) -> np.ndarray:
    """Unit-variance map of an alm's ell <= SMOOTH_LMAX part (cheap at any nside)."""
    small = sht.truncate_alm(alm, min(SMOOTH_LMAX, sht.lmax_from_size(alm.size)))
    out = sht.alm2map(small.astype(np.complex64), nside).astype(np.float64)
    return out / max(out.std(), 1e-30)


def upgrade(maps: np.ndarray, nside: int, lmax: int) -> np.ndarray:
    """(k, npix_low) RING maps band-limited at ``lmax`` -> (k, 12 nside^2) by harmonic interpolation."""
    if maps.shape[-1] == 12 * nside * nside:
        return maps
    alm = sht.map2alm_scalar(maps, lmax, iterations=1)
    return sht.alm2map_scalar(alm, nside)


@functools.lru_cache(maxsize=4)
def sky_basis(nside: int) -> np.ndarray:
    """(3 [r, theta, phi], 3 [x, y, z], npix) unit vectors of each RING pixel (Galactic Cartesian)."""
    import healpy as hp
    theta, phi = hp.pix2ang(nside, np.arange(12 * nside * nside))
    st, ct, sp, cp = np.sin(theta), np.cos(theta), np.sin(phi), np.cos(phi)
    return np.array([[st * cp, st * sp, ct], [ct * cp, ct * sp, -st], [-sp, cp, np.zeros_like(sp)]])


@functools.lru_cache(maxsize=4)
def ordered_field(nside: int, l0_deg: float, b0_deg: float) -> np.ndarray:
    """(3, npix) unit ordered field towards (l0, b0) along the line of sight (r), south (theta) and
    east (phi) in each RING pixel."""
    l0, b0 = np.radians(l0_deg), np.radians(b0_deg)
    ordered = np.array([np.cos(b0) * np.cos(l0), np.cos(b0) * np.sin(l0), np.sin(b0)])
    return np.einsum("i,kip->kp", ordered, sky_basis(nside))


def synthesis_stack(alm: np.ndarray, nside: int) -> np.ndarray:
    """(n, nalm) complex64 alms -> (n, npix) float32 maps, spin 0, in one single-precision transform."""
    import ducc0
    lmax = sht.lmax_from_size(alm.shape[-1])
    out = ducc0.sht.experimental.synthesis(alm=np.ascontiguousarray(alm[:, None, :]), spin=0, lmax=lmax,
                                           mstart=sht.mstart(lmax), nthreads=sht.nthreads(),
                                           **sht.geometry(nside))
    return out[:, 0]


def ridge_orientation(g_alm: np.ndarray, nside: int, column_alm: np.ndarray | None = None,
                      contour_weight: float = 0.0, contour_index: float = -1.0, ridge_index: float = 0.0,
                      soft: float = 1.0) -> np.ndarray:
    """(2, npix) Q, U (healpy/COSMO) of unit-ish length perpendicular to the structures of a field.

    The field is the one with alm ``g_alm`` and, with weight ``contour_weight``, the iso-contours are
    those of the field with alm ``column_alm``:

    * ridges: the spin-2 field whose E modes are ``g_alm`` times (ell / 80)^ridge_index (pure E,
      TE > 0): minus the traceless Hessian of the field's inverse-Laplacian potential (ridge_index 0),
      i.e. polarisation across its ridges;
    * contours: the traceless part of grad c grad c for the column field c filtered by
      ell^contour_index (-1: a gradient with C_ell ~ ell^-2.5 like the column's, so the pattern is
      coherent over the scales that dominate the polarisation spectra): polarisation along the
      column's gradient, i.e. the field along its iso-intensity contours (Planck Int. XXXII, XXXV).

    The Hessian of a Gaussian field is independent of its gradient at the same point, so only the
    contour term aligns the field with the intensity structures; each term is scaled to unit rms,
    and the sum is softly normalised: divided by sqrt(|Q + iU|^2 + soft <|Q + iU|^2>), so |Q + iU| < 1
    (a smaller ``soft`` saturates more of the sky near 1)."""
    eb = np.zeros((2, g_alm.size), dtype=np.complex64)
    ell_r = np.arange(sht.lmax_from_size(g_alm.size) + 1, dtype=float)
    eb[0] = sht.almxfl(g_alm, (np.maximum(ell_r, 1) / 80.0) ** ridge_index) if ridge_index else g_alm
    qu = sht.alm2map_spin2(eb, nside).astype(np.float64)
    qu /= np.sqrt(np.mean(qu[0] ** 2 + qu[1] ** 2))
    if column_alm is not None and contour_weight:
        import ducc0
        lmax = sht.lmax_from_size(column_alm.size)
        ell = sht.ell_of_alm(lmax).astype(float)
        # spin-1 synthesis of sqrt(l (l + 1)) a_lm: (d/dtheta, d/(sin theta dphi)) as healpy's alm2map_der1
        grad_alm = np.zeros((2, column_alm.size), dtype=np.complex64)
        grad_alm[0] = column_alm * np.sqrt(ell * (ell + 1)) * np.maximum(ell, 1) ** contour_index
        d_theta, d_phi = ducc0.sht.experimental.synthesis(alm=grad_alm, spin=1, lmax=lmax, mstart=sht.mstart(lmax),
                                                          nthreads=sht.nthreads(), **sht.geometry(nside))
        d_theta, d_phi = d_theta.astype(np.float64), d_phi.astype(np.float64)
        grad = np.array([d_theta ** 2 - d_phi ** 2, 2 * d_theta * d_phi])   # polarisation along the gradient
        qu += contour_weight * grad / np.sqrt(np.mean(grad[0] ** 2 + grad[1] ** 2))
    amp2 = qu[0] ** 2 + qu[1] ** 2
    return qu / np.sqrt(amp2 + soft * amp2.mean())


def spin2_field(rng, lmax: int, index: float, b_over_e: float, e_alm: np.ndarray | None = None,
                rho: float = 0.0) -> np.ndarray:
    """(2, nalm) E, B alms (complex64) with C_ell ~ ell^index (unit variance per component before the
    B scaling), C_BB / C_EE = ``b_over_e``; E correlated (coefficient ``rho``) with ``e_alm`` (a unit
    field of the same shape) when given."""
    cl = power_law_cl(lmax, index)
    e = random_alm(rng, lmax, cl)
    if e_alm is not None and rho:
        e = rho * sht.almxfl(e_alm, np.sqrt(cl / np.maximum(_alm_cl(e_alm, lmax), 1e-300))) + np.sqrt(1 - rho ** 2) * e
    return np.stack([e, np.sqrt(b_over_e) * random_alm(rng, lmax, cl)]).astype(np.complex64)


def _alm_cl(alm: np.ndarray, lmax: int) -> np.ndarray:
    """Empirical C_ell of an alm (healpy layout)."""
    ell = sht.ell_of_alm(lmax)
    w = np.where(np.arange(alm.size) <= lmax, 1.0, 2.0)            # m = 0 once, m > 0 twice
    num = np.bincount(ell, weights=w * np.abs(alm) ** 2, minlength=lmax + 1)
    return num / (2 * np.arange(lmax + 1) + 1)


def loop_shell(nside: int, l_deg: float, b_deg: float, radius_deg: float, width_deg: float) -> tuple:
    """(profile, q, u) of a radio loop: a Gaussian shell profile (peak 1) at ``radius_deg`` from the
    centre (l, b), and the healpy/COSMO Q, U of a unit polarisation pointing radially (towards the
    centre): the field along the shell, as in Loop I / the North Polar Spur."""
    lon, lat = galactic_coords(nside)                              # phi and pi/2 - theta of each pixel
    lc, bc = np.radians(l_deg), np.radians(b_deg)
    cx, cy, cz = np.cos(bc) * np.cos(lc), np.cos(bc) * np.sin(lc), np.sin(bc)
    st, ct, sp, cp = np.cos(lat), np.sin(lat), np.sin(lon), np.cos(lon)
    cos_d = np.clip(st * (cx * cp + cy * sp) + ct * cz, -1, 1)
    profile = np.exp(-0.5 * ((np.degrees(np.arccos(cos_d)) - radius_deg) / width_deg) ** 2)
    t_theta, t_phi = ct * (cx * cp + cy * sp) - st * cz, cy * cp - cx * sp   # towards the centre, tangent plane
    t2 = np.maximum(t_theta ** 2 + t_phi ** 2, 1e-30)
    return profile, (t_theta ** 2 - t_phi ** 2) / t2, 2 * t_theta * t_phi / t2


def point_sources(rng, nside, count, values):
    """Deposit ``values`` at ``count`` isotropic random positions; returns (map, pixel ids)."""
    import healpy as hp
    z = rng.uniform(-1, 1, count)
    phi = rng.uniform(0, 2 * np.pi, count)
    pix = hp.ang2pix(nside, np.arccos(z), phi)
    out = np.zeros(12 * nside * nside)
    np.add.at(out, pix, values)
    return out, pix


def pareto(rng, count, minimum, slope, maximum=np.inf):
    """Draws with dN/dS ~ S^-slope above ``minimum``, truncated at ``maximum``."""
    x = minimum * (1 - rng.uniform(size=count)) ** (-1 / (slope - 1))
    return np.minimum(x, maximum)
