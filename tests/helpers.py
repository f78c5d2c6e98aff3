"""Plain helpers shared by the test modules: recipes, store copies and byte snapshots, damaged chunks,
the command line in a subprocess, an external Dask cluster, an HTTP server and moto's S3 server.

Fixtures live in conftest.py; test modules import these with ``from helpers import ...`` and never
import one another."""
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from cmbcube import cube, recipe as recipe_mod
from cmbcube.compute import cluster
from cmbcube.recipe import load

SPLITS = ("train", "valid", "test")
BIN = Path(sys.executable).parent
CLI = [sys.executable, "-m", "cmbcube.cli"]
PINNED = {name: "1" for name in cluster.THREAD_VARS} | {"CMBCUBE_SHT_THREADS": "1"}


# ----------------------------------------------------------------------------- recipes
def small_recipe(**changes):
    """A tiny but complete recipe: nside 16, sky 32, all detectors, IQU, every component."""
    data = {
        "name": "tiny", "seed": 7, "nside": 16,
        "splits": {"train": 3, "valid": 1, "test": 2},
        "keep": ["cmb", "components", "noise"],
        "cluster": {"kind": "synchronous"},
    }
    for key, value in changes.items():
        node = data
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return recipe_mod.validate(data)


def tsz_recipe(**changes):
    """:func:`small_recipe` at nside 8 (sky nside 16) with the tSZ as its only foreground, then ``changes``."""
    return small_recipe(**{"nside": 8, "sky_nside": 16, "foregrounds__components": ["tsz"], **changes})


def fast_recipe(**changes):
    """Four quick sims: no CAMB (cmb disabled); the Dask side does not depend on the physics."""
    return small_recipe(**{"splits": {"train": 2, "valid": 0, "test": 2}, "keep": ["cmb", "noise"],
                           "cmb__enabled": False, **changes})


def shared_recipe():
    """Two test skies of fixed cosmology, CMB only kept, dust and synchrotron: the shared-store tests' recipe."""
    return small_recipe(splits={"train": 0, "valid": 0, "test": 2}, keep=["cmb"], cmb__prior="fixed",
                        foregrounds__components=["dust", "synchrotron"])


def recipe_file(path: Path, recipe) -> str:
    """Write a validated recipe as YAML (its normalised form: the same hash when loaded)."""
    path.write_text(yaml.safe_dump(json.loads(json.dumps(recipe.data)), sort_keys=False))
    assert load(path).hash == recipe.hash
    return str(path)


# ----------------------------------------------------------------------------- stores and their bytes
def zarr_files(path):
    """{relative path: bytes} of every file under a store."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            out[os.path.relpath(full, path)] = open(full, "rb").read()
    return out


def chunks(store, product=None) -> dict:
    """{path: bytes} of the data chunks (leftover *.partial temporaries excluded)."""
    return {k: v for k, v in zarr_files(store).items()
            if "/c/" in k and ".partial" not in k and (product is None or k.startswith(product + "/"))}


def copy_store(src, folder, name: str = "s.zarr", runs: bool = False) -> str:
    """Copy the store ``src`` to ``folder/name`` (and its ``.runs`` checkpoints when ``runs``); the copy's path."""
    path = str(Path(folder) / name)
    shutil.copytree(src, path)
    if runs:
        shutil.copytree(str(src) + ".runs", path + ".runs")
    return path


def shard_path(store, name, split, sim):
    """The one chunk file (shard) of array ``name`` holding (split, sim)."""
    [(_, path)] = cube.unit_files(store, cube.fresh_group(store)[name], name, (SPLITS.index(split), sim))
    return path


def flip_bit(path, offset):
    """Flip the lowest bit of the byte at ``offset`` of a file."""
    blob = bytearray(open(path, "rb").read())
    blob[offset] ^= 0x01
    open(path, "wb").write(bytes(blob))


def rms(x):
    return float(np.sqrt(np.mean(np.square(x))))


def interrupt_training(monkeypatch, at_call: int = 2):
    """Make ``train.evaluate`` raise KeyboardInterrupt on its ``at_call``-th call: a training process that
    dies in that epoch, after the previous epoch's checkpoint.  Returns the real ``evaluate``."""
    from cmbcube.stages import train
    original, calls = train.evaluate, []

    def dies(*args, **kwargs):
        calls.append(1)
        if len(calls) == at_call:
            raise KeyboardInterrupt
        return original(*args, **kwargs)
    monkeypatch.setattr(train, "evaluate", dies)
    return original


# ----------------------------------------------------------------------------- the command line
def cli(*args, env=None, timeout=300, cwd=None):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, **PINNED, **(env or {})})


def popen_cli(*args, env=None):
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **PINNED, **(env or {})})


def wait_for(predicate, timeout=60, what=""):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# ----------------------------------------------------------------------------- an external cluster
class ExternalCluster:
    """`dask scheduler` + N `dask worker` processes on 127.0.0.1, each in its own session."""

    def __init__(self, workdir: Path, nworkers: int = 2, env: dict | None = None):
        self.dir = workdir
        self.scheduler_file = str(workdir / "scheduler.json")
        self.trace = workdir / "trace"           # CMBCUBE_SIM_TRACE: which process ran which sim
        self.trace.mkdir()
        self.env = {**os.environ, **PINNED, "CMBCUBE_SIM_TRACE": str(self.trace), **(env or {})}
        self.procs: list[subprocess.Popen] = []
        self.logs = []
        try:
            self._spawn("scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                      "--scheduler-file", self.scheduler_file, "--dashboard-address", "127.0.0.1:0"])
            deadline = time.monotonic() + 60
            while not os.path.exists(self.scheduler_file):
                assert time.monotonic() < deadline, self.log_text()
                assert self.procs[0].poll() is None, self.log_text()
                time.sleep(0.1)
            for k in range(nworkers):
                self.add_worker(f"w{k}")
            self.wait_for_workers(nworkers)
        except BaseException:
            self.close()
            raise

    def _spawn(self, name, argv):
        log = open(self.dir / f"{name}.log", "w")
        self.logs.append(log)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
                                cwd=self.dir, start_new_session=True)
        self.procs.append(proc)
        return proc

    def add_worker(self, name):
        return self._spawn(name, [str(BIN / "dask"), "worker", "--scheduler-file", self.scheduler_file,
                                  "--nthreads", "1", "--nworkers", "1", "--name", name, "--host", "127.0.0.1",
                                  "--no-dashboard", "--local-directory", str(self.dir / name)])

    @property
    def address(self):
        return json.loads(Path(self.scheduler_file).read_text())["address"]

    def info(self) -> dict:
        from distributed import Client
        with Client(self.address, timeout="30s") as client:
            return client.scheduler_info(n_workers=-1)

    def wait_for_workers(self, n, timeout=90):
        from distributed import Client
        with Client(self.address, timeout="30s") as client:
            client.wait_for_workers(n, timeout=timeout)

    def worker_pids(self) -> dict[str, int]:
        """{worker address: pid of the worker process} (the nanny's child)."""
        from distributed import Client
        with Client(self.address, timeout="30s") as client:
            return client.run(os.getpid)

    def wait_idle(self, timeout=60):
        """Until no worker thread runs a task (cancelled tasks of a dead client finish on their own)."""
        from distributed import Client
        deadline = time.monotonic() + timeout
        with Client(self.address, timeout="30s") as client:
            while any(client.run(lambda dask_worker: len(dask_worker.state.executing)).values()):
                assert time.monotonic() < deadline, "workers still busy"
                time.sleep(0.1)

    def traced(self) -> list[tuple[str, int, int]]:
        """(split, sim, pid) of every sim started so far, oldest first."""
        out = []
        for p in self.trace.iterdir():
            split, sim, pid = p.name.split("-")
            out.append((p.stat().st_mtime_ns, split, int(sim), int(pid)))
        return [t[1:] for t in sorted(out)]

    def clear_trace(self):
        for p in self.trace.iterdir():
            p.unlink()

    def log_text(self):
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.dir.glob("*.log")))

    def close(self):
        """Terminate every process group started here (nannies take their workers along), then kill."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)     # stragglers of the group (worker processes)
            except (ProcessLookupError, PermissionError):
                pass
            if proc.poll() is None:
                proc.wait(timeout=10)
        for log in self.logs:
            log.close()


# ----------------------------------------------------------------------------- servers
class Server:
    """``python -m http.server`` in a subprocess, serving a folder read-only on 127.0.0.1.

    It answers GET/HEAD only (no writes) and ignores Range requests, like the simplest
    web servers; every request is logged to its stderr, which we read to count requests.
    """

    def __init__(self, folder: Path, log: Path):
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(folder)],
            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=30):
            self.close()
            raise RuntimeError("python -m http.server did not start")
        line = self.proc.stdout.readline()
        self.port = int(re.search(r"port (\d+)", line).group(1))

    def mark(self) -> int:
        return self.log.stat().st_size

    def requests(self, since: int) -> list[str]:
        time.sleep(0.2)                         # the log line is written before the response; be generous
        with open(self.log) as f:
            f.seek(since)
            text = f.read()
        return re.findall(r'"(?:GET|HEAD|PUT|POST|DELETE) (\S+) HTTP', text)

    def writes(self) -> list[str]:
        return re.findall(r'"((?:PUT|POST|DELETE|PATCH) \S+) HTTP', self.log.read_text())

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def moto_s3(bucket: str, tag: str):
    """moto's S3 server on loopback with one bucket and this test file's own dummy AWS_* credentials
    (restored after): a context manager yielding (env, boto3 client)."""
    import contextlib
    import logging

    @contextlib.contextmanager
    def running():
        from moto.server import ThreadedMotoServer
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        env = {"AWS_ACCESS_KEY_ID": f"cmbcube-{tag}", "AWS_SECRET_ACCESS_KEY": f"cmbcube-{tag}-secret",
               "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_REGION": "us-east-1"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            import boto3
            client = boto3.client("s3")
            client.create_bucket(Bucket=bucket)
            yield env, client
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            server.stop()
    return running()
