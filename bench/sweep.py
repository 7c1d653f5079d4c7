"""Sweeps: a TOML config → validated frozen dataclasses → cells → an executor → the results store.

The pieces: `bench.config` parses the file, `bench.cells` expands it into cells and runs one, `bench.executors`
runs many, `bench.store` keeps their rows. This module composes them: `load_config` (parse, then expand once to
check every cell before any compute) and `run_sweep`, which also computes the sampled references the cells
share before dispatching them.

A config with a [train] table is a training sweep: the same store, executors and resumption, over training runs
and noise-scale cells (`bench.cells.expand_training`) instead of measurements; its `_sweep.json` also records
`kind = "train"` and `train_axes` (`bench.cells.train_axes`). Progress (cells done, failures, ETA) is a bar on a
terminal and a line every PROGRESS_SECONDS otherwise (`bench.progress`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench.cells import (Cell, check_cells, digest, expand, expand_training, option_columns, single_thread,
                         table_variants, theta_for, train_axes)
from bench.config import MEASUREMENT_ONLY, SweepConfig, read_config
from bench.executors import check_executor, run_cells
from bench.progress import progress_bar
from bench.reference import ReferenceConfig, reference_for
from bench.store import ResultsStore
from envs import make_problem
from envs.problem import Capability
from envs.spec import ConfigError
from estimators import resolve_estimator
from estimators.registry import Target


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep TOML file: its tables (`bench.config`), then every cell it expands to and the
    report's variants (`bench.cells.check_cells`); every problem is one ConfigError naming file and key."""
    config = read_config(path)
    check_cells(config, str(path))
    return config


def sweep_meta(config: SweepConfig, cells: list) -> dict[str, Any]:
    """What `_sweep.json` records: the resolved config, the planned distinct cell ids and each estimator table's
    variants; a training sweep also its kind and axes. The config carries only the keys that apply: a measurement
    sweep's record is what it was before training sweeps existed (no `train` key, at the top or in a table), so its
    folder's `_sweep.json` is not rewritten; a training sweep's has no `reps`, `repetitions` or `reference`; a table
    has its own `train` or `repetitions` (an estimator table) or `batch_sizes` (a problem table) only when it sets
    them."""
    resolved = asdict(config)
    for key in MEASUREMENT_ONLY if config.is_training else ("train",):
        del resolved[key]
    for tables, keys in (("estimators", ("train", "repetitions")), ("problems", ("batch_sizes",))):
        for table in resolved[tables]:
            for key in keys:
                if not table[key]:  # None, 0, (): the sweep's
                    del table[key]
    meta = {"config": resolved, "cells": len(cells), "cell_ids": [c.cell_id for c in cells],
            "table_variants": table_variants(config)}
    if config.is_training:
        meta.update({"kind": "train", "train_axes": train_axes(cells)})
    return meta


def prepare_references(cells: list[Cell], show_progress: bool = True) -> None:
    """Compute each sampled reference the cells need once, here, into the cache (with one torch thread, as the
    cells run), so that parallel workers read it instead of each computing it. Workers on other machines see
    it only through a shared cache folder ($PGVAR_CACHE_DIR); otherwise they compute and cache their own."""
    needed: dict[str, tuple[Cell, Any]] = {}
    exact: dict[tuple, bool] = {}
    for cell in cells:
        if not isinstance(cell, Cell):
            continue  # training runs and noise-scale cells use no sampled reference
        problem_key = (cell.env, cell.env_options)
        if problem_key not in exact:
            exact[problem_key] = make_problem(cell.env, dict(cell.env_options)).supports(Capability.EXACT_GRADIENT)
        if not exact[problem_key]:
            target = resolve_estimator(cell.estimator, dict(cell.estimator_options)).target
            for wanted in dict.fromkeys((target, Target())):  # its target's and ∇J's (gradient_cosine)
                needed.setdefault(digest([cell.env, cell.env_options, cell.theta, repr(wanted), cell.reference]),
                                  (cell, wanted))
    with single_thread():
        for cell, target in needed.values():
            try:
                problem = make_problem(cell.env, dict(cell.env_options))
                reference_for(problem, theta_for(problem, cell.theta), target, ReferenceConfig(**dict(cell.reference)),
                              show_progress)
            except Exception:  # noqa: BLE001 - its cells raise the same error when they run, and fail alone
                continue


@dataclass(frozen=True)
class SweepSummary:
    cells: int  # distinct planned cells
    ran: int  # attempted in this run (failed ones included)
    reused: int  # finished before and read back whole
    skipped: list[str]  # combinations that do not apply
    deleted: int = 0  # files `fresh` deleted (only files the store wrote)
    corrupt: list[str] = field(default_factory=list)  # "<cell file>: why" of finished cells that did not read back
    failed: list[dict] = field(default_factory=list)  # failure records of the cells that raised in this run
    folder: str = ""  # the sweep's results folder


def run_sweep(config: SweepConfig, results_root: str | Path = "results", executor: str = "processes",
              workers: int | None = None, scheduler: str | None = None, fresh: bool = False,
              log: Callable[[str], None] | None = None, show_progress: bool = True) -> SweepSummary:
    """Run every unfinished cell of `config`, writing each row as it finishes; `log` receives one-line notes
    (corrupt cells about to be recomputed) before the compute starts; `show_progress` shows the cells done and
    failed (`bench.progress.progress_bar`), and the sampled references' batches computed before them.

    The results folder is locked for the whole run (a second sweep on it is a ConfigError). A finished cell
    whose file does not read back whole is deleted and recomputed. A cell that raises is recorded as
    `_failed-<cell_id>.json` and the others carry on; a rerun retries it and removes the record on success.
    Failures are returned in the summary (`failed`), not raised: the caller decides the exit status."""
    workers = check_executor(executor, workers, scheduler)
    cells, skipped = expand_training(config) if config.is_training else expand(config)
    store = ResultsStore.for_sweep(results_root, config.name)
    with store:  # the lock comes before any clean-up or deletion
        deleted = store.prepare(sweep_meta(config, cells), fresh=fresh)
        planned = {c.cell_id for c in cells}
        broken = store.verify(store.finished() & planned)
        for cell_id in broken:
            store.remove_cell(cell_id)  # a corrupt cell must never be reused; it is recomputed below
        if broken and log is not None:
            named = "; ".join(f"{store.cell_path(i).name} ({why})" for i, why in list(broken.items())[:3])
            log(f"{len(broken)} corrupt cell files in {store.root} are recomputed: {named}"
                + (f" and {len(broken) - 3} more" if len(broken) > 3 else ""))
        done = store.finished()
        todo = [c for c in cells if c.cell_id not in done]
        prepare_references(todo, show_progress)
        stream = run_cells(todo, executor, workers, scheduler)
        failed = []
        with progress_bar(len(todo), f"sweep {config.name}: cells", show_progress) as bar:
            for cell, row, failure in stream:
                try:
                    if failure is None:
                        store.write(cell.cell_id, row, option_columns() if isinstance(cell, Cell) else None)
                        store.clear_failure(cell.cell_id)
                    else:
                        store.record_failure(cell.cell_id, failure)
                        failed.append(failure)
                except OSError as err:  # e.g. the disk is full: every cell written so far is whole and kept
                    raise ConfigError(f"{store.root}: cannot write {store.cell_path(cell.cell_id).name} "
                                      f"({err.strerror or err}); the finished cells are kept, rerun to resume") from None
                if failed:
                    bar.set_postfix_str(f"{len(failed)} failed")
                bar.update(1)
    return SweepSummary(len(cells), len(todo), len(cells) - len(todo), skipped, deleted,
                        [f"{store.cell_path(i).name}: {why}" for i, why in broken.items()], failed, str(store.root))
