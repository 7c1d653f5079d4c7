"""Executors: run cells in this process, in a local process pool or on a Dask cluster.

Every executor yields (cell, row, None) for a cell that finished and (cell, None, failure) for one that raised,
as each completes (any kind of cell: `bench.cells.run` dispatches), a failing cell fails alone, and the caller writes every result as it arrives, so nothing
finished is lost when another cell raises or the run is interrupted. Every worker runs one torch thread, as
`run_cell` does, so all executors give bit-identical rows, and draws its chunks of batches in-process (no pool
inside a pool: bench.sampling.no_chunk_workers).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any, Iterator

import torch

from bench.cells import Cell, NoiseCell, TrainCell, run
from envs.spec import ConfigError, Int

EXECUTORS = ("inprocess", "processes", "dask")
AnyCell = Cell | TrainCell | NoiseCell  # a measurement, a training run, a noise-scale measurement
Outcome = tuple[AnyCell, "dict | None", "dict | None"]
_WORKERS = Int(1)


def check_executor(executor: str, workers: Any, scheduler: str | None) -> int:
    """The number of workers to use (default: every core), or ConfigError naming the flag that is wrong."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor '{executor}'; valid: {', '.join(EXECUTORS)}")
    if workers is not None:
        try:
            workers = _WORKERS(workers)
        except ValueError as err:
            raise ConfigError(f"--workers {workers}: expected {err}") from None
    if scheduler is not None and executor != "dask":
        raise ConfigError(f"--scheduler {scheduler}: applies only to --executor dask")
    return workers or os.cpu_count() or 1


def run_cells(cells: list[AnyCell], executor: str, workers: int, scheduler: str | None) -> Iterator[Outcome]:
    """The outcomes of `cells` as they complete (a checked `executor`, see `check_executor`)."""
    if executor == "inprocess" or not cells:
        return _run_inprocess(cells)
    if executor == "processes":
        return _run_processes(cells, min(workers, len(cells)))
    return _run_dask(cells, workers, scheduler)


def _init_worker() -> None:
    """A sweep's worker: one torch thread, and no chunk workers of its own (its cells already run in parallel)."""
    from bench.sampling import no_chunk_workers

    torch.set_num_threads(1)
    no_chunk_workers()


def failure_record(cell: AnyCell, err: BaseException) -> dict[str, Any]:
    """What the store keeps of a cell that raised: its identity and the error (one line, and the traceback)."""
    import traceback

    remote = getattr(err, "__cause__", None)  # a process pool attaches the worker's traceback as the cause
    trace = str(remote) if remote is not None and type(remote).__name__ == "_RemoteTraceback" else (
        "".join(traceback.format_exception(type(err), err, err.__traceback__)))
    text = " ".join(str(err).split())
    record = {"cell_id": cell.cell_id, "cell": asdict(cell), "problem": cell.problem, "variant": cell.variant,
              "batch_size": cell.batch_size, "repetition": getattr(cell, "repetition", None),
              "error": f"{type(err).__name__}: {text[:500]}", "traceback": trace}
    if not isinstance(cell, Cell):  # a training sweep's cell: its kind and, for a run, where on its axes
        record["kind"] = cell.kind
        record.update({key: getattr(cell, key) for key in ("optimizer", "lr", "seed_index") if hasattr(cell, key)})
    return record


def _run_inprocess(cells: list[AnyCell]) -> Iterator[Outcome]:
    for cell in cells:
        try:
            row = run(cell)
        except Exception as err:  # noqa: BLE001 - a cell fails alone; KeyboardInterrupt still stops the sweep
            yield cell, None, failure_record(cell, err)
        else:
            yield cell, row, None


def _run_processes(cells: list[AnyCell], workers: int) -> Iterator[Outcome]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: a forked child inherits the parent's torch/OpenMP thread state.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)
    try:
        futures = {pool.submit(run, cell): cell for cell in cells}
        for future in as_completed(futures):
            cell = futures[future]
            try:
                row = future.result()
            except Exception as err:  # noqa: BLE001 - incl. BrokenProcessPool when a worker died (e.g. OOM-killed)
                yield cell, None, failure_record(cell, err)
            else:
                yield cell, row, None
    finally:
        # Reached normally only once every future is done. Early (the caller raised or was interrupted), queued
        # cells are cancelled rather than computed and thrown away; running ones finish, their results unused
        # (each result already yielded was written by the caller as it came).
        pool.shutdown(wait=True, cancel_futures=True)


def _connect(scheduler: str):
    """A Dask client of the scheduler at `scheduler`, or ConfigError naming it (a short timeout: nothing
    listening must not hang the command for the default 30 s)."""
    from distributed import Client

    try:
        return Client(scheduler, timeout="5s")
    except Exception as err:  # noqa: BLE001 - OSError, TimeoutError, ValueError for a malformed address, ...
        raise ConfigError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler there "
                          f"({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None


def _run_dask(cells: list[AnyCell], workers: int, scheduler: str | None) -> Iterator[Outcome]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ConfigError("--executor dask needs the dask extra: pip install -e '.[dask]'") from None
    client = _connect(scheduler) if scheduler else None
    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                  dashboard_address=None)
    client = client or Client(cluster)
    try:
        client.run(_init_worker)
        futures = client.map(run, cells, pure=False)
        cell_of = {f.key: c for f, c in zip(futures, cells)}
        for future in as_completed(futures):
            cell = cell_of[future.key]
            try:
                row = future.result()
            except Exception as err:  # noqa: BLE001 - the cell's own exception, re-raised by dask
                yield cell, None, failure_record(cell, err)
            else:
                yield cell, row, None
            future.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
