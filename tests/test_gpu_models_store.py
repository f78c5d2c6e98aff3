"""benchmarks/gpu_models.py's store part: the cmbNNCS training set of a real store timed through the
DataLoader, read raw, and set against the network's training rate (CPU, nside 32, a few samples)."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def benchmark():
    """benchmarks/gpu_models.py as the module ``gpu_models`` (registered: its raw reader is pickled to its
    worker processes by module and class name)."""
    if "gpu_models" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_models", ROOT / "benchmarks" / "gpu_models.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_models"] = module
        spec.loader.exec_module(module)
    return sys.modules["gpu_models"]


def test_store_part_counts_every_byte_it_reads_and_names_the_limit(tmp_path, capsys):
    store = tmp_path / "g32.zarr"
    rc = benchmark().main(["--make-store", str(store), "--store-nside", "32", "--sims", "2", "--sim-workers", "1",
                           "--num-workers", "1", "--batch", "2", "--steps", "1", "--passes", "1", "--min-seconds", "0",
                           "--no-synthetic", "--device", "cpu"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    result = json.loads(lines[-1])
    assert result["results"] == []                          # --no-synthetic
    s = result["store"]
    npix = 12 * 32 ** 2
    assert (s["nside"], s["npix"], s["model"], s["train_sims"]) == (32, npix, "cmbnncs-unet5", 2)
    assert (s["input_channels"], s["target_channels"], s["dtype"]) == (4, 1, "float32")
    sample = (4 + 1) * npix * 4                             # 100/143/217/353 GHz I + the CMB I, float32
    assert s["sample_bytes"] == sample
    # a pass gives the one worker two batches of 2 although the store has 2 sims
    assert s["samples_per_pass"] == 4 and s["loader"]["num_workers"] == 1
    for key in ("loader", "raw_read"):
        r = s[key]
        assert r["passes"] == 1 and r["samples"] == 4 and r["bytes"] == 4 * sample, key
        assert r["samples_per_s"] > 0 and r["bytes_per_s"] > 0 and r["first_pass_samples_per_s"] > 0
        assert r["bytes_per_s"] == pytest.approx(r["samples_per_s"] * sample)
    dev = s["device"]
    assert (dev["model"], dev["nside"], dev["batch"]) == ("cmbnncs-unet5", 32, 2) and dev["samples_per_s"] > 0
    v = s["verdict"]
    ratio = s["loader"]["samples_per_s"] / dev["samples_per_s"]
    assert v["ratio_loader_to_device"] == pytest.approx(ratio)
    assert not v["copy_included"] and s["copy_to_device_samples_per_s"] is None     # no copy on a CPU
    assert v["limit"] == ("loader" if ratio < 1 else "device")
    verdict = [line for line in lines if line.startswith("verdict:")]
    assert len(verdict) == 1 and f"the {v['limit']} limits training" in verdict[0]


def test_a_path_that_is_not_a_store_exits_2_and_writes_nothing(tmp_path, capsys):
    import zarr
    (tmp_path / "notes.txt").write_text("not a store")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    bench = benchmark()
    cases = [(["--store", str(tmp_path)], "not a cmbcube store"),
             (["--store", str(tmp_path / "plain.zarr")], "not a cmbcube store"),
             (["--store", str(tmp_path / "notes.txt")], "not a cmbcube store"),
             (["--store", str(tmp_path / "missing")], "no such store"),
             (["--make-store", str(tmp_path / "new"), "--store-nside", "16"], "--store-nside 16")]
    for args, words in cases:
        assert bench.main(args + ["--no-synthetic"]) == 2, args
        out = capsys.readouterr()
        assert words in out.err and "--store" in out.err and out.out == "", (args, out.err)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    # the script itself: exit status 2, one line, no traceback
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_models.py"), "--store", str(tmp_path)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and done.stdout == "" and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"gpu_models.py: error: --store {tmp_path}: not a cmbcube store")
