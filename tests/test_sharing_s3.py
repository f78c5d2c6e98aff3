"""One store shared by a collaboration: an Icechunk repository on a real S3 API server (moto's server
mode on 127.0.0.1, a random port, this test's own dummy credentials).  The pipeline simulate -> ilc ->
analyze into ``icechunk+s3://``, ``verify`` and ``info`` on the remote store, a tag read after new
commits, two writers adding different runs at once, and a SIGKILL while a commit is pending."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("icechunk")
pytest.importorskip("moto.server")

import cmbcube
from cmbcube.cli import main
from cmbcube.cube import icechunk_store as ics
from cmbcube.stages import analyze, ilc, simulate
from helpers import moto_s3, shared_recipe

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "collab-cubes"
CLI = "import sys; from cmbcube.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on loopback; AWS_* variables of this test only (restored after)."""
    with moto_s3(BUCKET, "test") as (env, _):
        yield env


@pytest.fixture(scope="module")
def pipeline(s3):
    """simulate (tagged sims-v1) -> ilc -> analyze, in this process, into icechunk+s3://."""
    store = f"icechunk+s3://{BUCKET}/shared/tiny"
    rep = simulate.run(shared_recipe(), store, scheduler="synchronous", progress=False)
    assert rep.ok and rep.status == "created" and len(rep.written) == 2
    assert main(["tag", store, "sims-v1"]) == 0
    tagged = ics.snapshot_id(store + "@sims-v1")
    os.environ["CMBCUBE_COMMIT_UNITS"] = "1"          # the ILC commits each unit: batches after the first
    try:
        rep = ilc.run(store, ilc.ILCConfig(method="hilc"), progress=False)
    finally:
        del os.environ["CMBCUBE_COMMIT_UNITS"]
    assert rep.ok and len(rep.written) == 2
    rep = analyze.run(store, estimator="pseudo-fast", progress=False)
    assert rep.ok and len(rep.written) == 2
    return store, tagged


def test_pipeline_into_s3_commits_each_stage_and_verifies(pipeline, capsys):
    store, _ = pipeline
    ds = cmbcube.open(store)
    assert list(ds.run.values) == ["hilc"]
    assert np.all(ds.pred_done.sel(run="hilc", split="test").values == 1)
    assert np.all(np.isfinite(ds.pred.sel(run="hilc", split="test").values))
    assert np.all(ds.analysis_done.sel(run="hilc", split="test").values == 1)
    assert ds.attrs["icechunk_snapshot"] == ics.snapshot_id(store)
    history = [s.message for s in ics.repository(store).ancestry(branch="main")]
    assert history[-2].startswith("create the store")
    assert any(m.startswith("simulate: 2 unit(s): test 0, 1") for m in history)
    assert sum(m.startswith("ilc-hilc: 1 unit(s)") for m in history) == 2      # one commit per batch of 1
    assert any("analy" in m for m in history)
    capsys.readouterr()
    assert main(["verify", store]) == 0
    out = capsys.readouterr().out
    assert "6 finished unit(s)" in out and "no damage found" in out       # 2 sims, 2 predictions, 2 analyses
    assert main(["info", store]) == 0
    out = capsys.readouterr().out
    assert "branches    main" in out and "sims-v1" in out and "run         hilc" in out


def test_old_tag_reads_as_it_was_after_new_commits(pipeline, capsys):
    store, tagged = pipeline
    old = cmbcube.open(store, version="sims-v1")
    new = cmbcube.open(store)
    assert old.attrs["icechunk_snapshot"] == tagged != new.attrs["icechunk_snapshot"]
    assert "run" not in old.coords and "pred" not in old
    np.testing.assert_array_equal(old.obs.values, new.obs.values)
    capsys.readouterr()
    assert main(["info", store, "--version", "sims-v1"]) == 0
    assert "run " not in capsys.readouterr().out
    assert main(["tag", store, "sims-v1"]) == 2                           # tags never move
    assert "exists already" in capsys.readouterr().err
    assert main(["verify", store, "--version", "no-such-tag"]) == 2
    assert "no version 'no-such-tag'" in capsys.readouterr().err
    with pytest.raises(ics.IcechunkError, match="cannot be written"):
        ilc.run(store + "@sims-v1", ilc.ILCConfig(method="hilc"), run_name="late", progress=False)
    assert ics.snapshot_id(store) == new.attrs["icechunk_snapshot"]       # nothing was committed


def _cli(args, env, **kw):
    full = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    return subprocess.Popen([sys.executable, "-c", CLI, *args], env=full, cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_two_writers_adding_different_runs_both_succeed(pipeline, s3):
    """Writer a holds its units while writer b adds its run (growing the run axis) and commits: a's
    commit is carried onto b's; both runs are complete and the first run is untouched."""
    store, _ = pipeline
    before = cmbcube.open(store).pred.sel(run="hilc").values
    a = _cli(["-v", "ilc", store, "--method", "hilc", "--run", "writer-a", "--no-progress"],
             {"CMBCUBE_ILC_DELAY": "1.5"})
    b = _cli(["-v", "ilc", store, "--method", "hilc", "--run", "writer-b", "--no-progress"], {})
    out_b = b.communicate(timeout=120)
    out_a = a.communicate(timeout=120)
    assert b.returncode == 0, out_b[1][-2000:]
    assert a.returncode == 0, out_a[1][-2000:]
    # one of them found the other's commit first: a run added again from the tip, or chunks carried onto it
    assert "another writer committed first" in out_a[1] + out_b[1]
    ds = cmbcube.open(store)
    assert sorted(ds.run.values) == ["hilc", "writer-a", "writer-b"]
    for run in ("writer-a", "writer-b"):
        assert np.all(ds.pred_done.sel(run=run, split="test").values == 1)
        np.testing.assert_allclose(ds.pred.sel(run=run).values, before, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ds.pred.sel(run="hilc").values, before)


def test_sigkill_while_committing_keeps_the_last_snapshot_and_a_rerun_completes(s3, tmp_path, monkeypatch):
    store = f"icechunk+s3://{BUCKET}/kill/tiny"
    monkeypatch.setenv("CMBCUBE_FAIL_SIMS", "test/1")
    rep = simulate.run(shared_recipe(), store, scheduler="synchronous", progress=False)
    assert rep.written == [("test", 0)] and len(rep.failed) == 1
    monkeypatch.delenv("CMBCUBE_FAIL_SIMS")
    last = ics.snapshot_id(store)
    trace = tmp_path / "trace"
    trace.mkdir()
    code = ("import sys; sys.path.insert(0, 'tests'); from helpers import shared_recipe; "
            "from cmbcube.stages import simulate; simulate.run(shared_recipe(), sys.argv[1], progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code, store], cwd=str(ROOT),
                            env=dict(os.environ, PYTHONPATH=str(ROOT), CMBCUBE_COMMIT_TRACE=str(trace),
                                     CMBCUBE_COMMIT_DELAY="120"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while not list(trace.glob("simulate-*")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert list(trace.glob("simulate-*")), proc.stderr.read().decode()[-2000:] if proc.poll() else "no commit"
        os.kill(proc.pid, signal.SIGKILL)             # its sim's chunks are uploaded, its commit not made
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert ics.snapshot_id(store) == last
    ds = cmbcube.open(store)
    assert ds.sim_done.sel(split="test").values.tolist()[:2] == [1, 0]
    rep = simulate.run(shared_recipe(), store, scheduler="synchronous", progress=False)
    assert rep.ok and rep.written == [("test", 1)] and rep.already_done == 1
    assert main(["verify", store]) == 0
