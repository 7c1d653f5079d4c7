"""Sweeps: a TOML config → validated frozen dataclasses → cells → an executor → the results store.

A cell is one measurement (problem, θ, estimator variant, batch size, repetition) and `run_cell`
is a pure, picklable function of it, so the same cell gives the same row in-process, in a local
process pool or on a Dask cluster, in any order. The cell seed is derived from the root seed and
the cell's (problem, θ, batch size, repetition) with `numpy.random.SeedSequence`: every estimator
variant of a (problem, N, repetition) sees the same trajectories (common random numbers), which
makes variance ratios between estimators much tighter than independent draws would.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import platform
import subprocess
import tomllib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from bench.harness import measure, progress_bar
from bench.metrics import METRICS_WITH_CI
from bench.reference import ReferenceConfig, check_reference, reference_for
from bench.store import ResultsStore, check_name
from envs import make_problem
from envs.problem import problem_spec
from envs.spec import ConfigError, resolve_options
from estimators import ESTIMATORS, resolve_estimator



# ----------------------------------------------------------------------------------------- config

@dataclass(frozen=True)
class ProblemConfig:
    """One problem of a sweep."""

    env: str  # registered problem name
    options: tuple[tuple[str, Any], ...] = ()  # fixed options, resolved
    sweep: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # options crossed as axes
    theta: str = "default"  # "default" or "random:<scale>:<seed>" (seeded N(0, scale²) around the default)
    label: str = ""  # how the report names it; default: env and its non-default options


@dataclass(frozen=True)
class EstimatorConfig:
    """One estimator of a sweep; every combination of its `sweep` axes is a variant."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()
    sweep: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    problems: tuple[str, ...] = ()  # labels (env names of unlabelled problems) it runs on; empty: every problem
    batch_sizes: tuple[int, ...] = ()  # empty: the sweep's


@dataclass(frozen=True)
class ReportConfig:
    """What `pgvar report` compares."""

    reference_variant: str = "reinforce"  # scores are −log(variance / this variant's variance)
    pairs: tuple[tuple[str, str], ...] = ()  # (X, Y): probability that X improves on Y
    bootstrap_reps: int = 2000
    seed: int = 0


@dataclass(frozen=True)
class SweepConfig:
    """A whole sweep: problems × estimator variants × batch sizes × repetitions."""

    name: str
    problems: tuple[ProblemConfig, ...]
    estimators: tuple[EstimatorConfig, ...]
    batch_sizes: tuple[int, ...]
    reps: int  # M, independent batches per measurement
    repetitions: int  # independent measurements per cell (rliable's runs)
    seed: int  # root seed
    report: ReportConfig = field(default_factory=ReportConfig)
    reference: tuple[tuple[str, Any], ...] = ()  # ReferenceConfig fields (samples, batch_size, seed) if not default


MAX_BOOTSTRAP_REPS = 100_000  # the report's rliable resamples: more only costs memory and time
_SWEEP_KEYS = {"name", "problems", "estimators", "batch_sizes", "reps", "repetitions", "seed", "report", "reference"}
_PROBLEM_KEYS = {"env", "options", "sweep", "theta", "label"}
_ESTIMATOR_KEYS = {"name", "options", "sweep", "problems", "batch_sizes"}
_REPORT_KEYS = {"reference_variant", "pairs", "bootstrap_reps", "seed"}
_REFERENCE_KEYS = {"samples", "batch_size", "seed"}


class _Where:
    """Builds errors that name the file and the key."""

    def __init__(self, source: str):
        self.source = source

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {message}")

    def keys(self, table: Mapping, allowed: set[str], where: str) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.error(f"{where}{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")

    def int_at_least(self, table: Mapping, key: str, low: int, default: Any = None, high: int | None = None) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            bound = f"≥ {low}" if high is None else f"in [{low}, {high}]"
            raise self.error(key, f"expected an integer {bound}, got {value!r}")
        return value


def _check_options(where: _Where, key: str, owner: str, specs, fixed: Mapping, sweep: Mapping):
    """Parse fixed options and every axis value with the registry's parsers; errors name the key."""
    if not isinstance(fixed, Mapping) or not isinstance(sweep, Mapping):
        raise where.error(key, "options and sweep must be tables")
    for axis, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise where.error(f"{key}.sweep.{axis}", "expected a non-empty list of values")
        if axis in fixed:
            raise where.error(f"{key}.sweep.{axis}", "is also a fixed option")
    try:
        resolved = resolve_options(owner, specs, fixed)
        axes = tuple((axis, tuple(resolve_options(owner, specs, {axis: v})[axis] for v in values))
                     for axis, values in sweep.items())
    except ConfigError as err:
        raise where.error(key, str(err)) from None
    return tuple((k, resolved[k]) for k in fixed), axes


def _registered_entry(where: _Where, key: str, table: Any, allowed: set[str], name_field: str, kind: str, lookup):
    """One [[problems]] or [[estimators]] table: known keys, a registered name (`lookup` raises ConfigError
    listing the valid ones), parsed options and axes."""
    if not isinstance(table, Mapping):
        raise where.error(key, "expected a table")
    where.keys(table, allowed, key + ".")
    name = table.get(name_field)
    if not isinstance(name, str):
        raise where.error(f"{key}.{name_field}", f"expected the name of a registered {kind}, got {name!r}")
    try:
        spec = lookup(name)
    except ConfigError as err:
        raise where.error(f"{key}.{name_field}", str(err)) from None
    options, axes = _check_options(where, key, f"{kind} {name}", spec.options, table.get("options", {}),
                                   table.get("sweep", {}))
    return name, options, axes


def _batch_sizes(where: _Where, key: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or any(isinstance(n, bool) or not isinstance(n, int) or n < 1
                                                       for n in value):
        raise where.error(key, f"expected a non-empty list of integers ≥ 1, got {value!r}")
    return tuple(value)


def parse_theta_choice(where: _Where, key: str, text: Any) -> str:
    if text == "default":
        return text
    parts = str(text).split(":")
    try:  # a finite scale (nan and inf parse as floats) and a seed numpy accepts
        if (not isinstance(text, str) or parts[0] != "random" or len(parts) != 3
                or not (math.isfinite(float(parts[1])) and float(parts[1]) >= 0) or not 0 <= int(parts[2]) < 2 ** 128):
            raise ValueError
    except ValueError:
        raise where.error(key, f"expected 'default' or 'random:<finite scale ≥ 0>:<integer seed ≥ 0>', "
                               f"got {text!r}") from None
    return text


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep TOML file; every problem is one ConfigError naming file and key."""
    path = Path(path)
    where = _Where(str(path))
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such sweep config") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; expected a sweep TOML file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); a sweep config is a TOML file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it ({err.strerror or err})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({' '.join(str(err).split())})") from None
    return parse_config(raw, where, default_name=path.stem)


def parse_config(raw: Mapping[str, Any], where: _Where, default_name: str) -> SweepConfig:
    where.keys(raw, _SWEEP_KEYS, "")
    name = raw.get("name", default_name)
    try:  # the name becomes results/<name>/: a plain identifier, so it can never be '..', '.' or a path
        check_name(name)
    except ValueError as err:
        raise where.error("name", str(err)) from None

    problems = []
    for i, table in enumerate(raw.get("problems") or []):
        key = f"problems[{i}]"
        env, options, axes = _registered_entry(where, key, table, _PROBLEM_KEYS, "env", "env", problem_spec)
        theta = parse_theta_choice(where, f"{key}.theta", table.get("theta", "default"))
        label = table.get("label", "")
        if not isinstance(label, str):
            raise where.error(f"{key}.label", "expected a string")
        problems.append(ProblemConfig(env, options, axes, theta, label))
    if not problems:
        raise where.error("problems", "expected at least one [[problems]] table")

    batch_sizes = _batch_sizes(where, "batch_sizes", raw.get("batch_sizes"))
    problem_names = {p.label or p.env for p in problems}  # a labelled problem is named by its label only
    estimators = []
    for i, table in enumerate(raw.get("estimators") or []):
        key = f"estimators[{i}]"
        estimator, options, axes = _registered_entry(where, key, table, _ESTIMATOR_KEYS, "name", "estimator",
                                                         ESTIMATORS.get)
        only = table.get("problems", [])
        if not isinstance(only, list) or any(p not in problem_names for p in only):
            raise where.error(f"{key}.problems", f"expected a list of problem labels (envs if unlabelled) of this sweep "
                                                 f"({', '.join(sorted(problem_names))}), got {only!r}")
        own_sizes = _batch_sizes(where, f"{key}.batch_sizes", table["batch_sizes"]) if "batch_sizes" in table else ()
        estimators.append(EstimatorConfig(estimator, options, axes, tuple(only), own_sizes))
    if not estimators:
        raise where.error("estimators", "expected at least one [[estimators]] table")

    report_raw = raw.get("report", {})
    if not isinstance(report_raw, Mapping):
        raise where.error("report", "expected a table")
    where.keys(report_raw, _REPORT_KEYS, "report.")
    pairs = report_raw.get("pairs", [])
    if not isinstance(pairs, list) or any(not isinstance(p, list) or len(p) != 2 or not all(isinstance(x, str) for x in p) for p in pairs):
        raise where.error("report.pairs", "expected a list of [variant, variant] pairs")
    reference = report_raw.get("reference_variant", "reinforce")
    if not isinstance(reference, str):
        raise where.error("report.reference_variant", "expected a variant label")
    report = ReportConfig(
        reference_variant=reference,
        pairs=tuple(tuple(p) for p in pairs),
        bootstrap_reps=where.int_at_least(report_raw, "bootstrap_reps", 100, 2000, high=MAX_BOOTSTRAP_REPS),
        seed=where.int_at_least(report_raw, "seed", 0, 0, high=2 ** 32 - 1),  # numpy's global seed is 32-bit
    )
    config = SweepConfig(
        name=name, problems=tuple(problems), estimators=tuple(estimators), batch_sizes=tuple(batch_sizes),
        reps=where.int_at_least(raw, "reps", 2), repetitions=where.int_at_least(raw, "repetitions", 1, 1),
        seed=where.int_at_least(raw, "seed", 0, 0), report=report, reference=_reference_settings(where, raw),
    )
    try:  # expanding builds every problem and checks every cell (labels, θ, sizes) before any compute
        variants = {cell.variant for cell in expand(config)[0]}
    except ConfigError as err:
        raise ConfigError(f"{where.source}: {err}") from None
    for label in [reference, *(x for p in pairs for x in p)]:
        if label not in variants:
            raise where.error("report", f"variant {label!r} is not in the sweep; variants: {', '.join(sorted(variants))}")
    return config


def _reference_settings(where: _Where, raw: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The [reference] table (sampled references of problems without an exact gradient), validated."""
    table = raw.get("reference", {})
    if not isinstance(table, Mapping):
        raise where.error("reference", "expected a table")
    where.keys(table, _REFERENCE_KEYS, "reference.")
    try:
        ReferenceConfig(**table)
    except (ConfigError, TypeError) as err:
        raise where.error("reference", str(err)) from None
    return tuple(sorted(table.items()))


# ------------------------------------------------------------------------------------------ cells

@dataclass(frozen=True)
class Cell:
    """One measurement of a sweep; `run_cell(cell)` is a pure function of it."""

    sweep: str
    problem: str  # label
    env: str
    env_options: tuple[tuple[str, Any], ...]
    theta: str
    estimator: str
    variant: str  # label: name and non-default options
    estimator_options: tuple[tuple[str, Any], ...]
    batch_size: int
    reps: int
    repetition: int
    seed: int  # derived; shared by every variant of (problem, θ, N, repetition)
    reference: tuple[tuple[str, Any], ...] = ()  # ReferenceConfig fields, when not the defaults

    @property
    def cell_id(self) -> str:
        return _digest(asdict(self))[:20]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=list).encode()).hexdigest()


def _label(name: str, options: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    changed = [f"{k}={_show(v)}" for k, v in options.items() if v != defaults[k]]
    return " ".join([name, *changed])


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _combinations(fixed, axes) -> Iterator[dict[str, Any]]:
    names = [a for a, _ in axes]
    for values in itertools.product(*(v for _, v in axes)):
        yield {**dict(fixed), **dict(zip(names, values))}


def cell_seed(root: int, *identity: Any) -> int:
    """A 63-bit seed for `identity` under `root`, independent of order and scheduling."""
    words = [int(_digest(list(identity))[i:i + 8], 16) for i in range(0, 32, 8)]
    return int(np.random.SeedSequence(root, spawn_key=words).generate_state(1, dtype=np.uint64)[0] >> 1)


MAX_CELLS = 1_000_000  # more is a typo (repetitions = 10**12), not a plan: refused before a cell is built


def expand(config: SweepConfig) -> tuple[list[Cell], list[str]]:
    """All distinct cells of the sweep, and a description of each combination that does not apply
    (e.g. rloo at N = 1), which is skipped and reported, never silently dropped.

    Duplicated estimator tables, axis values or batch sizes give the same cell twice: each cell id is
    kept once, in first-occurrence order, so the planned count is the distinct count. Expanding is
    also the last validation before any compute (ConfigError, one line, naming the problem): two
    different problems (env, options or θ) under one label, a θ that is not finite, a (problem, N, M)
    that would not fit in memory (bench.harness.check_memory), more than MAX_CELLS cells."""
    from bench import harness

    check_memory = getattr(harness, "check_memory", None)  # the harness's resource guard, where it exists
    cells: dict[str, Cell] = {}
    skipped: dict[str, None] = {}  # ordered, without repeats
    owners: dict[str, tuple[str, tuple]] = {}  # label → (the first problems[i] that has it, problem identity)
    sized: set[tuple] = set()  # (problem identity, N, group size) checked against memory
    for index, pconf in enumerate(config.problems):
        key = f"problems[{index}]"
        pspec = problem_spec(pconf.env)
        for env_options in _combinations(pconf.options, pconf.sweep):
            resolved_env = resolve_options(f"env {pconf.env}", pspec.options, env_options)
            label = pconf.label or _label(pconf.env, resolved_env, {k: o.default for k, o in pspec.options.items()})
            if pconf.label and pconf.sweep:
                label = _label(pconf.label, {k: resolved_env[k] for k, _ in pconf.sweep}, {k: None for k, _ in pconf.sweep})
            identity = (pconf.env, tuple(sorted(resolved_env.items())), pconf.theta)
            owner, owned = owners.setdefault(label, (key, identity))
            if owned != identity:  # the report tells problems apart by label: two under one would be mixed
                raise ConfigError(f"{key}: label {label!r} also names a different problem of {owner} (env, options "
                                  "or θ differ); give each problem a distinct `label`")
            try:
                problem = make_problem(pconf.env, env_options)
                problem.check_theta(theta_for(problem, pconf.theta))
            except ConfigError as err:
                raise ConfigError(f"{key} ({label}): {err}") from None
            for econf in config.estimators:
                if econf.problems and (pconf.label or pconf.env) not in econf.problems:
                    continue  # not asked for: not a skip
                for est_options in _combinations(econf.options, econf.sweep):
                    spec, resolved = resolve_estimator(econf.name, est_options)
                    variant = _label(econf.name, resolved, {k: o.default for k, o in spec.options.items()})
                    for batch_size in dict.fromkeys(econf.batch_sizes or config.batch_sizes):
                        try:
                            spec.check(resolved, problem, batch_size)
                            check_reference(problem, spec.target_of(resolved))
                        except ConfigError as err:
                            skipped.setdefault(f"{label} / {variant} / N={batch_size}: {err}")
                            continue
                        group_size = spec.group_size(resolved)
                        if check_memory is not None and (identity[:2], batch_size, group_size) not in sized:
                            sized.add((identity[:2], batch_size, group_size))
                            try:
                                check_memory(problem, batch_size, config.reps, group_size=group_size)
                            except ConfigError as err:  # its knobs are named as measure's flags: name the keys
                                text = str(err).replace("--batch-size", "batch_sizes").replace("--reps", "reps")
                                raise ConfigError(f"{key} ({label}), N={batch_size}, reps={config.reps}: {text}") from None
                        if len(cells) + config.repetitions > MAX_CELLS:
                            raise ConfigError(f"the sweep expands to more than {MAX_CELLS} cells; lower repetitions "
                                              "or the axes")
                        for repetition in range(config.repetitions):
                            seed = cell_seed(config.seed, pconf.env, sorted(resolved_env.items()), pconf.theta,
                                             batch_size, repetition)
                            cell = Cell(
                                config.name, label, pconf.env, tuple(sorted(resolved_env.items())), pconf.theta,
                                econf.name, variant, tuple(sorted(resolved.items())), batch_size, config.reps,
                                repetition, seed, config.reference,
                            )
                            cells.setdefault(cell.cell_id, cell)
    return list(cells.values()), list(skipped)


def theta_for(problem, choice: str) -> torch.Tensor:
    """θ of a cell: the problem's default, or seeded N(0, scale²) noise around it."""
    if choice == "default":
        return problem.default_theta()
    _, scale, seed = choice.split(":")
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow gives ±inf, refused by check_theta
        noise = np.random.default_rng(int(seed)).normal(scale=float(scale), size=problem.num_params)
    return problem.default_theta() + torch.as_tensor(noise)


@contextmanager
def _single_thread() -> Iterator[None]:
    """Numbers must not depend on the executor: every cell runs with one torch thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_cell(cell: Cell) -> dict[str, Any]:
    """Run one cell → one tidy row (config, metrics with CI bounds, cost)."""
    with _single_thread():
        problem = make_problem(cell.env, dict(cell.env_options))
        result = measure(problem, cell.estimator, cell.batch_size, cell.reps, cell.seed,
                         theta_for(problem, cell.theta), dict(cell.estimator_options), show_progress=False,
                         reference_config=ReferenceConfig(**dict(cell.reference)))
    record = result.to_dict()
    row: dict[str, Any] = {
        "cell_id": cell.cell_id, "sweep": cell.sweep, "problem": cell.problem, "env": cell.env,
        "env_options": json.dumps(dict(cell.env_options), sort_keys=True), "theta": cell.theta,
        "estimator": cell.estimator, "variant": cell.variant,
        "estimator_options": json.dumps(dict(cell.estimator_options), sort_keys=True),
        "estimator_info": json.dumps(record["estimator_info"], sort_keys=True),
        "batch_size": cell.batch_size, "reps": cell.reps, "repetition": cell.repetition, "seed": cell.seed,
    }
    for key in ("num_params", "horizon", "reference_kind", "reference_samples", "target", "declared_unbiased",
                "reps_used", "nonfinite", "heavy_tailed", "degenerate", "trustworthy", "env_steps"):
        row[key] = record[key]
    # Every float column stays float64 in every file (NaN, never null), so the dataset has one schema.
    for key in ("gamma", "objective", "objective_se", "reference_norm", "bias_resolution", "bias_pvalue", "bias_dof",
                "tail_kurtosis", "nonfinite_fraction", "seconds", "seconds_per_estimate", "env_steps_per_estimate"):
        row[key] = _float(record[key])
    for name in METRICS_WITH_CI:
        row[name] = _float(record[name])
        low, high = record[f"{name}_ci"]
        row[f"{name}_lo"], row[f"{name}_hi"] = _float(low), _float(high)
    row.update(provenance())
    return row


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


_PROVENANCE: dict[str, str] = {}


def provenance() -> dict[str, str]:
    """Library versions and the git commit of the code that produced a row."""
    if not _PROVENANCE:
        from importlib.metadata import version

        import gymnasium
        import pandas

        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                    cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
        except (OSError, subprocess.SubprocessError):
            commit = "unknown"
        _PROVENANCE.update({
            "pgvar_version": version("pgvar"), "python_version": platform.python_version(),
            "torch_version": torch.__version__, "numpy_version": np.__version__,
            "gymnasium_version": gymnasium.__version__, "pandas_version": pandas.__version__,
            "git_commit": commit,
        })
    return dict(_PROVENANCE)


# -------------------------------------------------------------------------------------- executors

EXECUTORS = ("inprocess", "processes", "dask")


def _init_worker() -> None:
    torch.set_num_threads(1)


# Every executor yields (cell, row, None) for a cell that finished and (cell, None, failure) for one that
# raised, as each completes: a failing cell fails alone, and the caller writes every result as it arrives, so
# nothing finished is lost when another cell raises or the run is interrupted.
Outcome = tuple[Cell, "dict | None", "dict | None"]


def failure_record(cell: Cell, err: BaseException) -> dict[str, Any]:
    """What the store keeps of a cell that raised: its identity and the error (one line, and the traceback)."""
    import traceback

    remote = getattr(err, "__cause__", None)  # a process pool attaches the worker's traceback as the cause
    trace = str(remote) if remote is not None and type(remote).__name__ == "_RemoteTraceback" else (
        "".join(traceback.format_exception(type(err), err, err.__traceback__)))
    text = " ".join(str(err).split())
    return {"cell_id": cell.cell_id, "cell": asdict(cell), "problem": cell.problem, "variant": cell.variant,
            "batch_size": cell.batch_size, "repetition": cell.repetition,
            "error": f"{type(err).__name__}: {text[:500]}", "traceback": trace}


def _run_inprocess(cells: list[Cell]) -> Iterator[Outcome]:
    for cell in cells:
        try:
            row = run_cell(cell)
        except Exception as err:  # noqa: BLE001 - a cell fails alone; KeyboardInterrupt still stops the sweep
            yield cell, None, failure_record(cell, err)
        else:
            yield cell, row, None


def _run_processes(cells: list[Cell], workers: int) -> Iterator[Outcome]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: a forked child inherits the parent's torch/OpenMP thread state.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)
    try:
        futures = {pool.submit(run_cell, cell): cell for cell in cells}
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


def _run_dask(cells: list[Cell], workers: int, scheduler: str | None) -> Iterator[Outcome]:
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
        futures = client.map(run_cell, cells, pure=False)
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


def prepare_references(cells: list[Cell]) -> None:
    """Compute each sampled reference the cells need once, here, into the cache (with one torch thread, as the
    cells run), so that parallel workers read it instead of each computing it. Workers on other machines see
    it only through a shared cache folder ($PGVAR_CACHE_DIR); otherwise they compute and cache their own."""
    needed: dict[str, tuple[Cell, Any]] = {}
    exact: dict[tuple, bool] = {}
    for cell in cells:
        problem_key = (cell.env, cell.env_options)
        if problem_key not in exact:
            exact[problem_key] = make_problem(cell.env, dict(cell.env_options)).has_exact_gradient
        if not exact[problem_key]:
            spec, options = resolve_estimator(cell.estimator, dict(cell.estimator_options))
            target = spec.target_of(options)
            needed.setdefault(_digest([cell.env, cell.env_options, cell.theta, repr(target), cell.reference]),
                              (cell, target))
    with _single_thread():
        for cell, target in needed.values():
            try:
                problem = make_problem(cell.env, dict(cell.env_options))
                reference_for(problem, theta_for(problem, cell.theta), target, ReferenceConfig(**dict(cell.reference)))
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
              log: Callable[[str], None] | None = None) -> SweepSummary:
    """Run every unfinished cell of `config`, writing each row as it finishes; `log` receives one-line notes
    (corrupt cells about to be recomputed) before the compute starts.

    The results folder is locked for the whole run (a second sweep on it is a ConfigError). A finished cell
    whose file does not read back whole is deleted and recomputed. A cell that raises is recorded as
    `_failed-<cell_id>.json` and the others carry on; a rerun retries it and removes the record on success.
    Failures are returned in the summary (`failed`), not raised: the caller decides the exit status."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor '{executor}'; valid: {', '.join(EXECUTORS)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"--workers {workers}: expected an integer ≥ 1")
    workers = workers or os.cpu_count() or 1
    if scheduler is not None and executor != "dask":
        raise ConfigError(f"--scheduler {scheduler}: applies only to --executor dask")
    cells, skipped = expand(config)
    store = ResultsStore.for_sweep(results_root, config.name)
    with store:  # the lock comes before any clean-up or deletion
        deleted = store.prepare({"config": asdict(config), "cells": len(cells), "cell_ids": [c.cell_id for c in cells]},
                                fresh=fresh)
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
        prepare_references(todo)
        if executor == "inprocess" or not todo:
            stream = _run_inprocess(todo)
        elif executor == "processes":
            stream = _run_processes(todo, min(workers, len(todo)))
        else:
            stream = _run_dask(todo, workers, scheduler)
        failed = []
        with progress_bar(len(todo), f"sweep {config.name}") as bar:
            for cell, row, failure in stream:
                try:
                    if failure is None:
                        store.write(cell.cell_id, row)
                        store.clear_failure(cell.cell_id)
                    else:
                        store.record_failure(cell.cell_id, failure)
                        failed.append(failure)
                except OSError as err:  # e.g. the disk is full: every cell written so far is whole and kept
                    raise ConfigError(f"{store.root}: cannot write {store.cell_path(cell.cell_id).name} "
                                      f"({err.strerror or err}); the finished cells are kept, rerun to resume") from None
                bar.update(1)
    return SweepSummary(len(cells), len(todo), len(cells) - len(todo), skipped, deleted,
                        [f"{store.cell_path(i).name}: {why}" for i, why in broken.items()], failed, str(store.root))
