"""cmbcube assets: listing, fetching from a local HTTP server, checksums, resuming, offline."""
import functools
import http.server
import json
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cmbcube import cli
from cmbcube.interop import assets, fetch
from cmbcube.recipe import load


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with optional Range support; every request is logged on the server."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get("Range")))
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        data = Path(path).read_bytes()
        wanted = self.headers.get("Range")
        if wanted and self.server.ranges:
            start = int(wanted.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "mirror"
    rng = np.random.default_rng(0)
    files = {"pysm3/pysm_2/ff_t_new.fits": rng.bytes(300_000), "variance/100.fits": rng.bytes(50_000),
             "variance/143.fits": rng.bytes(60_000), "chain/planck.txt": b"H0 ombh2 omch2 ns tau logA\n" * 100,
             f"mask/{assets.MASK_NAME}": rng.bytes(20_000)}
    for name, blob in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(blob)
    assets.write_manifest(str(root))
    return root, files


@pytest.fixture
def server(mirror):
    root, _ = mirror
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=str(root)))
    httpd.requests, httpd.ranges = [], True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def recipe_file(tmp_path, monkeypatch):
    monkeypatch.delenv("PYSM_LOCAL_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    text = f"""
name: assets-test
nside: 8
sky_nside: 16
detectors: [100, 143]
splits: {{train: 1}}
foregrounds: {{model: pysm3, presets: [f1], data_dir: {tmp_path}/pysm}}
noise: {{model: variance_maps, variance_dir: {tmp_path}/variance}}
cmb: {{prior: chain, chain_file: {tmp_path}/chains/planck.txt}}
"""
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def _targets(tmp_path):
    return {"pysm3/pysm_2/ff_t_new.fits": tmp_path / "pysm/pysm_2/ff_t_new.fits",
            "variance/100.fits": tmp_path / "variance/100.fits", "variance/143.fits": tmp_path / "variance/143.fits",
            "chain/planck.txt": tmp_path / "chains/planck.txt"}


def test_listing_shows_needed_files_where_they_go_and_what_is_present(recipe_file, tmp_path, capsys):
    assert cli.main(["assets", recipe_file]) == 1                  # needed files missing
    out = capsys.readouterr().out
    for path in _targets(tmp_path).values():
        assert "missing  yes" in out and str(path) in out
    assert assets.MASK_NAME in out and "no" in out                  # the mask is optional
    assert "foregrounds.data_dir" in out and "noise.variance_dir" in out and "cmb.chain_file" in out
    target = _targets(tmp_path)["variance/100.fits"]
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x" * 2048)
    cli.main(["assets", recipe_file])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if str(target) in ln)
    assert line.split()[:3] == ["present", "yes", "2.0"]


def test_listing_with_a_mirror_shows_the_sizes_of_missing_files(recipe_file, server, capsys):
    assert cli.main(["assets", recipe_file, "--base-url", server[1]]) == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "ff_t_new.fits" in ln)
    assert line.split()[:3] == ["missing", "yes", "293.0"]          # 300 000 bytes, from manifest.json
    assert not any(p.endswith(".fits") for p, _ in server[0].requests)   # listing downloads nothing


def test_fetch_from_a_mirror_with_checksums(recipe_file, tmp_path, mirror, server, capsys):
    httpd, url = server
    _, files = mirror
    assert cli.main(["assets", recipe_file, "--fetch", "--base-url", url, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "fetched 4 file(s)" in out
    for name, path in _targets(tmp_path).items():
        assert path.read_bytes() == files[name]
        assert not path.with_name(path.name + ".part").exists()
    assert ("/manifest.json", None) in httpd.requests
    assert not any("mask" in p for p, _ in httpd.requests)          # optional: only with --optional
    assert cli.main(["assets", recipe_file]) == 0                   # everything needed is present
    assert cli.main(["assets", recipe_file, "--fetch", "--base-url", url, "--optional", "--destination",
                     str(tmp_path / "extra"), "--no-progress"]) == 0
    assert (tmp_path / "extra/masks" / assets.MASK_NAME).read_bytes() == files[f"mask/{assets.MASK_NAME}"]


def test_checksum_mismatch_is_rejected(recipe_file, tmp_path, mirror, server, capsys):
    root, _ = mirror
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"]["variance/143.fits"]["sha256"] = "0" * 64
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert cli.main(["assets", recipe_file, "--fetch", "--base-url", server[1], "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "sha256 mismatch" in out and "143.fits" in out and "still missing" in out
    bad = _targets(tmp_path)["variance/143.fits"]
    assert not bad.exists() and not bad.with_name("143.fits.part").exists()
    assert _targets(tmp_path)["variance/100.fits"].exists()         # the others still arrive


def test_partial_download_is_resumed_with_a_range_request(recipe_file, tmp_path, mirror, server):
    httpd, url = server
    _, files = mirror
    name = "pysm3/pysm_2/ff_t_new.fits"
    target = _targets(tmp_path)[name]
    target.parent.mkdir(parents=True)
    target.with_name(target.name + ".part").write_bytes(files[name][:123_456])
    report = fetch.fetch(load(recipe_file), base_url=url, progress=False)
    assert target in report.resumed and not report.failed
    assert ("/" + name, "bytes=123456-") in httpd.requests
    assert target.read_bytes() == files[name]


def test_corrupt_partial_download_fails_its_checksum_and_is_discarded(recipe_file, tmp_path, mirror, server):
    _, files = mirror
    name = "pysm3/pysm_2/ff_t_new.fits"
    target = _targets(tmp_path)[name]
    target.parent.mkdir(parents=True)
    part = target.with_name(target.name + ".part")
    part.write_bytes(b"\0" * 1000)                                   # not the file's first bytes
    report = fetch.fetch(load(recipe_file), base_url=server[1], progress=False)
    assert [p for p, _ in report.failed] == [target] and "sha256 mismatch" in report.failed[0][1]
    assert not target.exists() and not part.exists()
    report = fetch.fetch(load(recipe_file), base_url=server[1], progress=False)   # a rerun starts over
    assert target.read_bytes() == files[name] and not report.failed


def test_server_without_range_support_restarts_the_file(recipe_file, tmp_path, mirror, server):
    httpd, url = server
    httpd.ranges = False
    _, files = mirror
    name = "variance/100.fits"
    target = _targets(tmp_path)[name]
    target.parent.mkdir(parents=True)
    target.with_name("100.fits.part").write_bytes(files[name][:777])
    report = fetch.fetch(load(recipe_file), base_url=url, progress=False)
    assert target.read_bytes() == files[name] and target not in report.resumed


def test_offline_fails_fast_with_the_missing_list(recipe_file, tmp_path, capsys):
    with socket.socket() as s:                                       # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    assert cli.main(["assets", recipe_file, "--fetch", "--base-url", f"http://127.0.0.1:{port}/",
                     "--no-progress"]) == 1
    assert time.perf_counter() - t0 < 5
    err = capsys.readouterr().err
    assert "cannot reach 127.0.0.1" in err and "4 file(s) missing" in err
    for path in _targets(tmp_path).values():
        assert str(path) in err
    # a server that accepts the connection and never answers: the timeouts bound the wait
    with socket.socket() as stalled:
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(8)
        t0 = time.perf_counter()
        with pytest.raises(assets.Offline, match="4 file"):
            fetch.fetch(load(recipe_file), base_url=f"http://127.0.0.1:{stalled.getsockname()[1]}/",
                         connect_timeout=0.5, read_timeout=0.5, progress=False)
        assert time.perf_counter() - t0 < 5


def test_planck_variance_maps_are_cut_out_of_the_frequency_maps(tmp_path, mirror, server, monkeypatch):
    """Without a mirror the variance maps come from the full-mission maps' II/QQ/UU_COV columns."""
    import healpy as hp

    from cmbcube.interop.planck import read_variance_map
    httpd, url = server
    root, _ = mirror
    nside = 8
    npix = 12 * nside ** 2
    names = ["I_STOKES", "Q_STOKES", "U_STOKES", "HITS", "II_COV", "IQ_COV", "IU_COV", "QQ_COV", "QU_COV", "UU_COV"]
    maps = np.random.default_rng(3).uniform(1, 2, size=(len(names), npix)).astype(np.float32)
    (root / "planck").mkdir()
    hp.write_map(str(root / "planck" / assets.PLANCK_MAPS[100]), maps, nest=True, column_names=names,
                 column_units=["K_CMB"] * 3 + [""] + ["K_CMB^2"] * 6)
    monkeypatch.setitem(assets.SOURCES, "variance", url + "planck/")
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "r.yaml"
    path.write_text(f"name: v\nnside: 8\ndetectors: [100]\nsplits: {{test: 1}}\n"
                    f"noise: {{model: variance_maps, variance_dir: {tmp_path}/var}}\n")
    report = fetch.fetch(load(str(path)), progress=False)
    assert report.fetched == [tmp_path / "var/100.fits"] and not report.failed
    for field, column in (("I", "II_COV"), ("Q", "QQ_COV"), ("U", "UU_COV")):
        np.testing.assert_array_equal(read_variance_map(str(tmp_path / "var"), 100, nside, field),
                                      maps[names.index(column)])
    assert not any((tmp_path / "var/.sources").iterdir())          # the 2 GB source is not kept
