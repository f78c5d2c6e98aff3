"""Dask clients from the command line or a recipe's ``cluster:`` section."""
from __future__ import annotations

import contextlib
import logging

log = logging.getLogger("cmbcube")


def quiet_distributed() -> None:
    """Keep Dask's own INFO chatter (and shutdown tracebacks) out of the way unless -vv."""
    if logging.getLogger("cmbcube").getEffectiveLevel() <= logging.DEBUG:
        return
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("distributed", "tornado")):
            logging.getLogger(name).setLevel(logging.CRITICAL)


@contextlib.contextmanager
def client_for(settings: dict, scheduler: str | None = None, scheduler_file: str | None = None,
               workers: int | None = None):
    """Yield a ``distributed.Client`` (or None for the in-process synchronous mode).

    Precedence: --scheduler / --scheduler-file, then the recipe's cluster section,
    then a LocalCluster with ``workers`` processes of one thread each.
    """
    kind = settings.get("kind", "local")
    address = scheduler or (settings.get("address") if kind == "address" else None)
    sfile = scheduler_file or settings.get("scheduler_file")
    if scheduler == "synchronous" or (kind == "synchronous" and not scheduler and not scheduler_file):
        yield None
        return
    from distributed import Client, LocalCluster
    quiet_distributed()
    if address or sfile:
        client = Client(address) if address else Client(scheduler_file=sfile)
        log.info("connected to Dask scheduler %s; dashboard: %s", client.scheduler.address, client.dashboard_link)
        try:
            yield client
        finally:
            client.close()
        return
    if kind == "slurm":
        raise NotImplementedError("cluster.kind 'slurm' is not available yet; start workers with "
                                  "dask-jobqueue or srun and pass --scheduler-file")
    import dask
    n = workers or settings.get("workers", 2)
    threads = settings.get("threads_per_worker", 1)
    # Worker environment (measured, benchmarks/simulate.py): Dask's default MALLOC_TRIM_THRESHOLD_
    # made every sim ~1.6x slower (large numpy buffers page-faulted anew), and numba's kernels
    # (pysm3) ignored OMP_NUM_THREADS, so two workers fought over the cores.  Pin every thread
    # pool to the worker's threads and leave malloc's defaults alone.
    environ = {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                               "NUMBA_NUM_THREADS")}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = LocalCluster(n_workers=n, threads_per_worker=threads, processes=True,
                               memory_limit=settings.get("memory_limit", "auto"), dashboard_address=":0")
    client = Client(cluster)
    print(f"started a local Dask cluster: {n} worker process(es); dashboard: {client.dashboard_link}")
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def run_tasks(client, fn, args: tuple, items: list, label: str, on_done, retries: int = 1) -> None:
    """Run ``fn(*args, *item)`` for every item: in this process when ``client`` is None, else as
    Dask futures (one per item, a random key suffix so reruns never hit cached results).

    ``on_done(item, result, error)`` is called as each finishes; failures are reported through it,
    never raised, so every item that can finish does.
    """
    import os
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
            on_done(futures[fut], None, err)
        else:
            on_done(futures[fut], result, None)


def collector(report, bar):
    """An ``on_done`` for :func:`run_tasks` filling ``report.written`` / ``report.failed`` and a progress bar."""
    def on_done(item, _result, error):
        if error is None:
            report.written.append(item)
        else:
            report.failed.append((*item, f"{type(error).__name__}: {error}"))
        bar.update(1)
    return on_done
