"""benchmarks/paper_scale.py end to end at nside 32, 1 sim per measurement, every stage after simulate in
this process (--in-process): each stage is timed, the bytes it reports are the store's growth, and the
extrapolations are the arithmetic its assumptions state."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "paper_scale.py"
STAGES = ("simulate", "preprocess", "nilc", "hilc", "predict", "analyze")


def benchmark():
    """benchmarks/paper_scale.py as the module ``paper_scale`` (registered: its warm-up reaches the Dask
    workers by module and function name)."""
    if "paper_scale" not in sys.modules:
        spec = importlib.util.spec_from_file_location("paper_scale", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["paper_scale"] = module
        spec.loader.exec_module(module)
    return sys.modules["paper_scale"]


def data_bytes(store):
    """Every file of a store but its zarr metadata, counted here independently of the script."""
    total = 0
    for root, _, files in os.walk(store):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if f != "zarr.json")
    return total


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paper")
    work, results = tmp / "work", tmp / "results"
    out = tmp / "stdout.txt"
    with open(out, "w") as fh:
        saved, sys.stdout = sys.stdout, fh
        try:
            rc = benchmark().main(["--nside", "32", "--sims", "1", "--in-process", "--work", str(work),
                                   "--results-dir", str(results), "--node-cores", "64", "--node-memory-gb", "8",
                                   "--nodes", "3", "--store-mb-s", "0.5"])
        finally:
            sys.stdout = saved
    lines = out.read_text().strip().splitlines()
    return rc, lines, json.loads(lines[-1]), work, results


def test_every_stage_is_timed_and_its_bytes_are_the_store_growth(measured):
    rc, lines, res, work, _ = measured
    assert rc == 0
    stages = res["stages"]
    assert tuple(stages) == STAGES and res["model"] == "cmbnncs-unet5" and res["nside"] == 32
    sim1, sim2 = stages["simulate"], res["simulate_2_workers"]
    assert (sim1["workers"], sim1["units"], sim2["workers"], sim2["units"]) == (1, 1, 2, 2)
    assert stages["analyze"]["units"] == 3                    # NILC, HILC and the network on the test sim
    for name, s in list(stages.items()) + [("simulate 2 workers", sim2)]:
        assert s["wall_s"] > 0 and s["s_per_unit"] > 0 and s["peak_rss_gb"] > 0.05, name
        assert s["bytes_per_unit"] * s["units"] == pytest.approx(s["bytes_written"]), name
        assert s["bytes_written"] > 0, name
    # what each stage says it wrote is what the stores hold: the 1-worker store is simulate's alone, the
    # 2-worker store got every later stage's writes too
    # (besides the coordinates written when the store was created, once per dataset)
    assert data_bytes(work / "simulate-1-worker.zarr") == sim1["store_creation_bytes"] + sim1["bytes_written"]
    later = sum(stages[k]["bytes_written"] for k in STAGES[1:])
    assert data_bytes(work / "paper.zarr") == sim2["store_creation_bytes"] + sim2["bytes_written"] + later
    assert 0 < sim1["store_creation_bytes"] < 0.1 * sim1["bytes_written"]
    # the maps of a sim, whatever the worker count: 7 polarised detectors x I/Q/U, 545 and 857 GHz in I and
    # the CMB's I/Q/U, float32, uncompressed; a few kB more for its spectra, parameters and done flag
    maps = (7 * 3 + 2 + 3) * 12 * 32 ** 2 * 4
    for s in (sim1, sim2):
        assert maps < s["bytes_per_unit"] < 1.02 * maps
    # a table row per stage, the 2-worker simulate row included, and the assumptions spelled out
    table = [line.split()[0] for line in lines if line.split() and line.split()[0] in STAGES]
    assert table == ["simulate", "simulate", "preprocess", "nilc", "hilc", "predict", "analyze"]
    assert sum(line.strip().startswith("assumption ") for line in lines) == len(res["assumptions"]) >= 5


def test_extrapolations_are_the_stated_arithmetic(measured):
    _, _, res, _, _ = measured
    stages, units = res["stages"], res["dataset_units"]
    assert units == {"simulate": 1450, "preprocess": 1000, "nilc": 200, "hilc": 200, "predict": 200, "analyze": 600}
    ratio = stages["simulate"]["s_per_unit"] / res["simulate_2_workers"]["s_per_unit"]
    assert res["scaling_2_workers"] == pytest.approx(2 * ratio)
    assert res["efficiency"] == pytest.approx(min(1.0, ratio))
    peak = max(s["peak_rss_gb"] for k, s in stages.items() if k != "predict")
    machines = res["extrapolations"]
    assert (machines["this_machine"]["cores"], machines["node"]["cores"], machines["slurm"]["nodes"]) == \
        (res["cores"], 64, 3)
    for label, m in machines.items():
        workers = m["nodes"] * min(m["cores"], math.floor(m["memory_gb"] / peak))
        assert m["workers"] == workers, label
        e = 1.0 if workers == 1 else res["efficiency"]
        total = 0.0
        for name, s in stages.items():
            n = units[name]
            compute = n * s["s_per_unit"] if name == "predict" else n * s["s_per_unit"] / (workers * e)
            write = n * s["bytes_per_unit"] / (0.5e6 if label == "slurm" else math.inf)
            row = m["stages"][name]
            assert row["compute_s"] == pytest.approx(compute) and row["wall_s"] == pytest.approx(max(compute, write))
            total += max(compute, write)
        assert m["total_s"] == pytest.approx(total), label
    # this machine's estimate of simulate is its measured 2-worker throughput (when 2 workers fit)
    here = machines["this_machine"]
    if here["workers"] == 2 and ratio <= 1:
        assert here["stages"]["simulate"]["wall_s"] == pytest.approx(1450 * res["simulate_2_workers"]["s_per_unit"] / 2)
    # at 0.5 MB/s the shared store, not the workers, sets the SLURM time of simulate
    slurm = machines["slurm"]["stages"]["simulate"]
    assert slurm["wall_s"] == slurm["write_s"] > slurm["compute_s"]


def test_the_results_file_holds_the_report(measured):
    _, lines, res, _, results = measured
    files = list(results.glob("paper_scale_n32_*.txt"))
    assert [f.name for f in files] == [f"paper_scale_n32_{res['date']}.txt"]
    assert files[0].read_text().strip().splitlines() == lines


@pytest.mark.parametrize("args, named", [(["--nside", "100"], "--nside 100"), (["--nside", "16"], "--nside 16"),
                                         (["--sims", "0"], "--sims 0"), (["--nodes", "0"], "--nodes 0")])
def test_bad_options_exit_2_naming_the_option(args, named, capsys):
    with pytest.raises(SystemExit) as exit_:
        benchmark().main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert named in err and "allowed" in err


def test_a_work_folder_holding_a_store_is_refused(tmp_path, capsys):
    (tmp_path / "paper.zarr").mkdir()
    with pytest.raises(SystemExit) as exit_:
        benchmark().main(["--nside", "32", "--work", str(tmp_path)])
    assert exit_.value.code == 2 and f"--work {tmp_path}: already holds" in capsys.readouterr().err


def test_a_bad_option_from_the_command_line_has_no_traceback():
    done = subprocess.run([sys.executable, str(SCRIPT), "--nside", "48"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--nside 48: allowed: a power of two" in done.stderr and "Traceback" not in done.stderr
