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

Fetching (``fetch``) downloads what is missing over HTTP(S): into ``<file>.part`` first,
resuming a partial ``.part`` with a Range request, then checks the size and the checksum
(sha256 or md5, when a manifest gives one) and renames the file into place, so a file is
either complete and verified or absent.  A mirror (``base_url``) holds files under their mirror
names and may hold ``manifest.json`` in this module's format::

    {"format": "cmbcube-assets/1",
     "files": {"pysm3/pysm_2/ff_t_new.fits": {"size": 100676160, "sha256": "..."}, ...}}

(``python -m cmbcube.interop.assets DIR`` writes one for a mirror directory).  Offline, the first
connection fails within ``connect_timeout`` seconds and the list of missing files is reported.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

from cmbcube.recipe import Recipe
from cmbcube.errors import CmbcubeError
from cmbcube.interop.templates import search_dirs

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
    env = os.environ.get("PYSM_LOCAL_DATA")
    if data_dir:
        target = Path(data_dir)
    elif destination:
        target = Path(destination) / "pysm3"
    elif env:
        target = Path(env)
    else:
        target = Path("cmbcube-assets") / "pysm3"
    looked = search_dirs(data_dir) + [target]          # the simulator's search path, then the fetch target
    return target, list(dict.fromkeys(looked))


def list_assets(recipe: Recipe, destination: str | None = None) -> list[Asset]:
    from cmbcube.interop.templates import pysm_files
    r = recipe.data
    out = []
    target, looked = pysm_roots(recipe, destination)
    uses_pysm = r["foregrounds"]["model"] == "pysm3"
    seen = set()
    for preset in r["foregrounds"]["presets"]:
        for rel in pysm_files(preset, r["sky_nside"]):
            if " " in rel or rel in seen:        # a unit string ("MJy / sr") or a file shared by presets
                continue
            seen.add(rel)
            directory = rel.endswith("/")
            found = next((d / rel for d in looked if (d / rel).exists()), target / rel)
            out.append(Asset("pysm3", f"pysm3/{rel.rstrip('/')}", Path(str(found).rstrip("/")), uses_pysm,
                             f"pysm3 preset {preset}" + (" (directory of maps)" if directory else " template"),
                             None if directory else SOURCES["pysm3"] + rel, directory=directory))
    if r["noise"]["model"] == "variance_maps":
        for freq in r["detectors"]:
            out.append(Asset("variance", f"variance/{freq}.fits", Path(r["noise"]["variance_dir"]) / f"{freq}.fits",
                             True, f"Planck {freq} GHz variance map (II, QQ, UU)",
                             SOURCES["variance"] + PLANCK_MAPS[freq] if SOURCES["variance"] else None,
                             source_name=PLANCK_MAPS[freq], columns=VARIANCE_COLUMNS))
    if r["cmb"]["enabled"] and r["cmb"]["prior"] == "chain":
        chain = Path(r["cmb"]["chain_file"])
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


def format_listing(recipe: Recipe, assets: list[Asset], destination: str | None = None) -> str:
    from cmbcube.cube import _human
    r = recipe.data
    lines = [f"assets of recipe {recipe.name}: foregrounds {r['foregrounds']['model']}, noise {r['noise']['model']}, "
             f"cosmology prior {r['cmb']['prior']}, sky nside {r['sky_nside']}"]
    rows = [("status", "needed", "size", "path", "what")]
    for a in assets:
        size = a.local_size() if a.present else a.size
        rows.append(("present" if a.present else "missing", "yes" if a.needed else "no",
                     _human(size) if size is not None else "?", str(a.path), a.role))
    widths = [max(len(row[k]) for row in rows) for k in range(4)]
    for row in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
    missing = [a for a in assets if a.needed and not a.present]
    lines.append(f"{len(missing)} needed file(s) missing" if missing else "every needed file is present")
    lines.append("where they go:")
    lines += ["  " + line for line in where_to_put(recipe, destination)]
    if missing:
        lines.append("cmbcube assets RECIPE --fetch downloads them (or --base-url URL for a mirror)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- manifest

def write_manifest(directory: str) -> Path:
    """manifest.json (sizes, sha256) of every file under a mirror directory."""
    root = Path(directory)
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
            files[path.relative_to(root).as_posix()] = {"size": path.stat().st_size, "sha256": file_hash(path, "sha256")}
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


# ---------------------------------------------------------------------------------------- fetching

@dataclasses.dataclass
class FetchReport:
    fetched: list = dataclasses.field(default_factory=list)      # paths
    resumed: list = dataclasses.field(default_factory=list)      # paths whose .part was continued
    failed: list = dataclasses.field(default_factory=list)       # (path, reason)
    skipped: list = dataclasses.field(default_factory=list)      # (path, reason): no source
    unverified: list = dataclasses.field(default_factory=list)   # paths without a known checksum
    seconds: float = 0.0


def _session():
    import requests
    session = requests.Session()
    session.headers["User-Agent"] = "cmbcube-assets"
    return session


def _connection_errors():
    import requests
    return (requests.ConnectionError, requests.Timeout)


def fetch(recipe: Recipe, destination: str | None = None, base_url: str | None = None, include_optional=False,
          connect_timeout: float = 5.0, read_timeout: float = 60.0, progress: bool | None = None) -> FetchReport:
    """Download every missing needed asset (and optional ones with ``include_optional``)."""
    assets = list_assets(recipe, destination)
    todo = [a for a in assets if not a.present and (a.needed or include_optional)]
    report = FetchReport()
    if not todo:
        return report
    t0 = time.perf_counter()
    session = _session()
    timeout = (connect_timeout, read_timeout)
    missing_list = "\n  ".join(str(a.path) for a in todo)
    base = base_url.rstrip("/") + "/" if base_url else None
    manifest = {}
    if base:
        try:
            manifest = read_manifest(session, base, timeout)
        except _connection_errors() as err:
            raise Offline(f"cannot reach {_host(base)} ({_reason(err)}); {len(todo)} file(s) missing:\n  "
                          f"{missing_list}") from None
    jobs = []                  # (asset, url, target, checksum dict, extract)
    for a in todo:
        if base:
            if a.directory:
                inside = sorted(k for k in manifest if k.startswith(a.name + "/"))
                if not inside:
                    report.skipped.append((a.path, f"{a.name}/ is a directory: the mirror's manifest lists no file "
                                                   "under it"))
                for key in inside:
                    jobs.append((a, base + key, a.path / key[len(a.name) + 1:], manifest[key], None))
            else:
                jobs.append((a, base + a.name, a.path, manifest.get(a.name, {}), None))
        elif a.url is None:
            reason = "a directory of maps: pysm3 downloads it on first use, or use a mirror (--base-url)" \
                if a.directory else "no public source in this form: supply it yourself or use a mirror (--base-url)"
            report.skipped.append((a.path, reason))
        else:
            jobs.append((a, a.url, a.path, {}, a.columns if a.source_name else None))
    for i, (asset, url, target, expected, columns) in enumerate(jobs):
        try:
            download = target if columns is None else target.parent / ".sources" / asset.source_name
            if not (columns is not None and download.is_file()):
                resumed = _download(session, url, download, expected, timeout, progress)
                if resumed:
                    report.resumed.append(target)
            if not expected.get("sha256") and not expected.get("md5"):
                report.unverified.append(target)
            if columns is not None:
                extract_columns(download, target, columns)
                download.unlink()
            report.fetched.append(target)
        except _connection_errors() as err:
            left = [str(j[2]) for j in jobs[i:]]
            raise Offline(f"cannot reach {_host(url)} ({_reason(err)}); {len(left)} file(s) still missing:\n  "
                          + "\n  ".join(left)) from None
        except AssetError as err:
            report.failed.append((target, str(err)))
    report.seconds = time.perf_counter() - t0
    return report


def read_manifest(session, base: str, timeout) -> dict:
    """A mirror's manifest entries ({} when it has none); connection errors propagate."""
    resp = session.get(base + MANIFEST_NAME, timeout=timeout)
    if resp.status_code == 404:
        return {}
    if resp.status_code != 200:
        raise AssetError(f"{base}{MANIFEST_NAME}: HTTP {resp.status_code}")
    return parse_manifest(resp.text, base + MANIFEST_NAME)


def add_mirror_sizes(assets: list[Asset], base_url: str, connect_timeout: float = 5.0) -> str | None:
    """Sizes and checksums of the listed assets from a mirror's manifest; a note when it fails."""
    base = base_url.rstrip("/") + "/"
    try:
        manifest = read_manifest(_session(), base, (connect_timeout, 30.0))
    except _connection_errors() as err:
        return f"mirror {_host(base)} unreachable ({_reason(err)}): sizes unknown"
    except AssetError as err:
        return str(err)
    for a in assets:
        entries = [v for k, v in manifest.items() if k == a.name or (a.directory and k.startswith(a.name + "/"))]
        if entries:
            a.size = sum(int(v.get("size", 0)) for v in entries)
            if not a.directory:
                a.sha256, a.md5 = entries[0].get("sha256"), entries[0].get("md5")
    return None if manifest else f"mirror {_host(base)} has no {MANIFEST_NAME}: sizes unknown"


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def _reason(err) -> str:
    text = str(err)
    for marker in ("Connection refused", "timed out", "Name or service not known", "Temporary failure",
                   "Network is unreachable", "No route to host"):
        if marker in text:
            return marker.lower()
    return type(err).__name__


def _download(session, url: str, target: Path, expected: dict, timeout, progress) -> bool:
    """``url`` to ``target`` through ``target.part`` (resumed when present); True if resumed."""
    from tqdm import tqdm
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    size = expected.get("size")
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    resumed = False
    with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
        if resp.status_code == 416 and offset and size is not None and offset == size:
            pass                                 # the .part already holds everything
        elif resp.status_code == 206 and offset:
            start = _content_range_start(resp.headers.get("Content-Range", ""))
            if start != offset:
                raise AssetError(f"{url}: the server resumed at byte {start}, not {offset}")
            resumed = True
        elif resp.status_code == 200:
            offset = 0                           # no Range support (or no .part): from the start
        else:
            raise AssetError(f"{url}: HTTP {resp.status_code} {resp.reason}")
        if resp.status_code in (200, 206):
            length = resp.headers.get("Content-Length")
            total = (offset + int(length)) if length is not None else size
            bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=target.name[:30],
                       disable=None if progress is None else not progress)
            try:
                with open(part, "ab" if offset else "wb") as f:
                    for block in resp.iter_content(CHUNK):
                        f.write(block)
                        bar.update(len(block))
            finally:
                bar.close()
            if size is None and length is not None:
                size = total
    got = part.stat().st_size
    if size is not None and got != size:
        raise AssetError(f"{url}: got {got} bytes, expected {size} (rerun to resume)")
    for algorithm in ("sha256", "md5"):
        if expected.get(algorithm):
            digest = file_hash(part, algorithm)
            if digest != expected[algorithm].lower():
                part.unlink()
                raise AssetError(f"{url}: {algorithm} mismatch (got {digest}, expected {expected[algorithm]}); "
                                 "the download was discarded")
            break
    os.replace(part, target)
    return resumed


def _content_range_start(value: str) -> int | None:
    try:                                          # "bytes 100-199/200"
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def extract_columns(source: Path, target: Path, columns) -> None:
    """Keep ``columns`` (by name) of a HEALPix FITS table, same ordering and units, into ``target``
    (atomically).  Columns absent from the source (Q/U of 545 and 857 GHz) are left out."""
    import healpy as hp
    from astropy.io import fits
    with fits.open(source) as hdus:
        header = hdus[1].header
        names = [header.get(f"TTYPE{k}", "").strip().upper() for k in range(1, header.get("TFIELDS", 0) + 1)]
        units = [header.get(f"TUNIT{k}", "") for k in range(1, len(names) + 1)]
        nest = str(header.get("ORDERING", "RING")).strip().upper().startswith("NEST")
    keep = [names.index(c.upper()) for c in columns if c.upper() in names]
    if not keep:
        raise AssetError(f"{source}: none of the columns {', '.join(columns)} (has {', '.join(names)})")
    maps = hp.read_map(str(source), field=tuple(keep), nest=nest, dtype=None)
    tmp = target.with_name(target.name + ".extracting")
    hp.write_map(str(tmp), maps, nest=nest, column_names=[names[k] for k in keep],
                 column_units=[units[k] for k in keep], overwrite=True, dtype=None)
    os.replace(tmp, target)


def format_fetch(report: FetchReport, still_missing: list[Asset]) -> str:
    lines = []
    if report.fetched:
        lines.append(f"fetched {len(report.fetched)} file(s) in {report.seconds:.1f} s"
                     + (f" ({len(report.resumed)} resumed)" if report.resumed else ""))
        lines += [f"  {p}" for p in report.fetched]
    if report.unverified:
        lines.append(f"  {len(report.unverified)} without a known checksum (size checked only)")
    for path, reason in report.failed:
        lines.append(f"failed: {path}: {reason}")
    for path, reason in report.skipped:
        lines.append(f"not fetched: {path}: {reason}")
    if still_missing:
        lines.append(f"{len(still_missing)} needed file(s) still missing:")
        lines += [f"  {a.path}" for a in still_missing]
    elif not lines:
        lines.append("nothing to fetch: every needed file is present")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    if len(sys.argv) != 2:
        print("usage: python -m cmbcube.interop.assets MIRROR_DIR   (writes MIRROR_DIR/manifest.json)", file=sys.stderr)
        sys.exit(2)
    print(write_manifest(sys.argv[1]))
