"""``cmbcube assets``: the external files a recipe can use, where they go, and fetching them.

Kinds of asset (each has a mirror name ``<kind>/<relative path>``):

- ``pysm3``: template files of the recipe's pysm3 presets at its sky nside (needed when
  ``foregrounds.model: pysm3``); they live under ``foregrounds.data_dir`` or ``$PYSM_LOCAL_DATA``
  with pysm3's own relative paths;
- ``variance``: Planck per-pixel variance maps ``{noise.variance_dir}/{freq}.fits`` (II, QQ, UU
  columns), needed when ``noise.model: variance_maps``; from the Planck Legacy Archive they are
  cut out of the full-mission frequency maps (columns II_COV, QQ_COV, UU_COV);
- ``chain``: the cosmology chain ``cmb.chain_file`` (needed when ``cmb.prior: chain``);
- ``mask``: a Planck Galactic-plane mask for ``cmbcube analyze --mask`` (optional).

Which files a recipe needs comes from :mod:`cmbcube.interop.inputs` (the answer simulate's
preflight and ``check-recipe`` use too); this module adds where each comes from and goes.
Fetching (:func:`cmbcube.interop.fetch.fetch`) downloads what is missing over HTTP(S).  A mirror
(``base_url``) holds files under their mirror names and may hold ``manifest.json`` in this
module's format::

    {"format": "cmbcube-assets/1",
     "files": {"pysm3/pysm_2/ff_t_new.fits": {"size": 100676160, "sha256": "..."}, ...}}

(``python -m cmbcube.interop.assets DIR`` writes one for a mirror directory).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from cmbcube.errors import CmbcubeError
from cmbcube.interop.inputs import recipe_inputs
from cmbcube.interop.templates import search_dirs
from cmbcube.recipe import Recipe

MANIFEST_FORMAT = "cmbcube-assets/1"
MANIFEST_NAME = "manifest.json"
# Where each kind comes from without a mirror (None: no public file in this exact form).
SOURCES = {
    "pysm3": "https://portal.nersc.gov/project/cmb/pysm-data/",          # pysm3.utils.data.DATAURL
    "variance": "https://irsa.ipac.caltech.edu/data/Planck/release_3/all-sky-maps/maps/",
    "mask": "https://irsa.ipac.caltech.edu/data/Planck/release_2/ancillary-data/masks/",
    "chain": None,
}
# Planck 2018 (PR3) full-mission frequency maps: I, Q, U, hits and the II..UU covariances.
PLANCK_MAPS = {
    30: "LFI_SkyMap_030_1024_R3.00_full.fits", 44: "LFI_SkyMap_044_1024_R3.00_full.fits",
    70: "LFI_SkyMap_070_1024_R3.00_full.fits", 100: "HFI_SkyMap_100_2048_R3.01_full.fits",
    143: "HFI_SkyMap_143_2048_R3.01_full.fits", 217: "HFI_SkyMap_217_2048_R3.01_full.fits",
    353: "HFI_SkyMap_353_2048_R3.01_full.fits", 545: "HFI_SkyMap_545_2048_R3.01_full.fits",
    857: "HFI_SkyMap_857_2048_R3.01_full.fits",
}
VARIANCE_COLUMNS = ("II_COV", "QQ_COV", "UU_COV")
MASK_SOURCE = "HFI_Mask_GalPlane-apo0_2048_R2.00.fits"
MASK_COLUMN = "GAL080"                  # f_sky ~ 0.8, the pipeline's default analysis sky fraction
MASK_NAME = "planck_galplane_gal080.fits"
CHUNK = 1 << 20
KIND_WORDS = {"pysm3": "pysm3 templates, read only with foregrounds.model: pysm3", "variance": "Planck variance maps",
              "chain": "cosmology chain", "mask": "Planck mask for analyze --mask"}


class AssetError(CmbcubeError, RuntimeError):
    """A download failed (checksum, size, HTTP status) or files are still missing."""


class Offline(AssetError):
    """The source cannot be reached: the message lists what is missing."""


@dataclasses.dataclass
class Asset:
    kind: str                  # pysm3 / variance / chain / mask
    name: str                  # mirror name: <kind>/<relative path>
    path: Path                 # where the file must end up
    needed: bool               # the recipe uses it as configured
    role: str                  # in words
    url: str | None = None     # upstream source (None: not downloadable as is)
    source_name: str | None = None   # upstream file to cut columns out of (Planck maps, mask)
    columns: tuple = ()        # columns kept from source_name
    directory: bool = False    # a directory of files (pysm3 websky), fetchable from a mirror only
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None

    @property
    def present(self) -> bool:
        return self.path.is_dir() and any(self.path.iterdir()) if self.directory else self.path.is_file()

    def local_size(self) -> int | None:
        if self.directory and self.path.is_dir():
            return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        return self.path.stat().st_size if self.path.is_file() else None


def pysm_roots(recipe: Recipe, destination: str | None) -> tuple[Path, list[Path]]:
    """(where pysm3 templates are fetched to, every directory they are looked for in)."""
    data_dir = recipe["foregrounds"]["data_dir"]
    configured = search_dirs(data_dir)          # foregrounds.data_dir, $PYSM_LOCAL_DATA
    if data_dir:
        target = Path(data_dir)
    elif destination:
        target = Path(destination) / "pysm3"
    elif configured:
        target = configured[0]                     # $PYSM_LOCAL_DATA
    else:
        target = Path("cmbcube-assets") / "pysm3"
    return target, list(dict.fromkeys(configured + [target]))


def list_assets(recipe: Recipe, destination: str | None = None) -> list[Asset]:
    """Every file the recipe can use (:func:`cmbcube.interop.inputs.recipe_inputs`, the optional mask too)
    with where it is or goes and where it comes from."""
    out = []
    target, looked = pysm_roots(recipe, destination)
    seen = set()
    for need in recipe_inputs(recipe, include_unused=True):
        if need.kind == "pysm3":
            rel = need.name
            if " " in rel or rel in seen:        # a unit string ("MJy / sr") or a file shared by presets
                continue
            seen.add(rel)
            directory = rel.endswith("/")
            found = next((d / rel for d in looked if (d / rel).exists()), target / rel)
            out.append(Asset("pysm3", f"pysm3/{rel.rstrip('/')}", Path(str(found).rstrip("/")), need.needed,
                             f"pysm3 preset {need.owner}" + (" (directory of maps)" if directory else " template"),
                             None if directory else SOURCES["pysm3"] + rel, directory=directory))
        elif need.kind == "variance":
            freq = need.owner
            out.append(Asset("variance", f"variance/{freq}.fits", Path(need.name), True,
                             f"Planck {freq} GHz variance map (II, QQ, UU)",
                             SOURCES["variance"] + PLANCK_MAPS[freq] if SOURCES["variance"] else None,
                             source_name=PLANCK_MAPS[freq], columns=VARIANCE_COLUMNS))
        elif need.kind == "chain":
            chain = Path(need.name)
            out.append(Asset("chain", f"chain/{chain.name}", chain, True,
                             "cosmology chain (columns H0 ombh2 omch2 ns tau and As or logA)", None))
    mask_dir = Path(destination or "cmbcube-assets") / "masks"
    out.append(Asset("mask", f"mask/{MASK_NAME}", mask_dir / MASK_NAME, False,
                     f"Planck Galactic-plane mask {MASK_COLUMN} for cmbcube analyze --mask",
                     SOURCES["mask"] + MASK_SOURCE if SOURCES["mask"] else None,
                     source_name=MASK_SOURCE, columns=(MASK_COLUMN,)))
    return out


def where_to_put(recipe: Recipe, destination: str | None = None) -> list[str]:
    r = recipe.data
    target, looked = pysm_roots(recipe, destination)
    lines = []
    fg = r["foregrounds"]
    if fg["data_dir"]:
        origin = "foregrounds.data_dir"
    elif os.environ.get("PYSM_LOCAL_DATA") == str(target):
        origin = "$PYSM_LOCAL_DATA"
    else:
        origin = (f"{'--destination' if destination else 'default'}; then set foregrounds.data_dir: {target} "
                  f"or export PYSM_LOCAL_DATA={target}")
    lines.append(f"pysm3 templates: under {target} ({origin}) with pysm3's relative paths; looked for in "
                 f"{', '.join(map(str, looked))}"
                 + ("" if fg["model"] == "pysm3" else "; used only with foregrounds.model: pysm3"))
    if r["noise"]["model"] == "variance_maps":
        lines.append(f"variance maps: {r['noise']['variance_dir']}/{{freq}}.fits (noise.variance_dir), columns "
                     "II, QQ, UU in native unit^2; fetched from the Planck Legacy Archive maps' II_COV, QQ_COV, UU_COV")
    if r["cmb"]["enabled"] and r["cmb"]["prior"] == "chain":
        lines.append(f"cosmology chain: {r['cmb']['chain_file']} (cmb.chain_file); a text table whose header names "
                     "H0 ombh2 omch2 ns tau and As or logA, e.g. converted from the Planck 2018 chains "
                     "(COM_CosmoParams_fullGrid_R3.01) or any MCMC sampler; fetched only from a mirror (--base-url)")
    lines.append(f"mask (optional): any path, passed as cmbcube analyze --mask PATH; fetched to "
                 f"{Path(destination or 'cmbcube-assets') / 'masks'}")
    return lines


def _kinds(assets: list[Asset]) -> str:
    return "; ".join(dict.fromkeys(KIND_WORDS[a.kind] for a in assets))


def summary(recipe: Recipe, assets: list[Asset]) -> str:
    """One sentence: what the recipe needs and whether it is here, then the optional files, kept apart from
    the needed ones (a missing optional file never makes the needed ones look missing, nor the reverse)."""
    r = recipe.data
    needed = [a for a in assets if a.needed]
    missing = [a for a in needed if not a.present]
    absent = [a for a in assets if not a.needed and not a.present]
    if missing:
        head = f"{len(missing)} of {len(needed)} needed file(s) missing ({_kinds(missing)})"
    elif needed:
        head = f"all {len(needed)} needed file(s) present"
    else:
        head = (f"this recipe needs no external file (foregrounds {r['foregrounds']['model']}, noise "
                f"{r['noise']['model']}, cosmology prior {r['cmb']['prior']}: all built in)")
    if absent:
        head += (f"; {len(absent)} optional file(s) not here ({_kinds(absent)}): "
                 "the recipe runs without them; --fetch --optional downloads them")
    return head


def format_listing(recipe: Recipe, assets: list[Asset], destination: str | None = None) -> str:
    """The listing: one row per file (status present / missing / absent, needed yes / optional), then the
    summary (:func:`summary`) and where files go.  ``missing``: a needed file not here; ``absent``: an optional
    one (the pysm3 templates of a recipe that does not use pysm3, the mask)."""
    from cmbcube.cube import human
    r = recipe.data
    lines = [f"assets of recipe {recipe.name}: foregrounds {r['foregrounds']['model']}, noise {r['noise']['model']}, "
             f"cosmology prior {r['cmb']['prior']}, sky nside {r['sky_nside']}"]
    rows = [("status", "needed", "size", "path", "what")]
    for a in assets:
        size = a.local_size() if a.present else a.size
        rows.append(("present" if a.present else "missing" if a.needed else "absent",
                     "yes" if a.needed else "optional", human(size) if size is not None else "?", str(a.path), a.role))
    widths = [max(len(row[k]) for row in rows) for k in range(4)]
    for row in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
    lines.append(summary(recipe, assets))
    lines.append("where they go:")
    lines += ["  " + line for line in where_to_put(recipe, destination)]
    if any(a.needed and not a.present for a in assets):
        lines.append("cmbcube assets RECIPE --fetch downloads the missing needed files "
                     "(or --base-url URL for a mirror)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- manifest

def write_manifest(directory: str) -> Path:
    """manifest.json (sizes, sha256) of every file under a mirror directory."""
    root = Path(directory)
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
            files[path.relative_to(root).as_posix()] = {"size": path.stat().st_size,
                                                        "sha256": file_hash(path, "sha256")}
    out = root / MANIFEST_NAME
    out.write_text(json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1, sort_keys=True) + "\n")
    return out


def parse_manifest(text: str, source: str) -> dict:
    try:
        data = json.loads(text)
    except ValueError as err:
        raise AssetError(f"{source}: not a JSON manifest ({err})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("files"), dict):
        raise AssetError(f"{source}: not a {MANIFEST_FORMAT} manifest")
    return data["files"]


def file_hash(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


if __name__ == "__main__":
    import sys
    if len(sys.argv) != 2:
        print("usage: python -m cmbcube.interop.assets MIRROR_DIR   (writes MIRROR_DIR/manifest.json)", file=sys.stderr)
        sys.exit(2)
    print(write_manifest(sys.argv[1]))
