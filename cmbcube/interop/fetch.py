"""``cmbcube assets --fetch``: download the missing files a recipe needs (:mod:`cmbcube.interop.assets`).

Each file goes into ``<file>.part`` first, resuming a partial ``.part`` with a Range request,
then the size and the checksum (sha256 or md5, when a mirror's manifest gives one) are checked
and the file is renamed into place, so a file is either complete and verified or absent.
Planck maps are cut down to the columns kept (``extract_columns``).  Offline, the first
connection fails within ``connect_timeout`` seconds and the list of missing files is reported.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

from cmbcube.interop.assets import (
    CHUNK,
    MANIFEST_NAME,
    Asset,
    AssetError,
    Offline,
    file_hash,
    list_assets,
    parse_manifest,
)
from cmbcube.recipe import Recipe


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
