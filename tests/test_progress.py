"""Progress: a live bar on a terminal (checked under a pseudo-terminal), plain lines when piped."""
import os
import re
import select
import subprocess
import sys
import time

import pytest
import yaml

from cmbcube import progress

RECIPE = {"name": "bar", "seed": 3, "nside": 16, "splits": {"train": 2, "valid": 0, "test": 1},
          "detectors": [100, 143], "fields": ["I"], "keep": ["cmb"],
          "foregrounds": {"components": ["dust"]}, "cluster": {"kind": "synchronous"}}


def _cli(*args):
    return [sys.executable, "-m", "cmbcube.cli", *args]


def _run_on_pty(cmd, timeout=240):
    """Run ``cmd`` with stdout and stderr on a pseudo-terminal; return (exit code, everything it wrote)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:          # the child closed the terminal (EIO on Linux)
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def test_a_stage_draws_a_bar_on_a_terminal_and_plain_lines_in_a_pipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    code, out = _run_on_pty(_cli("simulate", str(recipe), "--store", str(tmp_path / "tty.zarr")))
    assert code == 0, out[-2000:]
    # tqdm's bar: redrawn in place (a carriage return before the stage's name), done/total and a rate
    assert "\rsimulate:" in out and "| 1/3 [" in out and "| 3/3 [" in out, out[-2000:]
    assert re.search(r"\| 3/3 \[[0-9:]+<[0-9:]+, +[0-9.]+(sim/s|s/sim)\]", out), out[-2000:]
    assert "simulated 3 sim(s)" in out

    proc = subprocess.run(_cli("-v", "simulate", str(recipe), "--store", str(tmp_path / "pipe.zarr")),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    both = proc.stdout + proc.stderr
    assert "\r" not in both and "sim/s]" not in both and "|" not in proc.stderr     # no bar, nothing redrawn
    # -v: what the stage does, on which sims, where it writes; and how it ended
    store = str(tmp_path / "pipe.zarr")
    assert f"simulate: 3 sim(s) to do (train 0-1; test 0) -> {store}" in proc.stderr, proc.stderr
    assert "simulate: 3/3 sim(s) in" in proc.stderr
    assert "simulated 3 sim(s)" in proc.stdout

    # the other long stages the same way: preprocess (passes over the split) and ilc (sims)
    tty = str(tmp_path / "tty.zarr")
    code, out = _run_on_pty(_cli("preprocess", tty))
    assert code == 0, out[-2000:]
    assert "\rpreprocess train (2 sims):" in out and "| 4/4 [" in out, out[-2000:]
    code, out = _run_on_pty(_cli("ilc", tty, "--method", "hilc", "--scheduler", "synchronous"))
    assert code == 0, out[-2000:]
    assert re.search(r"\r[^\r]*hilc[^\r]*\| 1/1 \[", out), out[-2000:]
    proc = subprocess.run(_cli("preprocess", store), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0 and "\r" not in proc.stdout + proc.stderr, proc.stderr[-2000:]


def test_forced_and_suppressed_bars(capsys):
    with progress.bar(4, "stage", progress=False) as bar:
        for _ in range(4):
            bar.update(1)
    assert capsys.readouterr().err == ""
    with progress.bar(4, "stage", progress=True) as bar:
        for _ in range(4):
            bar.update(1, loss="0.5")
    err = capsys.readouterr().err
    assert "stage" in err and "4/4" in err and "loss=0.5" in err
    assert list(progress.iterate([("train", 0), ("train", 1)], "x", progress=False)) == [("train", 0), ("train", 1)]


def test_describe_items_compresses_sim_ranges():
    assert progress.describe_items([("train", 0), ("train", 1), ("train", 2), ("test", 5)]) == "train 0-2; test 5"
    assert progress.describe_items([("nilc", "test", 0), ("nilc", "test", 2)]) == "nilc test 0,2"


def test_dashboard_note_says_how_to_get_bokeh(monkeypatch):
    import importlib.util

    from cmbcube.compute import cluster
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    note = cluster.dashboard_note(True)
    assert "pip install 'cmbcube[dashboard]'" in note
    assert cluster.dashboard_note(False) == ""


@pytest.mark.parametrize("flag", [None, False])
def test_piped_stream_is_not_interactive(flag):
    class Pipe:
        def isatty(self):
            return False
    assert progress.interactive(flag, Pipe()) is False
