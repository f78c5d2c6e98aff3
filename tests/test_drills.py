"""Fault drills of issue 15: two simulate processes on one store, SIGKILL during ilc / train /
analyze, a reader looping while simulate writes, hand-edited done-flags, run names and metadata
holding '../' or absolute paths, an untrusted HTTP store, and a full disk (a small tmpfs).

Units of work are held mid-flight by the cmbcube.drills hooks (CMBCUBE_<STAGE>_DELAY / _TRACE),
so each kill lands while a known unit is computed but not yet written.
"""
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import cmbcube
from cmbcube import cli, cube
from cmbcube.cube.datasets import CubeDataset
from cmbcube.stages import analyze, ilc, preprocess, simulate, train
from helpers import Server, chunks, fast_recipe, popen_cli, recipe_file, wait_for

RECIPE = fast_recipe(splits={"train": 3, "valid": 0, "test": 1})       # 4 quick sims, nside 16, no CAMB


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    store = str(tmp_path_factory.mktemp("clean") / "clean.zarr")
    assert simulate.run(RECIPE, store, scheduler="synchronous", progress=False).ok
    return store


def traced(folder) -> list[tuple]:
    """Trace files of a cmbcube.drills hook: tuples of the key parts and the pid, oldest first."""
    entries = sorted(Path(folder).iterdir(), key=lambda p: p.stat().st_mtime_ns)
    return [tuple(int(x) if x.isdigit() else x for x in p.name.split("-")) for p in entries]


def kill_when(proc, predicate, what):
    try:
        wait_for(lambda: predicate() or proc.poll() is not None, timeout=120, what=what)
        assert proc.poll() is None, f"finished before the kill: {proc.communicate()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def single_threaded():
    """The CLI drills run with one thread (PINNED); in-process references do too, for equal bytes."""
    class _Ctx:
        def __enter__(self):
            self.n = torch.get_num_threads()
            torch.set_num_threads(1)

        def __exit__(self, *exc):
            torch.set_num_threads(self.n)
    return _Ctx()


# ----------------------------------------------------------------------------- two simulate processes
def test_two_simulate_processes_at_once_one_refuses_and_no_sim_is_written_twice(tmp_path, clean):
    """Two `cmbcube simulate` started together on one (not yet existing) store: one creates it and
    simulates every sim, the other exits 2 naming the other process, having computed nothing; each
    sim is computed once and the store equals a clean run byte for byte."""
    trace = tmp_path / "trace"
    trace.mkdir()
    store = str(tmp_path / "s.zarr")
    path = recipe_file(tmp_path / "r.yaml", RECIPE)
    env = {"CMBCUBE_SIM_DELAY": "1.0", "CMBCUBE_SIM_TRACE": str(trace)}
    procs = [popen_cli("simulate", path, "--store", store, "--scheduler", "synchronous", "--no-progress", env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], outs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert "simulated 4 sim(s)" in outs[winner][0]
    assert "another process (cmbcube simulate or ingest-cmbml) is writing sims into this store" in outs[loser][1]
    assert "Traceback" not in outs[loser][1]
    started = traced(trace)
    assert sorted(t[:2] for t in started) == [("test", 0), ("train", 0), ("train", 1), ("train", 2)]
    assert {t[2] for t in started} == {procs[winner].pid}            # the refused one computed nothing
    assert chunks(store) == chunks(clean)
    assert [p.name for p in tmp_path.iterdir() if ".creating-" in p.name] == []   # no half-built store left
    again = simulate.run(RECIPE, store, scheduler="synchronous", progress=False)
    assert again.written == [] and again.already_done == 4


def test_a_second_simulate_is_refused_while_the_first_holds_a_sim(tmp_path, clean):
    """In process: while a CLI simulate holds a sim, simulate.run on the same store raises StoreError
    and writes nothing; once the first is SIGKILLed (its lock goes with it) a rerun completes."""
    trace = tmp_path / "trace"
    trace.mkdir()
    store = str(tmp_path / "s.zarr")
    proc = popen_cli("simulate", recipe_file(tmp_path / "r.yaml", RECIPE), "--store", store, "--scheduler",
                     "synchronous", "--no-progress", env={"CMBCUBE_SIM_DELAY": "30", "CMBCUBE_SIM_TRACE": str(trace)})
    try:
        wait_for(lambda: len(os.listdir(trace)) >= 1, what="the first sim held")
        before = chunks(store)
        with pytest.raises(cube.StoreError, match="another process"):
            simulate.run(RECIPE, store, scheduler="synchronous", progress=False)
        assert chunks(store) == before and not cube.done_flags(store).any()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    report = simulate.run(RECIPE, store, scheduler="synchronous", progress=False)
    assert len(report.written) == 4 and chunks(store) == chunks(clean)


# ----------------------------------------------------------------------------- a reader while simulate writes
def test_reader_looping_while_simulate_writes_never_sees_a_partial_sim(tmp_path, clean):
    """A reader polls the store while a CLI simulate writes it: every sim flagged done holds all of its
    products, equal to a clean run; every obs shard is either absent (NaN) or complete (a shard is
    written by temp file + rename, the flag after the data)."""
    store = str(tmp_path / "s.zarr")
    proc = popen_cli("simulate", recipe_file(tmp_path / "r.yaml", RECIPE), "--store", store, "--scheduler",
                     "synchronous", "--no-progress", env={"CMBCUBE_SIM_DELAY": "0.3"})
    ref = cmbcube.open(clean)
    want = {name: ref[name].values for name in ("obs", "cmb", "noise", "cosmo_params", "cl_theory")}
    seen_flags, reads = set(), 0
    try:
        while proc.poll() is None:
            if not os.path.exists(store):
                time.sleep(0.05)
                continue
            group = zarr.open_group(store, mode="r")
            flags = np.asarray(group["sim_done"][...]) == 1
            raw = np.asarray(group["obs"][...])
            for i, j in np.ndindex(*flags.shape):
                block = raw[i, j]
                assert np.isnan(block).all() or np.array_equal(block, want["obs"][i, j], equal_nan=True), (i, j)
                if flags[i, j]:                  # re-read each product after seeing the flag
                    for name, values in want.items():
                        got = np.asarray(group[name][i, j])
                        assert np.array_equal(got, values[i, j], equal_nan=True), (name, i, j)
            seen_flags.add(int(flags.sum()))
            reads += 1
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert reads >= 3 and len(seen_flags - {0, 4}) >= 1, (reads, seen_flags)     # caught it part-way
    assert chunks(store) == chunks(clean)


# ----------------------------------------------------------------------------- hand-edited done-flags
def test_flag_set_by_hand_for_a_sim_without_data(tmp_path, clean, monkeypatch, capsys, caplog):
    """sim_done set for a sim that was never written: verify reports it (exit 1), and simulate does not
    trust it: it warns, simulates exactly that sim, and the store equals a clean run."""
    store = str(tmp_path / "s.zarr")
    monkeypatch.setenv("CMBCUBE_FAIL_SIMS", "train/1")
    assert simulate.run(RECIPE, store, scheduler="synchronous", progress=False).failed
    monkeypatch.delenv("CMBCUBE_FAIL_SIMS")
    zarr.open_group(store, mode="r+")["sim_done"][0, 1] = 1              # the hand edit
    assert (cube.done_flags(store) == cube.planned(store)).all()
    assert cli.main(["verify", store, "--no-progress"]) == 1
    assert "train  1    obs" in capsys.readouterr().out
    assert cli.main(["simulate", recipe_file(tmp_path / "r.yaml", RECIPE), "--store", store, "--scheduler",
                     "synchronous", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "simulated 1 sim(s)" in captured.out and "(3 were already done)" in captured.out
    assert "sim_done is set for 1 sim(s) whose data files are missing (train/1)" in caplog.text
    assert chunks(store) == chunks(clean)
    assert cli.main(["verify", store, "--no-progress"]) == 0


def test_flag_cleared_by_hand_for_a_sim_with_data(tmp_path, clean):
    """sim_done cleared for a written sim: readers leave the sim out (datasets list only flagged sims),
    simulate rewrites exactly it, with the same bytes, and flags it again."""
    store = str(tmp_path / "s.zarr")
    shutil.copytree(clean, store)
    zarr.open_group(store, mode="r+")["sim_done"][0, 0] = 0
    assert CubeDataset(store, "train", detectors=[143], fields=["I"]).sims == [1, 2]
    assert int(cmbcube.open(store).sim_done.sel(split="train", sim=0).values) == 0
    assert simulate.run(RECIPE, store, scheduler="synchronous", progress=False).written == [("train", 0)]
    assert chunks(store) == chunks(clean)
    assert CubeDataset(store, "train", detectors=[143], fields=["I"]).sims == [0, 1, 2]


# ----------------------------------------------------------------------------- paths in names and metadata
def tree(folder) -> set:
    return {str(p.relative_to(folder)) for p in Path(folder).rglob("*")}


def test_run_names_with_dot_dot_or_absolute_paths_are_refused(tmp_path, clean, capsys):
    """`--run` for train, ilc and predict: '../x', 'a/b', an absolute path, '.hidden' are refused with
    exit 2 naming --run, before anything is written anywhere."""
    store = str(tmp_path / "s.zarr")
    shutil.copytree(clean, store)
    before = tree(tmp_path)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    for bad in ("../escape", "a/b", str(outside), ".hidden"):
        for argv in (["train", store, "--model", "patch-unet", "--run", bad, "--epochs", "1", "--no-progress"],
                     ["ilc", store, "--method", "hilc", "--run", bad, "--scheduler", "synchronous", "--no-progress"],
                     ["predict", store, "--run", bad, "--no-progress"]):
            assert cli.main(argv) == 2, argv
            assert f"--run {bad!r}: not allowed as a run name" in capsys.readouterr().err
    assert tree(tmp_path) == before and not outside.exists()
    assert chunks(store) == chunks(clean)
    with pytest.raises(ValueError, match="not allowed as a run name"):
        cube.ensure_run(store, "../x", "nilc", {}, 1.0)
    assert cube.check_run_name("nilc-T_2.0+dust") == "nilc-T_2.0+dust"


def test_hostile_run_names_in_a_store_write_and_delete_nothing_outside(tmp_path, clean, capsys):
    """Run names edited into a store's metadata ('../victim', an absolute path): report writes its files
    inside --out only, predict refuses the name (exit 2), drop removes the runs from the axis but
    deletes nothing outside the store and its .runs folder."""
    store = str(tmp_path / "s.zarr")
    shutil.copytree(clean, store)
    for method in ("hilc", "nilc"):
        assert ilc.run(store, ilc.ILCConfig(method=method, fields=("I",)), splits=("test",),
                       scheduler="synchronous", progress=False).ok
    assert not analyze.run(store, scheduler="synchronous", progress=False).failed
    victim = tmp_path / "victim"                        # <store>.runs/../victim
    absolute = tmp_path / "absolute"
    for folder in (victim, absolute):
        folder.mkdir()
        (folder / "keep.txt").write_text("precious")
    group = zarr.open_group(store, mode="r+")
    group["run"][0] = "../victim"
    group["run"][1] = str(absolute)
    cube.consolidate(store)
    before = tree(tmp_path)

    report = tmp_path / "report"
    assert cli.main(["report", store, "--out", str(report)]) == 0
    assert tree(tmp_path) - before == {"report"} | {f"report/{p}" for p in tree(report)}
    maps = {p.name for p in report.glob("map_*")}
    assert maps == {f"map_{cube.safe_name(str(absolute))}_test_0000_I.png", "map__._victim_test_0000_I.png"}

    capsys.readouterr()
    assert cli.main(["predict", store, "--run", "../victim", "--no-progress"]) == 2
    assert "--run '../victim': not allowed as a run name" in capsys.readouterr().err
    assert cli.main(["drop", store, "run", "--run", "../victim"]) == 0
    assert "'../victim' is not a folder name under" in capsys.readouterr().out
    assert cli.main(["drop", store, "run"]) == 0
    assert f"{str(absolute)!r} is not a folder name under" in capsys.readouterr().out
    assert "run" not in cmbcube.open(store).coords
    for folder in (victim, absolute):
        assert (folder / "keep.txt").read_text() == "precious"


# ----------------------------------------------------------------------------- SIGKILL during ilc, analyze, train
def test_sigkill_during_ilc_and_analyze_then_reruns_complete_bit_identical(tmp_path, clean):
    """`cmbcube ilc` and then `cmbcube analyze` SIGKILLed while their second unit is computed but not
    written: the first unit is flagged and equal to an uninterrupted run, the held one is not flagged,
    and a rerun writes exactly the rest; predictions, metrics and spectra then equal the
    uninterrupted run's bytes (the reruns run in process, as the reference: fewer slow starts)."""
    ref, store = str(tmp_path / "ref.zarr"), str(tmp_path / "s.zarr")
    shutil.copytree(clean, ref)
    shutil.copytree(clean, store)
    config = ilc.ILCConfig(method="hilc", fields=("I",))
    assert ilc.run(ref, config, splits=("train", "test"), scheduler="synchronous", progress=False).ok
    assert not analyze.run(ref, splits=("train", "test"), scheduler="synchronous", progress=False).failed

    trace = tmp_path / "ilc"
    trace.mkdir()
    proc = popen_cli("ilc", store, "--method", "hilc", "--fields", "I", "--split", "train,test", "--scheduler",
                     "synchronous", "--no-progress", env={"CMBCUBE_ILC_DELAY": "1", "CMBCUBE_ILC_TRACE": str(trace)})
    kill_when(proc, lambda: len(os.listdir(trace)) >= 2, "the second ILC sim held")
    held = traced(trace)
    assert len(held) == 2
    done = np.asarray(zarr.open_group(store, mode="r")["pred_done"][0]) == 1
    assert [(cube.SPLITS[i], int(j)) for i, j in zip(*np.nonzero(done))] == [held[0][:2]]
    assert chunks(store, "pred") == {k: v for k, v in chunks(ref, "pred").items() if k in chunks(store, "pred")}
    rerun = ilc.run(store, config, splits=("train", "test"), scheduler="synchronous", progress=False)
    assert rerun.ok and len(rerun.written) == 3 and rerun.already_done == 1
    assert chunks(store, "pred") == chunks(ref, "pred") and chunks(store, "pred_done") == chunks(ref, "pred_done")

    trace = tmp_path / "analyze"
    trace.mkdir()
    proc = popen_cli("analyze", store, "--split", "train,test", "--scheduler", "synchronous", "--no-progress",
                     env={"CMBCUBE_ANALYZE_DELAY": "1", "CMBCUBE_ANALYZE_TRACE": str(trace)})
    kill_when(proc, lambda: len(os.listdir(trace)) >= 2, "the second analysis held")
    held = traced(trace)
    done = np.asarray(zarr.open_group(store, mode="r")["analysis_done"][0]) == 1
    assert [(cube.SPLITS[i], int(j)) for i, j in zip(*np.nonzero(done))] == [held[0][1:3]]
    rerun = analyze.run(store, splits=("train", "test"), scheduler="synchronous", progress=False)
    assert not rerun.failed and len(rerun.written) == 3 and rerun.already_done == 1
    for name in ("metrics", "spectra", "analysis_done", "mask", "mask_apodized"):
        assert chunks(store, name) == chunks(ref, name) and chunks(ref, name), name


TRAIN_ARGS = ["--model", "patch-unet", "--patch-side", "8", "--epochs", "2", "--batch-size", "32", "--train-sims", "2",
              "--device", "cpu", "--no-progress"]


TRAIN_CONFIG = train.TrainConfig(**{**train.defaults("patch-unet"), "model": "patch-unet", "patch_side": 8,
                                    "epochs": 2, "batch_size": 32, "train_sims": 2})     # = TRAIN_ARGS


@pytest.fixture(scope="module")
def trained(clean, tmp_path_factory):
    """(a store ready to train: statistics computed; the same trained without interruption)."""
    folder = tmp_path_factory.mktemp("train")
    base, ref = str(folder / "base.zarr"), str(folder / "ref.zarr")
    shutil.copytree(clean, base)
    preprocess.run(base, scheduler="synchronous")            # patch-unet standardises
    shutil.copytree(base, ref)
    with single_threaded():                                  # as the CLI processes (PINNED)
        train.run(ref, TRAIN_CONFIG, device="cpu", progress=False)
    return base, ref


def assert_same_training(store, ref):
    a = torch.load(cube.run_dir(ref, "patch-unet") / "epoch_0002.pt", weights_only=True)
    b = torch.load(cube.run_dir(store, "patch-unet") / "epoch_0002.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys() and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k][n], sb[k][n]) for k in sa for n in sa[k])
    assert a["train_loss"] == b["train_loss"] and len(a["train_loss"]) == 2
    assert np.array_equal(a["valid_loss"], b["valid_loss"], equal_nan=True)      # no valid sims here: NaN
    assert np.array_equal(cmbcube.open(store).loss_train.values, cmbcube.open(ref).loss_train.values)


def test_sigkill_during_train_then_resume_is_bit_identical(tmp_path, trained):
    """`cmbcube train` SIGKILLed in the middle of epoch 2 (after optimiser steps the epoch-1 checkpoint
    does not hold): `--resume` continues from that checkpoint (model, optimiser, scheduler and RNG
    states) and ends with the weights, optimiser state and losses of an uninterrupted run, bit for bit."""
    base, ref = trained
    store = str(tmp_path / "s.zarr")
    shutil.copytree(base, store)
    trace = tmp_path / "train"
    trace.mkdir()
    proc = popen_cli("train", store, *TRAIN_ARGS, env={"CMBCUBE_TRAIN_DELAY": "0.4", "CMBCUBE_TRAIN_TRACE": str(trace)})
    kill_when(proc, lambda: any(t[0] == 1 and t[1] >= 1 for t in traced(trace)), "epoch 2 (the last), second batch")
    runs = Path(store + ".runs") / "patch-unet"
    assert sorted(p.name for p in runs.glob("epoch_*.pt")) == ["epoch_0001.pt"]
    with single_threaded():
        assert train.run(store, TRAIN_CONFIG, device="cpu", resume=True, progress=False).epochs_done == 2
    assert_same_training(store, ref)


# ----------------------------------------------------------------------------- an untrusted store
class Evil:
    """Unpickling this calls open(path, 'w'): what a hostile checkpoint would run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def hostile_copy(clean, folder: Path, name: str, edit) -> Path:
    """A copy of the clean store whose consolidated metadata ``edit(metadata dict)`` changed."""
    store = folder / name
    shutil.copytree(clean, store)
    root = json.loads((store / "zarr.json").read_text())
    edit(root["consolidated_metadata"]["metadata"], root["attributes"])
    (store / "zarr.json").write_text(json.dumps(root))
    return store


def test_untrusted_http_store_huge_shapes_refused_nothing_executed(clean, tmp_path, capsys):
    """A store served over HTTP whose zarr.json declares 10^12 sims, or a chunk far larger than its
    array, and whose recipe text carries a YAML python tag: cmbcube.open, `cmbcube info` and
    CubeDataset refuse it with the array named, before reading any chunk or allocating anything;
    nothing in it runs."""
    www = tmp_path / "www"
    www.mkdir()
    marker = tmp_path / "executed"

    def many_sims(meta, attrs):
        for arr in meta.values():
            if "sim" in (arr.get("dimension_names") or []):
                arr["shape"][arr["dimension_names"].index("sim")] = 10 ** 12
        attrs["recipe_text"] = f"!!python/object/apply:builtins.open ['{marker}', 'w']\n"

    def huge_chunk(meta, attrs):
        meta["n_sims"]["chunk_grid"]["configuration"]["chunk_shape"] = [10 ** 10]

    hostile_copy(clean, www, "sims.zarr", many_sims)
    hostile_copy(clean, www, "chunk.zarr", huge_chunk)
    server = Server(www, tmp_path / "server.log")
    try:
        url = f"http://127.0.0.1:{server.port}"
        mark = server.mark()
        with pytest.raises(cube.StoreError, match=r"array '\w+' declares dimension sim of length 1000000000000"):
            cmbcube.open(f"{url}/sims.zarr")
        with pytest.raises(cube.StoreError, match="declares dimension sim"):
            CubeDataset(f"{url}/sims.zarr", "train")
        assert cli.main(["info", f"{url}/sims.zarr"]) == 2
        assert "declares dimension sim of length 1000000000000" in capsys.readouterr().err
        with pytest.raises(cube.StoreError, match=r"array 'n_sims' declares chunk shape \(10000000000,\) larger"):
            cmbcube.open(f"{url}/chunk.zarr")
        assert [r for r in server.requests(mark) if "/c/" in r] == [], server.requests(mark)   # no chunk read
        assert server.writes() == []
    finally:
        server.close()
    assert not marker.exists()
    # the same metadata on a local path is refused the same way
    with pytest.raises(cube.StoreError, match="declares dimension sim"):
        cube.done_flags(str(www / "sims.zarr"))


def test_hostile_checkpoint_is_refused_by_the_weights_only_loader(tmp_path, clean, capsys):
    """A run whose checkpoint file is a pickle that would run code: `cmbcube predict` refuses it
    (exit 2, the file named) and nothing in it runs, because every checkpoint is loaded weights-only."""
    store = str(tmp_path / "s.zarr")
    shutil.copytree(clean, store)
    folder = cube.run_dir(store, "evil")
    config = train.TrainConfig(**{**train.defaults("patch-unet"), "model": "patch-unet", "patch_side": 8})
    cube.ensure_run(store, "evil", "patch-unet", {**config.as_dict(), "checkpoint_dir": str(folder.resolve())}, 0.0)
    folder.mkdir(parents=True)
    marker = tmp_path / "executed"
    torch.save({"model": Evil(str(marker)), "epoch": 1}, folder / "epoch_0001.pt")
    assert cli.main(["predict", store, "--run", "evil", "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'epoch_0001.pt'}: not a cmbcube checkpoint; refused by the weights-only loader" in err
    assert not marker.exists()
    assert cube.pred_done_count(store, 0) == 0


# ----------------------------------------------------------------------------- a full disk
@pytest.fixture
def small_disk(tmp_path):
    """A small tmpfs (we may be root); skipped where mounting is not permitted."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small file system to fill")
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({out.stderr.strip() or out.returncode}): needs root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def leave_free(folder: Path, nbytes: int) -> Path:
    """Fill ``folder``'s file system with a ballast file until ``nbytes`` are left free."""
    ballast = folder / "ballast"
    with open(ballast, "wb") as f:
        f.write(b"\0" * (shutil.disk_usage(folder).free - nbytes))
    return ballast


def test_disk_full_during_simulate_then_rerun_after_freeing_space(small_disk, tmp_path, clean, capsys):
    """simulate on a file system with room for the empty store and about one sim: the sims that do not
    fit fail (exit 1) with the disk named as full, none is flagged, the flagged one equals a clean
    run, no temporary is left; once space is freed the rerun writes exactly the rest."""
    ballast = leave_free(small_disk, 1300 * 1024)
    store = str(small_disk / "s.zarr")
    path = recipe_file(tmp_path / "r.yaml", RECIPE)
    # the size check (cmbcube.compute.limits) would refuse this disk up front from its uncompressed estimate:
    # --force-size lets the drill reach a real full disk
    argv = ["simulate", path, "--store", store, "--scheduler", "synchronous", "--no-progress", "--force-size"]
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    assert "No space left on device" in err and "the disk is full; free some space, then rerun" in err
    done = [(cube.SPLITS[i], int(j)) for i, j in zip(*np.nonzero(cube.done_flags(store)))]
    assert 1 <= len(done) < 4 and f"simulated {len(done)} sim(s)" in out
    got, want = chunks(store), chunks(clean)
    units = {(str(cube.SPLITS.index(s)), str(j)) for s, j in done}
    # every chunk of a flagged sim is there (so the comparison below is never empty) and equals the clean run's
    of_done = [k for k in want if not k.startswith("sim_done") and tuple(k.split("/")[2:4]) in units]
    assert of_done and set(of_done) <= set(got), sorted(set(of_done) - set(got))
    assert all(got[k] == want[k] for k in of_done + [k for k in want if k.startswith("sim_done") and k in got])
    assert [p for p in Path(store).rglob("*") if "partial" in p.name or p.name.startswith(".")] == []
    ballast.unlink()
    assert cli.main(argv) == 0
    assert f"simulated {4 - len(done)} sim(s)" in capsys.readouterr().out
    assert chunks(store) == chunks(clean)


def test_disk_full_during_train_then_resume_after_freeing_space(small_disk, trained, capsys):
    """train with room for one checkpoint but not two: epoch 2's checkpoint fails with exit 2 and a
    message naming the file and the full disk (torch reports it as a RuntimeError), no partial file is
    left; after freeing space `--resume` completes, bit-identical to an uninterrupted run."""
    base, ref = trained
    store = str(small_disk / "s.zarr")
    shutil.copytree(base, store)
    size = (cube.run_dir(ref, "patch-unet") / "epoch_0002.pt").stat().st_size      # the last: always kept
    ballast = leave_free(small_disk, int(1.5 * size))
    # the checkpoint-size check (cmbcube.compute.limits) would refuse this disk up front: --force-size lets the
    # drill reach a real full disk in the middle of training
    argv = ["train", store, *TRAIN_ARGS, "--force-size"]
    with single_threaded():
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        folder = cube.run_dir(store, "patch-unet")
        assert f"{folder / 'epoch_0002.pt'}: No space left on device for the epoch-2 checkpoint" in err
        assert sorted(p.name for p in folder.iterdir()) == ["epoch_0001.pt", "loss.png"]
        ballast.unlink()
        assert cli.main(argv + ["--resume"]) == 0
    assert_same_training(store, ref)
