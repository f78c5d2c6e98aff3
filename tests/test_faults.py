"""Fault drills: a worker SIGKILLed mid-run, the driver SIGKILLed mid-run (on an external
cluster and in-process), leftover temporary files, readers during a run, and stages
running at once in one store.  Each drill: nothing lost, nothing duplicated, every done
sim bit-identical to a clean run.

Sims are held mid-run by the CMBCUBE_SIM_DELAY hook and traced by CMBCUBE_SIM_TRACE
(cmbcube.drills.hold), so each kill lands while a known sim is in flight.
"""
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

import cmbcube
from cmbcube import cube
from cmbcube.stages import ilc, simulate
from helpers import ExternalCluster, chunks, cli, fast_recipe, popen_cli, recipe_file, wait_for

DELAY = 2.0                                       # seconds each sim is held between computing and writing
RECIPE = fast_recipe(splits={"train": 4, "valid": 0, "test": 2}, keep=["cmb"])
ORDER = [("train", 0), ("train", 1), ("train", 2), ("train", 3), ("test", 0), ("test", 1)]   # submission order
SIMS = sorted(ORDER)


@pytest.fixture(scope="module")
def held_cluster(tmp_path_factory):
    """`dask scheduler` + 2 `dask worker` processes whose sims take DELAY s longer."""
    ext = ExternalCluster(tmp_path_factory.mktemp("dask"), env={"CMBCUBE_SIM_DELAY": str(DELAY)})
    yield ext
    ext.close()


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The same recipe simulated in this process without interruption."""
    assert "CMBCUBE_SIM_DELAY" not in os.environ
    store = str(tmp_path_factory.mktemp("clean") / "clean.zarr")
    assert simulate.run(RECIPE, store, scheduler="synchronous", progress=False).ok
    return store


def sim_files(store, split, sim) -> dict:
    """{path: bytes} of every chunk one sim owns (all products and its done-flag)."""
    isplit = cube.SPLITS.index(split)
    return {k: v for k, v in chunks(store).items() if k.split("/")[2:4] == [str(isplit), str(sim)]}


def done_sims(store) -> list:
    flags = cube.done_flags(store)
    return sorted((cube.SPLITS[i], int(j)) for i, j in zip(*np.nonzero(flags)))


def assert_done_sims_match(store, clean_store):
    """Every sim flagged done holds exactly the clean run's bytes (and nothing else is flagged)."""
    for split, sim in done_sims(store):
        got, want = sim_files(store, split, sim), sim_files(clean_store, split, sim)
        assert got == want and len(want) >= 4, (split, sim)


def test_worker_sigkilled_mid_run_the_run_completes_bit_identical(tmp_path, held_cluster, clean):
    """SIGKILL the worker process running a sim while it is in flight: Dask reruns that sim on a
    worker (the nanny restarts the dead one), the run completes with exit 0, every sim is written
    once from the driver's point of view and the store equals a clean run byte for byte.  A reader
    polling the store meanwhile only ever sees complete sims."""
    ext = held_cluster
    ext.clear_trace()
    store = str(tmp_path / "s.zarr")
    proc = popen_cli("simulate", recipe_file(tmp_path / "r.yaml", RECIPE), "--store", store,
                     "--scheduler-file", ext.scheduler_file, "--no-progress")
    try:
        wait_for(lambda: len(ext.traced()) >= 3, what="three sims in flight")
        worker_pids = set(ext.worker_pids().values())
        victim_split, victim_sim, victim = ext.traced()[-1]           # the sim started last: held now
        assert victim in worker_pids and victim != proc.pid
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        assert (victim_split, victim_sim) not in done_sims(store)         # it was held, not yet written
        # a reader meanwhile: opens never crash; flagged sims are complete and clean
        reads = 0
        while proc.poll() is None:
            ds = cmbcube.open(store)
            flags = ds.sim_done.values.astype(bool)
            for i, j in zip(*np.nonzero(flags)):
                got = ds.obs.isel(split=int(i), sim=int(j)).values
                want = cmbcube.open(clean).obs.isel(split=int(i), sim=int(j)).values
                assert np.array_equal(got, want, equal_nan=True) and np.isfinite(got).any()
            reads += 1
            time.sleep(0.2)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err + ext.log_text()
    assert "simulated 6 sim(s)" in out and reads >= 1
    assert time.monotonic() - killed_at < 100
    # the killed sim started again, in another process; every other sim started once
    starts = [(s, k) for s, k, _ in ext.traced()]
    assert sorted(starts) == sorted(SIMS + [(victim_split, victim_sim)]), (ext.traced(), victim)
    assert [pid for s, k, pid in ext.traced() if (s, k) == (victim_split, victim_sim)][-1] != victim
    assert done_sims(store) == SIMS
    assert chunks(store) == chunks(clean)
    ext.wait_for_workers(2)                          # the nanny brought the worker back


def test_driver_sigkilled_on_external_cluster_rerun_resumes(tmp_path, held_cluster, clean):
    """SIGKILL the driver (cmbcube simulate --scheduler-file) with sims in flight: no sim is
    flagged done without its data, the rerun computes only what is missing (sims the orphaned
    tasks finished count as done), leftover temporary files are ignored, and the final store
    equals a clean run byte for byte."""
    ext = held_cluster
    ext.clear_trace()
    store = str(tmp_path / "s.zarr")
    path = recipe_file(tmp_path / "r.yaml", RECIPE)
    proc = popen_cli("simulate", path, "--store", store, "--scheduler-file", ext.scheduler_file, "--no-progress")
    try:
        wait_for(lambda: len(ext.traced()) >= 3, what="three sims in flight")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    at_kill = done_sims(store)
    assert len(at_kill) < len(SIMS)
    assert_done_sims_match(store, clean)
    # what a kill inside zarr's atomic write leaves behind: a temporary next to a shard
    shard = next(k for k in chunks(clean, "obs"))
    stray = os.path.join(store, shard + ".0123abcd.partial")
    os.makedirs(os.path.dirname(stray), exist_ok=True)
    with open(stray, "wb") as f:
        f.write(b"half a shard")
    ext.wait_idle()                              # tasks orphaned by the driver's death may still finish
    assert_done_sims_match(store, clean)
    before = done_sims(store)
    out = cli("simulate", path, "--store", store, "--scheduler-file", ext.scheduler_file, "--no-progress")
    assert out.returncode == 0, out.stderr
    assert f"simulated {len(SIMS) - len(before)} sim(s)" in out.stdout
    assert f"({len(before)} were already done)" in out.stdout
    assert done_sims(store) == SIMS
    assert chunks(store) == chunks(clean)       # the stray temporary is not a chunk and changed nothing
    assert os.path.exists(stray)
    assert np.array_equal(cmbcube.open(store).obs.values, cmbcube.open(clean).obs.values, equal_nan=True)


def test_driver_sigkilled_in_process_mid_sim(tmp_path, clean):
    """In-process (synchronous) driver killed while it holds a computed sim: the sims before it are
    done and clean, the held one is not flagged and has no data, the rerun writes exactly the
    missing ones and the store equals a clean run."""
    trace = tmp_path / "trace"
    trace.mkdir()
    store = str(tmp_path / "s.zarr")
    path = recipe_file(tmp_path / "r.yaml", RECIPE)
    proc = popen_cli("simulate", path, "--store", store, "--scheduler", "synchronous", "--no-progress",
                     env={"CMBCUBE_SIM_DELAY": str(DELAY), "CMBCUBE_SIM_TRACE": str(trace)})
    try:
        wait_for(lambda: len(os.listdir(trace)) >= 3, what="the third sim")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sorted(os.listdir(trace)) == [f"train-{k}-{proc.pid}" for k in range(3)]
    assert done_sims(store) == sorted(ORDER[:2])      # train/0, train/1 written; train/2 was held
    assert_done_sims_match(store, clean)
    assert np.isnan(cmbcube.open(store).obs.sel(split="train", sim=2).values).all()
    out = cli("simulate", path, "--store", store, "--scheduler", "synchronous", "--no-progress")
    assert out.returncode == 0 and "simulated 4 sim(s)" in out.stdout and "(2 were already done)" in out.stdout
    assert chunks(store) == chunks(clean)


# ----------------------------------------------------------------------------- stages at once
def _add_run(store, name, barrier, queue):
    barrier.wait()
    try:
        queue.put((name, cube.ensure_run(store, name, "nilc", {"name": name}, 1.0)))
    except Exception as err:  # noqa: BLE001 - reported to the parent
        queue.put((name, f"{type(err).__name__}: {err}"))


def test_processes_adding_runs_at_once_take_turns(tmp_path, clean):
    """Four processes released together each add a run: every one gets its own index (without
    the store lock they crashed with ContainsArrayError or overwrote each other's run)."""
    import shutil
    store = str(tmp_path / "s.zarr")
    shutil.copytree(clean, store)
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_add_run, args=(store, f"r{k}", barrier, queue)) for k in range(4)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert sorted(results.values()) == [0, 1, 2, 3], results
    ds = cmbcube.open(store)                       # consolidated metadata lists all four
    assert ds.sizes["run"] == 4 and sorted(map(str, ds.run.values)) == ["r0", "r1", "r2", "r3"]
    assert all(str(ds.run.values[i]) == name for name, i in results.items())


def test_nilc_and_hilc_at_once_equal_sequential_runs(tmp_path, clean):
    """Two `cmbcube ilc` processes (NILC and HILC) writing their own runs into one store at the
    same time: both complete and each run equals the same method run alone."""
    import shutil
    store, alone = str(tmp_path / "both.zarr"), str(tmp_path / "alone.zarr")
    shutil.copytree(clean, store)
    shutil.copytree(clean, alone)
    procs = [popen_cli("ilc", store, "--method", m, "--split", "test", "--scheduler", "synchronous", "--no-progress")
             for m in ("nilc", "hilc")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for method in ("hilc", "nilc"):             # sequential reference, in the other order
        assert ilc.run(alone, ilc.ILCConfig(method=method), splits=("test",), scheduler="synchronous",
                       progress=False).ok
    a, b = cmbcube.open(store), cmbcube.open(alone)
    assert sorted(map(str, a.run.values)) == ["hilc", "nilc"]
    for method in ("nilc", "hilc"):
        got = a.pred.sel(run=method, split="test").values
        want = b.pred.sel(run=method, split="test").values
        assert np.array_equal(got, want, equal_nan=True) and np.isfinite(got).any()
        assert a.pred_done.sel(run=method, split="test").values[:2].all()


def test_task_that_keeps_killing_its_worker_is_reported_not_raised():
    """A task whose worker dies every time it runs it (say, out of memory) ends as a failure that
    names the likely cause, after Dask's retries; nothing is raised and the cluster (its worker
    restarted by the nanny) goes on running tasks."""
    import dask

    from cmbcube.compute.cluster import WorkerDied, client_for, run_tasks
    outcome = {}

    def record(item, result, error):
        outcome[item] = (result, error)

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        with client_for({"kind": "local", "workers": 1}) as client:
            run_tasks(client, lambda x: os.kill(os.getpid(), signal.SIGKILL), (), [("die",)], "drill", record)
            run_tasks(client, lambda x: x * 2, (), [("a",), ("b",)], "after", record)
    result, error = outcome[("die",)]
    assert result is None and isinstance(error, WorkerDied) and "out of memory?" in str(error)
    assert outcome[("a",)] == ("aa", None) and outcome[("b",)] == ("bb", None)
