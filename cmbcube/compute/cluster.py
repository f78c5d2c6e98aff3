"""Dask clients from the command line or a recipe's ``cluster:`` section.

Four ways to compute (``cluster.kind``): ``local`` (a LocalCluster on this machine),
``address`` (an existing scheduler: ``tcp://host:port`` or a scheduler file, as
``dask scheduler --scheduler-file`` writes), ``slurm`` (a scheduler here and workers
submitted with sbatch through dask-jobqueue) and ``synchronous`` (no Dask at all).
``--scheduler`` / ``--scheduler-file`` on the command line override the recipe.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time

from cmbcube.errors import CmbcubeError, InputError, param

log = logging.getLogger("cmbcube")

# Every thread pool a worker's numerics may use, pinned to the worker's thread count.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
DRY_RUN_SCHEDULER = "tcp://SCHEDULER-ADDRESS:8786"
SCHEDULER_FILE_WAIT_S = 60.0
_ANNOUNCED: set = set()          # scheduler addresses already announced by this process


class ClusterError(InputError):
    """The cluster cannot be started or reached; the message says why and what to do."""


def quiet_distributed() -> None:
    """Keep Dask's own INFO chatter (and shutdown tracebacks) out of the way unless -vv."""
    if logging.getLogger("cmbcube").getEffectiveLevel() <= logging.DEBUG:
        return
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("distributed", "tornado", "dask_jobqueue")):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def worker_environment(threads: int) -> dict[str, str]:
    """Environment of a worker process running ``threads`` task threads.

    Measured (benchmarks/simulate.py): numba's kernels (pysm3) ignore OMP_NUM_THREADS, and
    unpinned pools made two workers fight over the cores; Dask's default MALLOC_TRIM_THRESHOLD_
    made every sim ~1.6x slower, so malloc's defaults are left alone.
    """
    return {name: str(threads) for name in THREAD_VARS}


def _settings(settings: dict | None) -> dict:
    from cmbcube.recipe import cluster_settings
    return cluster_settings(settings)


def plan(settings: dict | None, scheduler: str | None = None, scheduler_file: str | None = None,
         workers: int | None = None) -> dict:
    """What :func:`client_for` would do, without doing it.

    Returns ``{"mode": "synchronous" | "connect" | "local" | "slurm", ...}``.
    Precedence: --scheduler / --scheduler-file, then the recipe's cluster section.
    """
    s = _settings(settings)
    if scheduler == "synchronous":
        return {"mode": "synchronous"}
    if scheduler or scheduler_file:
        return {"mode": "connect", "address": scheduler, "scheduler_file": None if scheduler else scheduler_file}
    kind = s["kind"]
    if kind == "synchronous":
        return {"mode": "synchronous"}
    if kind == "address":
        return {"mode": "connect", "address": s["address"],
                "scheduler_file": None if s["address"] else s["scheduler_file"]}
    if kind == "slurm":
        kwargs = slurm_job_kwargs(s)
        return {"mode": "slurm", "jobs": s["slurm"]["jobs"], "processes": kwargs["processes"],
                "threads": kwargs["cores"] // kwargs["processes"], "kwargs": kwargs}
    n = workers or s["workers"]
    return {"mode": "local", "workers": n, "threads": s["threads_per_worker"], "memory_limit": s["memory_limit"]}


def slurm_job_kwargs(settings: dict) -> dict:
    """Keyword arguments of dask-jobqueue's SLURMCluster / SLURMJob from a cluster section."""
    s = _settings(settings)
    sl = s["slurm"]
    threads = s["threads_per_worker"]
    processes = sl["processes"] or max(1, sl["cores"] // threads)
    per_worker = max(1, sl["cores"] // processes)
    prologue = [f"export {k}={v}" for k, v in worker_environment(per_worker).items()] + list(sl["job_script_prologue"])
    kwargs = {"cores": sl["cores"], "processes": processes, "memory": sl["memory"], "walltime": sl["walltime"],
              "job_name": sl["job_name"], "job_extra_directives": list(sl["job_extra_directives"]),
              "job_script_prologue": prologue}
    for key in ("queue", "account", "local_directory", "log_directory", "interface", "python"):
        if sl[key] is not None:
            kwargs[key] = sl[key]
    return kwargs


def _jobqueue():
    try:
        import dask_jobqueue
    except ImportError:
        raise ClusterError("cluster.kind 'slurm' needs dask-jobqueue: pip install 'cmbcube[slurm]' "
                           "(or pip install dask-jobqueue)") from None
    return dask_jobqueue


def slurm_job_script(settings: dict, scheduler_address: str = DRY_RUN_SCHEDULER) -> str:
    """The sbatch script each SLURM job would run (nothing is started or submitted)."""
    import tempfile
    job_cls = _jobqueue().SLURMCluster.job_cls
    kwargs = slurm_job_kwargs(settings)
    logs = kwargs.pop("log_directory", None)
    with tempfile.TemporaryDirectory() as stand_in:      # dask-jobqueue creates the log directory
        script = job_cls(scheduler=scheduler_address, name="cmbcube-dry-run",
                         log_directory=stand_in if logs else None, **kwargs).job_script()
    return script.replace(stand_in, logs) if logs else script


def describe(settings: dict | None, scheduler: str | None = None, scheduler_file: str | None = None,
             workers: int | None = None) -> str:
    """A dry run's account of the compute side: what would be started or connected to."""
    p = plan(settings, scheduler, scheduler_file, workers)
    if p["mode"] == "synchronous":
        return "compute: every task in this process, one after another (synchronous; no Dask cluster)"
    if p["mode"] == "connect":
        if p["address"]:
            return f"compute: would connect to the Dask scheduler at {p['address']} (its workers run the tasks)"
        where = p["scheduler_file"]
        now = ""
        try:
            with open(where) as f:
                now = f" (the file now names {json.load(f)['address']})"
        except (OSError, ValueError, KeyError):
            now = " (the file does not exist yet; it is waited for up to " f"{SCHEDULER_FILE_WAIT_S:.0f} s)"
        return f"compute: would connect to the Dask scheduler named in {where}{now}"
    if p["mode"] == "local":
        env = " ".join(f"{k}={v}" for k, v in worker_environment(p["threads"]).items())
        return (f"compute: would start a local Dask cluster of {p['workers']} worker process(es) x {p['threads']} "
                f"thread(s), memory limit {p['memory_limit']} per worker, environment {env}")
    script = slurm_job_script(settings)
    return (f"compute: would start a Dask scheduler in this process and submit {p['jobs']} SLURM job(s) with sbatch, "
            f"each running {p['processes']} worker process(es) x {p['threads']} thread(s); job script "
            f"({DRY_RUN_SCHEDULER} is replaced by the scheduler's address):\n{script}")


def dashboard_note(local_scheduler: bool) -> str:
    if not local_scheduler:
        return ""
    import importlib.util
    return "" if importlib.util.find_spec("bokeh") else (" (the page needs bokeh: pip install 'cmbcube[dashboard]', "
                                                          "or pip install 'bokeh>=3.1')")


def announce(client, what: str, local_scheduler: bool = False) -> None:
    """Print (not log) the scheduler and its dashboard link, once per scheduler and process."""
    address = client.scheduler.address
    if address in _ANNOUNCED:
        return
    _ANNOUNCED.add(address)
    print(f"{what}; scheduler {address}; dashboard: {client.dashboard_link}{dashboard_note(local_scheduler)}",
          flush=True)


def _read_scheduler_file(path: str, wait_s: float = SCHEDULER_FILE_WAIT_S) -> str:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with open(path) as f:
                return json.load(f)["address"]
        except FileNotFoundError:
            pass
        except (ValueError, KeyError):   # being written
            pass
        except OSError as err:
            raise ClusterError(f"{param('scheduler_file')} {path}: cannot read it ({err})") from None
        if time.monotonic() > deadline:
            raise ClusterError(f"{param('scheduler_file')} {path}: no scheduler address there after {wait_s:.0f} s; "
                               "start "
                               f"one with: dask scheduler --scheduler-file {path}")
        time.sleep(0.1)


OFFLINE_HINT = (f"cluster.kind: synchronous in the recipe (or {param('scheduler', 'synchronous')}) runs every task in "
                "this "
                "process with no network at all")


def loopback_problem(timeout: float = 2.0) -> str | None:
    """Why this machine's loopback network (127.0.0.1, which a local cluster's scheduler and workers talk
    over) cannot carry a connection, or None: a listening socket and a connection to it, in milliseconds
    (without a loopback interface, e.g. ``unshare -n``, the connection fails at once)."""
    import socket
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            with socket.create_connection(server.getsockname(), timeout=timeout):
                pass
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror or err}"
    return None


def check_can_start(settings: dict | None, scheduler: str | None = None, scheduler_file: str | None = None,
                    workers: int | None = None) -> None:
    """ClusterError (exit 2) before anything is created if the cluster the stage would start here cannot
    start: a local cluster on a machine whose loopback network does not work."""
    p = plan(settings, scheduler, scheduler_file, workers)
    if p["mode"] != "local":
        return
    problem = loopback_problem()
    if problem:
        raise ClusterError(f"cannot start a local Dask cluster (cluster.kind: local, {p['workers']} worker "
                           f"process(es)): this machine's loopback network 127.0.0.1 does not accept connections "
                           f"({problem}), and the scheduler and workers talk over it. {OFFLINE_HINT}; or bring "
                           "the loopback interface up")


def _connect(address: str, source: str):
    from distributed import Client
    try:
        return Client(address)          # waits distributed.comm.timeouts.connect (30 s by default)
    except (OSError, TimeoutError) as err:
        raise ClusterError(f"{source}: cannot reach the Dask scheduler at {address} ({type(err).__name__}: {err}); "
                           "is it running? (dask scheduler ...)") from None
    except ValueError as err:           # distributed's parse of the address
        raise ClusterError(f"{source}: {address[:200]!r} is not a scheduler address ({err}); use tcp://host:port, "
                           "or 'synchronous' to run in this process") from None


@contextlib.contextmanager
def client_for(settings: dict | None, scheduler: str | None = None, scheduler_file: str | None = None,
               workers: int | None = None):
    """Yield a ``distributed.Client`` (or None for the in-process synchronous mode).

    Precedence: --scheduler / --scheduler-file, then the recipe's cluster section
    (``workers`` overrides the local cluster's worker count).  Clusters started here are
    closed (SLURM jobs cancelled) on exit; external schedulers are left running.
    """
    p = plan(settings, scheduler, scheduler_file, workers)
    if p["mode"] == "synchronous":
        yield None
        return
    import distributed  # noqa: F401 - its import configures its loggers; quiet them afterwards
    quiet_distributed()
    if p["mode"] == "connect":
        if p["address"]:
            client = _connect(p["address"], param("scheduler") if scheduler else "cluster.address")
        else:
            source = param("scheduler_file") if scheduler_file else "cluster.scheduler_file"
            client = _connect(_read_scheduler_file(p["scheduler_file"]), f"{source} {p['scheduler_file']}")
        info = client.scheduler_info()
        nthreads = sum(w.get("nthreads", 0) for w in info.get("workers", {}).values())
        announce(client, f"connected to a Dask cluster: {len(info.get('workers', {}))} worker(s), "
                         f"{nthreads} thread(s)")
        try:
            yield client
        finally:
            client.close()
        return
    import dask
    from distributed import Client, LocalCluster
    if p["mode"] == "slurm":
        jobqueue = _jobqueue()
        with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environment(p["threads"])}):
            cluster = jobqueue.SLURMCluster(**p["kwargs"])
        try:
            cluster.scale(jobs=p["jobs"])
            client = Client(cluster)
        except BaseException:
            cluster.close()
            raise
        announce(client, f"started a Dask scheduler and submitted {p['jobs']} SLURM job(s) of {p['processes']} "
                         f"worker(s); tasks start as the jobs do", local_scheduler=True)
    else:
        check_can_start(settings, scheduler, scheduler_file, workers)       # fails in ms, not after 60 s
        # Worker environment: see worker_environment (thread pools pinned, malloc left alone).
        try:
            with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environment(p["threads"])}):
                cluster = LocalCluster(n_workers=p["workers"], threads_per_worker=p["threads"], processes=True,
                                       memory_limit=p["memory_limit"], dashboard_address=":0")
        except Exception as err:  # noqa: BLE001 - distributed wraps every cause in RuntimeError
            cause = err.__cause__ or err
            raise ClusterError(f"could not start a local Dask cluster of {p['workers']} worker process(es): "
                               f"{type(cause).__name__}: {str(cause)[:300]}. {OFFLINE_HINT}") from None
        try:
            client = Client(cluster)
        except BaseException:
            cluster.close()
            raise
        announce(client, f"started a local Dask cluster: {p['workers']} worker process(es) x {p['threads']} "
                         "thread(s)", local_scheduler=True)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


class WorkerDied(CmbcubeError, RuntimeError):
    """Every worker that ran the task died (Dask's KilledWorker): often out of memory."""


def run_tasks(client, fn, args: tuple, items: list, label: str, on_done, retries: int = 1) -> None:
    """Run ``fn(*args, *item)`` for every item: in this process when ``client`` is None, else as
    Dask futures (one per item, a random key suffix so reruns never hit cached results).

    ``on_done(item, result, error)`` is called as each finishes; failures are reported through it,
    never raised, so every item that can finish does.  A worker that dies mid-task (killed,
    out of memory, node lost) costs nothing but time: the scheduler reruns its tasks elsewhere
    (``distributed.scheduler.allowed-failures`` times), and the task writes whole shards and its
    done-flag last, so a half-finished attempt leaves nothing that counts.
    """
    if client is None:
        for item in items:
            try:
                result = fn(*args, *item)
            except Exception as err:  # noqa: BLE001 - collected and reported by the caller
                on_done(item, None, err)
            else:
                on_done(item, result, None)
        return
    from distributed import as_completed
    futures = {client.submit(fn, *args, *item, pure=False, retries=retries,
                             key=f"{label}-{'-'.join(map(str, item))}-{os.urandom(4).hex()}"): item for item in items}
    for fut in as_completed(futures):
        try:
            result = fut.result()
        except Exception as err:  # noqa: BLE001
            if type(err).__name__ == "KilledWorker":
                err = WorkerDied(f"the worker processes running it died ({err}); out of memory? see the "
                                 "worker logs; rerun to retry")
            on_done(futures[fut], None, err)
        else:
            on_done(futures[fut], result, None)
