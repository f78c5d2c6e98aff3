"""Real Dask clusters: a `dask scheduler` and `dask worker` processes started from the
command line as users do, the recipe's cluster section, --dry-run, and the SLURM path
(dask-jobqueue) with sbatch/scancel emulated by scripts that run the job locally."""
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cmbcube import cube
from cmbcube.compute import cluster
from cmbcube.recipe import RecipeError, load
from cmbcube.stages import ilc, simulate
from helpers import ExternalCluster, chunks, cli, fast_recipe, recipe_file, small_recipe, zarr_files

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    ext = ExternalCluster(tmp_path_factory.mktemp("dask"))
    yield ext
    ext.close()


RECIPE = fast_recipe()


def sim_chunks(store) -> dict:
    """Chunks of everything but the runs (what simulate writes)."""
    return {k: v for k, v in chunks(store).items() if k.split("/")[0] not in cube.RUN_ARRAYS}


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory):
    """The reference: the same recipe simulated in this process (synchronous), NILC and HILC of test."""
    store = str(tmp_path_factory.mktemp("clean") / "clean.zarr")
    assert simulate.run(RECIPE, store, scheduler="synchronous", progress=False).ok
    for method in ("nilc", "hilc"):
        assert ilc.run(store, ilc.ILCConfig(method=method), splits=("test",), scheduler="synchronous",
                       progress=False).ok
    return store


def test_simulate_and_ilc_through_cli_dask_scheduler_and_workers(tmp_path, external, clean_store):
    """`dask scheduler` + 2 `dask worker` processes: simulate (--scheduler-file), NILC
    (--scheduler-file) and HILC (--scheduler ADDRESS) give the bytes of an in-process run."""
    path = recipe_file(tmp_path / "recipe.yaml", RECIPE)
    store = str(tmp_path / "dask.zarr")
    external.clear_trace()
    proc = cli("simulate", path, "--store", store, "--scheduler-file", external.scheduler_file, "--no-progress")
    assert proc.returncode == 0, proc.stderr + external.log_text()
    assert "simulated 4 sim(s)" in proc.stdout
    # the dashboard link is printed (stdout), with the scheduler and its workers
    assert f"connected to a Dask cluster: 2 worker(s), 2 thread(s); scheduler {external.address}" in proc.stdout
    assert "dashboard: http://" in proc.stdout
    # the sims ran in the worker processes, not in the driver
    ran = external.traced()
    assert sorted((s, k) for s, k, _ in ran) == [("test", 0), ("test", 1), ("train", 0), ("train", 1)]
    assert {pid for *_, pid in ran} <= set(external.worker_pids().values())
    assert chunks(store) == sim_chunks(clean_store) and len(chunks(store, "obs")) == 4

    proc = cli("ilc", store, "--method", "nilc", "--split", "test", "--scheduler-file", external.scheduler_file,
               "--no-progress")
    assert proc.returncode == 0, proc.stderr + external.log_text()
    assert "cleaned 2 sim(s)" in proc.stdout and "dashboard: http://" in proc.stdout
    proc = cli("ilc", store, "--method", "hilc", "--split", "test", "--scheduler", external.address, "--no-progress")
    assert proc.returncode == 0, proc.stderr + external.log_text()
    # (run, sim) shards
    assert chunks(store, "pred") == chunks(clean_store, "pred") and len(chunks(store, "pred")) == 2 * 2
    assert chunks(store) == chunks(clean_store)


def test_recipe_address_section_and_bad_address(tmp_path, external):
    """cluster.kind address in the recipe connects (no flag needed); an unreachable scheduler
    fails fast with exit 2 and names it, and nothing is written."""
    r = fast_recipe(splits={"train": 1, "valid": 0, "test": 0},
                    cluster={"kind": "address", "scheduler_file": external.scheduler_file})
    assert simulate.run(r, str(tmp_path / "a.zarr"), progress=False).written == [("train", 0)]
    path = recipe_file(tmp_path / "r.yaml", r)
    proc = cli("simulate", path, "--store", str(tmp_path / "b.zarr"), "--scheduler", "tcp://127.0.0.1:9",
               "--no-progress", env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}, timeout=120)
    assert proc.returncode == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in proc.stderr


# ----------------------------------------------------------------------------- recipe section, dry runs
def test_cluster_section_validation_names_field_and_allowed_values():
    cases = [
        ({"kind": "pbs"}, "cluster.kind: 'pbs' is not allowed; allowed values: local, address, slurm, synchronous"),
        ({"kind": "address"}, "cluster.address: required when cluster.kind is 'address'"),
        ({"address": "tcp://h:1"}, "cluster.address: only used when cluster.kind is 'address'"),
        ({"memory_limit": "4 bananas"}, "cluster.memory_limit: '4 bananas' is not a memory size"),
        ({"workers": 0}, "cluster.workers: 0 must be > 0"),
        ({"slurm": {"walltime": "2h"}}, "cluster.slurm.walltime: '2h' is not a SLURM time"),
        ({"slurm": {"partition": "cpu"}}, "cluster.slurm.partition: unknown key; allowed keys in cluster.slurm: queue"),
        ({"kind": "slurm", "slurm": {"cores": 4, "processes": 8}}, "cluster.slurm.processes: 8 exceeds"),
        ({"slurm": {"job_extra_directives": [7]}}, "cluster.slurm.job_extra_directives[0]: expected a string"),
    ]
    import re
    for section, message in cases:
        with pytest.raises(RecipeError, match=re.escape(message)):
            small_recipe(cluster=section)
    proc = cli("check-recipe", str(ROOT / "recipes" / "quickstart.yaml"), "--set", "cluster.slurm.walltime=soon")
    assert proc.returncode == 2 and "cluster.slurm.walltime: 'soon' is not a SLURM time" in proc.stderr


def test_slurm_example_recipe_validates_and_dry_run_prints_its_job_script(tmp_path):
    example = ROOT / "recipes" / "slurm-example.yaml"
    r = load(example)
    sl = r["cluster"]["slurm"]
    assert r["cluster"]["kind"] == "slurm"
    store = tmp_path / "never.zarr"
    proc = cli("simulate", str(example), "--store", str(store), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    script = out[out.index("#!/usr/bin/env bash"):]
    for line in (f"#SBATCH -p {sl['queue']}", f"#SBATCH -A {sl['account']}", f"#SBATCH -t {sl['walltime']}",
                 f"#SBATCH --cpus-per-task={sl['cores']}", "#SBATCH --mem=", f"#SBATCH -J {sl['job_name']}",
                 *(f"#SBATCH {d}" for d in sl["job_extra_directives"]), *sl["job_script_prologue"],
                 "export NUMBA_NUM_THREADS=", "distributed.cli.dask_worker tcp://SCHEDULER-ADDRESS:8786"):
        assert line in script, line
    # the workers start with the python the prologue's venv provides, not this machine's absolute path
    assert f"\n{sl['python']} -m distributed.cli.dask_worker" in script
    processes = sl["processes"] or sl["cores"] // r["cluster"]["threads_per_worker"]
    assert f"--nworkers {processes}" in script and f"submit {sl['jobs']} SLURM job(s)" in out
    assert f"#SBATCH -o {sl['log_directory']}/{sl['job_name']}-%J.out" in script
    assert "nothing was started or written" in out and list(tmp_path.iterdir()) == []   # no store, no log dir
    assert "dashboard" not in out        # nothing started: no scheduler, no link


def test_dry_run_local_and_scheduler_file_start_nothing(tmp_path, clean_store):
    path = recipe_file(tmp_path / "r.yaml", fast_recipe(cluster={"kind": "local", "workers": 3,
                                                                 "memory_limit": "2GB"}))
    proc = cli("simulate", path, "--store", str(tmp_path / "s.zarr"), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "would start a local Dask cluster of 3 worker process(es) x 1 thread(s), memory limit 2GB" in proc.stdout
    assert "OMP_NUM_THREADS=1" in proc.stdout and "(would be created)" in proc.stdout
    assert not (tmp_path / "s.zarr").exists()
    before = zarr_files(clean_store)
    proc = cli("ilc", clean_store, "--method", "nilc", "--scheduler-file", str(tmp_path / "none.json"), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"would connect to the Dask scheduler named in {tmp_path / 'none.json'}" in proc.stdout
    proc = cli("simulate", path, "--store", clean_store, "--dry-run", "--workers", "5")
    assert "existing store, 4 of 4 sims done" in proc.stdout and "5 worker process(es)" in proc.stdout
    assert zarr_files(clean_store) == before


def test_slurm_without_dask_jobqueue_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)          # import fails as if not installed
    with pytest.raises(cluster.ClusterError, match=r"pip install 'cmbcube\[slurm\]'"):
        cluster.describe({"kind": "slurm"})
    with pytest.raises(cluster.ClusterError, match="dask-jobqueue"):
        with cluster.client_for({"kind": "slurm"}):
            pass


# ----------------------------------------------------------------------------- SLURM, emulated
FAKE_SBATCH = """#!{python}
import os, shutil, subprocess, sys
d = os.environ["FAKE_SLURM_DIR"]
n = len([f for f in os.listdir(d) if f.endswith(".sh")])
script = os.path.join(d, f"job{{n}}.sh")
shutil.copy(sys.argv[-1], script)
proc = subprocess.Popen(["bash", script], stdout=open(script + ".log", "w"), stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, start_new_session=True)
open(os.path.join(d, f"job{{n}}.pid"), "w").write(str(proc.pid))
print(f"Submitted batch job {{proc.pid}}")
"""
FAKE_SCANCEL = """#!{python}
import os, signal, sys
for job in sys.argv[1:]:
    try:
        os.killpg(int(job), signal.SIGTERM)
    except ProcessLookupError:
        pass
"""


@pytest.fixture
def fake_slurm(tmp_path):
    """(environment, jobs dir) with sbatch/scancel stand-ins first on PATH; every job's process
    group is killed afterwards, whatever the test did."""
    fake_bin, jobs = tmp_path / "bin", tmp_path / "jobs"
    fake_bin.mkdir(), jobs.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("scancel", FAKE_SCANCEL)):
        (fake_bin / name).write_text(text.format(python=sys.executable))
        (fake_bin / name).chmod(0o755)
    yield {"PATH": f"{fake_bin}:{os.environ['PATH']}", "FAKE_SLURM_DIR": str(jobs)}, jobs
    for pidfile in jobs.glob("*.pid"):
        try:
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_slurm_kind_submits_jobs_that_run_the_sims(tmp_path, clean_store, fake_slurm):
    """cluster.kind slurm end to end through dask-jobqueue, with sbatch/scancel replaced by
    scripts that run the job script here: the job's workers compute the sims (same bytes as
    in-process), the dashboard link is printed, the job is cancelled at the end."""
    env, jobs = fake_slurm
    r = fast_recipe(cluster={"kind": "slurm", "slurm": {"queue": "debug", "account": "cmb", "cores": 2,
                                                         "memory": "4GiB", "walltime": "00:10:00", "jobs": 1,
                                                         "interface": "lo",
                                                         "local_directory": str(tmp_path / "scratch")}})
    path = recipe_file(tmp_path / "slurm.yaml", r)
    store = str(tmp_path / "slurm.zarr")
    proc = cli("simulate", path, "--store", store, "--no-progress", env=env)
    assert proc.returncode == 0, proc.stderr + "".join(p.read_text() for p in jobs.glob("*.log"))
    assert "submitted 1 SLURM job(s) of 2 worker(s)" in proc.stdout and "dashboard: http://" in proc.stdout
    script = (jobs / "job0.sh").read_text()
    for line in ("#SBATCH -p debug", "#SBATCH -A cmb", "#SBATCH --cpus-per-task=2", "#SBATCH --mem=4G",
                 "#SBATCH -t 00:10:00", "export OMP_NUM_THREADS=1", "--nworkers 2"):
        assert line in script, line
    assert len(list(jobs.glob("*.sh"))) == 1
    assert chunks(store) == sim_chunks(clean_store)
    # scancel ran when the stage ended: the job's process group is gone
    pid = int((jobs / "job0.pid").read_text())
    deadline = time.monotonic() + 30
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _group_alive(pid)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_dashboard_link_printed_for_a_local_cluster(capsys):
    with cluster.client_for({"kind": "local", "workers": 1}) as client:
        out = capsys.readouterr().out
        assert f"dashboard: {client.dashboard_link}" in out and client.dashboard_link.startswith("http://")
        assert np.isfinite(client.submit(np.sqrt, 4.0).result())


def test_pipeline_submits_one_slurm_cluster_for_every_stage(tmp_path, fake_slurm):
    """`cmbcube run` with cluster.kind slurm: simulate, preprocess, ILC and analyze share one
    dask-jobqueue cluster (one sbatch), instead of each stage submitting its own."""
    env, jobs = fake_slurm
    r = fast_recipe(cmb__enabled=True, pipeline={"ilc": ["hilc"], "models": [], "splits": ["test"]},
                    cluster={"kind": "slurm", "slurm": {"cores": 2, "memory": "4GiB", "jobs": 1, "interface": "lo",
                                                        "local_directory": str(tmp_path / "scratch")}})
    path = recipe_file(tmp_path / "pipeline.yaml", r)
    proc = cli("run", path, "--store", str(tmp_path / "p.zarr"), "--no-progress", env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr + "".join(p.read_text() for p in jobs.glob("*.log"))
    assert "report:" in proc.stdout
    assert len(list(jobs.glob("*.sh"))) == 1, proc.stdout
