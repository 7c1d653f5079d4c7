"""Cells: a sweep config expanded into measurements, and `run_cell`, which turns one into a row.

A cell is one measurement (problem, θ, estimator variant, batch size, repetition) and `run_cell` is a pure,
picklable function of it, so the same cell gives the same row in-process, in a local process pool or on a
Dask cluster, in any order. The cell seed is derived from the root seed and the cell's (problem, θ, batch
size, repetition) with `numpy.random.SeedSequence`: every estimator variant of a (problem, N, repetition)
sees the same trajectories (common random numbers), which makes variance ratios between estimators much
tighter than independent draws would. A cell id hashes the Cell's fields: finished cells are reused by id,
so the fields, their order and their values are part of the results format.

A training sweep (a [train] table) expands instead into `TrainCell`s, one training run each (problem, θ₀,
variant, optimizer, learning rate, N, budget, seed index), and, with `noise_reps > 0`, one `NoiseCell` per
(problem, variant, N): the gradient noise scale at θ₀ (`bench.noise_scale`). `run(cell)` runs any kind of cell.
A run's seed depends on (problem, θ₀, seed index) only, so every estimator, learning rate, optimizer and batch
size of a (problem, seed index) draws its k-th batch from the same stream (bench.training). Their ids hash
`{"kind": ..., **fields}`, so no training cell can share an id with a measurement cell.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Mapping

import numpy as np
import torch

from bench.config import EstimatorTable, SweepConfig, TrainTable
from bench.harness import check_memory, measure
from bench.metrics import METRICS_WITH_CI
from bench.reference import ReferenceConfig, check_reference
from bench.training import TrainingRun, TrainSettings, train
from envs import make_problem
from envs.problem import Capability, Problem, problem_config_class
from envs.spec import ConfigError, resolve_options
from envs.threads import single_thread
from estimators import ESTIMATORS, Estimator, resolve_estimator

if TYPE_CHECKING:
    from bench.noise_scale import PathPoint


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
        return digest(asdict(self))[:20]


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=list).encode()).hexdigest()


def cell_seed(root: int, *identity: Any) -> int:
    """A 63-bit seed for `identity` under `root`, independent of order and scheduling."""
    words = [int(digest(list(identity))[i:i + 8], 16) for i in range(0, 32, 8)]
    return int(np.random.SeedSequence(root, spawn_key=words).generate_state(1, dtype=np.uint64)[0] >> 1)


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


# ------------------------------------------------------------------------------------- expansion

MAX_CELLS = 1_000_000  # more is a typo (repetitions = 10**12), not a plan: refused before a cell is built


@dataclass(frozen=True)
class _Problem:
    """One problem of the expanded sweep: a [[problems]] table at one combination of its axes."""

    key: str  # "problems[i]", for errors
    name: str  # how estimator tables' `problems` name it: its label, else its env
    label: str
    env: str
    options: tuple[tuple[str, Any], ...]  # resolved, sorted
    theta: str
    problem: Problem
    batch_sizes: tuple[int, ...]  # its [[problems]] table's own N range; empty: the sweep's


@dataclass(frozen=True)
class _Measurement:
    """A (problem, variant, N) the sweep asks for, before the checks that it applies and fits."""

    problem: _Problem
    estimator: Estimator | ConfigError  # the variant's config, or why its options do not go together
    variant: str
    batch_size: int
    train: TrainTable | None = None  # the estimator table's own [train] settings, if it has them
    repetitions: int = 1  # independently seeded measurements of it: the table's own count, else the sweep's


def _problems(config: SweepConfig) -> Iterator[_Problem]:
    """Every problem, built and its θ checked; two different problems under one label are refused (the
    report tells problems apart by label: they would be mixed)."""
    owners: dict[str, tuple[str, tuple]] = {}  # label → (the first problems[i] that has it, problem identity)
    for index, pconf in enumerate(config.problems):
        key = f"problems[{index}]"
        config_class = problem_config_class(pconf.env)
        for env_options in _combinations(pconf.options, pconf.sweep):
            try:
                problem_config = config_class.parse(env_options)
            except ConfigError as err:
                raise ConfigError(f"{key}: {err}") from None
            resolved = problem_config.as_dict()
            label = pconf.label or _label(pconf.env, resolved, config_class.defaults())
            if pconf.label and pconf.sweep:
                label = _label(pconf.label, {k: resolved[k] for k, _ in pconf.sweep}, {k: None for k, _ in pconf.sweep})
            identity = (pconf.env, tuple(sorted(resolved.items())), pconf.theta)
            owner, owned = owners.setdefault(label, (key, identity))
            if owned != identity:
                raise ConfigError(f"{key}: label {label!r} also names a different problem of {owner} (env, options "
                                  "or θ differ); give each problem a distinct `label`")
            try:
                problem = problem_config.build()
                problem.check_theta(theta_for(problem, pconf.theta))
            except ConfigError as err:
                raise ConfigError(f"{key} ({label}): {err}") from None
            yield _Problem(key, pconf.label or pconf.env, label, pconf.env, identity[1], pconf.theta, problem,
                           pconf.batch_sizes)


def _variants(econf: EstimatorTable) -> Iterator[tuple[Estimator | ConfigError, str]]:
    """(config, label) of every combination of an estimator table's axes; a combination its config refuses
    (an option that applies only to another value of an axis) comes as its ConfigError, to be skipped and said."""
    config_class = ESTIMATORS.get(econf.name)
    for options in _combinations(econf.options, econf.sweep):
        every = resolve_options(config_class.owner(), config_class.options(), options)  # each value parsed alone
        label = _label(econf.name, every, config_class.defaults())
        try:
            yield resolve_estimator(econf.name, options), label
        except ConfigError as err:
            yield err, label


def table_variants(config: SweepConfig) -> list[list[str]]:
    """Each [[estimators]] table's variant labels, one per combination of its axes in config order. The
    sweep records them in `_sweep.json`, so a report tells which table produced a row without resolving
    options through the registry of its own day (an option renamed since would otherwise break it)."""
    return [[variant for _, variant in _variants(econf)] for econf in config.estimators]


def _measurements(config: SweepConfig) -> Iterator[_Measurement]:
    """Problem × (the estimator tables that run on it) × variant × N, in config order. The N: the estimator table's
    own batch_sizes (on every problem it runs on), else the problem's own, else the sweep's."""
    for problem in _problems(config):
        for econf in config.estimators:
            if econf.problems and problem.name not in econf.problems:
                continue  # not asked for: not a skip
            for estimator, variant in _variants(econf):
                for batch_size in dict.fromkeys(econf.batch_sizes or problem.batch_sizes or config.batch_sizes):
                    yield _Measurement(problem, estimator, variant, batch_size, econf.train,
                                       econf.repetitions or config.repetitions)


def _repetitions(config: SweepConfig, m: _Measurement) -> Iterator[Cell]:
    """The measurement's cells, repetition 0, 1, …: seeded as every table's repetition of that index on the problem
    at that N (common random numbers), so a table with more repetitions than the sweep adds new seeds and shares the
    first ones (and their cells, by id, with another table of the same variant)."""
    p = m.problem
    for repetition in range(m.repetitions):
        seed = cell_seed(config.seed, p.env, list(p.options), p.theta, m.batch_size, repetition)
        yield Cell(config.name, p.label, p.env, p.options, p.theta, m.estimator.name, m.variant,
                   tuple(sorted(m.estimator.as_dict().items())), m.batch_size, config.reps, repetition, seed,
                   config.reference)


def expand(config: SweepConfig) -> tuple[list[Cell], list[str]]:
    """All distinct cells of the sweep, and a description of each combination that does not apply
    (e.g. rloo at N = 1), which is skipped and reported, never silently dropped.

    Duplicated estimator tables, axis values or batch sizes give the same cell twice: each cell id is
    kept once, in first-occurrence order, so the planned count is the distinct count. Expanding is
    also the last validation before any compute (ConfigError, one line, naming the problem): two
    different problems (env, options or θ) under one label, a θ that is not finite, a (problem, N, M)
    that would not fit in memory (bench.harness.check_memory), more than MAX_CELLS cells."""
    cells: dict[str, Cell] = {}
    skipped: dict[str, None] = {}  # ordered, without repeats
    sized: set[tuple] = set()  # (env, options, N, group size) already checked against memory
    for m in _measurements(config):
        try:
            if isinstance(m.estimator, ConfigError):
                raise m.estimator
            m.estimator.check(m.problem.problem, m.batch_size)
            check_reference(m.problem.problem, m.estimator.target)
        except ConfigError as err:
            skipped.setdefault(f"{m.problem.label} / {m.variant} / N={m.batch_size}: {err}")
            continue
        _check_size(m, config.reps, sized)
        if len(cells) + m.repetitions > MAX_CELLS:
            raise ConfigError(f"the sweep expands to more than {MAX_CELLS} cells; lower repetitions or the axes")
        for cell in _repetitions(config, m):
            cells.setdefault(cell.cell_id, cell)
    return list(cells.values()), list(skipped)


def _check_size(m: _Measurement, reps: int, sized: set[tuple]) -> None:
    """The memory guard, once per (problem, N, group size): it does not depend on the rest of the variant."""
    group_size = m.estimator.group_size
    key = (m.problem.env, m.problem.options, m.batch_size, group_size)
    if key in sized:
        return
    sized.add(key)
    try:
        check_memory(m.problem.problem, m.batch_size, reps, group_size=group_size)
    except ConfigError as err:  # its knobs are named as measure's flags: name the config's keys
        text = str(err).replace("--batch-size", "batch_sizes").replace("--reps", "reps")
        raise ConfigError(f"{m.problem.key} ({m.problem.label}), N={m.batch_size}, reps={reps}: {text}") from None


def check_cells(config: SweepConfig, source: str) -> None:
    """Expand the config, which builds every problem and checks every cell (labels, θ, sizes), and check that
    the report's variants are among the sweep's: one ConfigError naming `source` (the file). A training sweep
    checks its reference variant only when [report] names one (the default, plain reinforce, need not train)."""
    try:
        variants = {cell.variant for cell in (expand_training(config) if config.is_training else expand(config))[0]}
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    report = config.report
    reference = [report.reference_variant]
    if config.is_training and report.reference_variant == type(report)().reference_variant:
        reference = []
    for label in [*reference, *(x for p in report.pairs for x in p)]:
        if label not in variants:
            raise ConfigError(f"{source}: report: variant {label!r} is not in the sweep; variants: "
                              f"{', '.join(sorted(variants))}")


# ------------------------------------------------------------------------------------ training sweeps

@dataclass(frozen=True)
class TrainCell:
    """One training run of a training sweep; `run_train_cell(cell)` is a pure function of it (but `seconds`)."""

    kind: ClassVar[str] = "train"
    sweep: str
    problem: str  # label
    env: str
    env_options: tuple[tuple[str, Any], ...]
    theta: str  # θ₀
    estimator: str
    variant: str
    estimator_options: tuple[tuple[str, Any], ...]
    optimizer: str
    lr: float
    batch_size: int
    budget: int
    seed_index: int
    seed: int  # derived; shared by every variant, lr, optimizer and N of (problem, θ₀, seed_index)
    eval_episodes: int
    eval_every: int

    @property
    def cell_id(self) -> str:
        return digest({"kind": self.kind, **asdict(self)})[:20]

    def settings(self) -> TrainSettings:
        return TrainSettings(optimizer=self.optimizer, lr=self.lr, batch_size=self.batch_size, budget=self.budget,
                             seed=self.seed, eval_episodes=self.eval_episodes, eval_every=self.eval_every)


@dataclass(frozen=True)
class NoiseCell:
    """The gradient noise scale of one (problem, variant, N) from `reps` batches at the point of the exact-gradient
    path from θ₀ whose normalized score first reaches `path_score` (0: θ₀ itself); `run_noise_cell(cell)`."""

    kind: ClassVar[str] = "noise_scale"
    sweep: str
    problem: str
    env: str
    env_options: tuple[tuple[str, Any], ...]
    theta: str
    estimator: str
    variant: str
    estimator_options: tuple[tuple[str, Any], ...]
    batch_size: int
    reps: int
    seed: int  # derived; shared by every variant of (problem, θ₀, N)
    path_score: float = 0.0

    @property
    def cell_id(self) -> str:
        fields = asdict(self)
        if not self.path_score:  # θ₀ itself: the id it had before noise_path existed, so its stored cells are reused
            del fields["path_score"]
        return digest({"kind": self.kind, **fields})[:20]


def train_seed(root: int, problem: _Problem, seed_index: int) -> int:
    """The seed of training run `seed_index` on `problem`: independent of estimator, lr, optimizer and N (CRN)."""
    return cell_seed(root, problem.env, list(problem.options), problem.theta, "train", seed_index)


def noise_seed(root: int, problem: _Problem, batch_size: int) -> int:
    return cell_seed(root, problem.env, list(problem.options), problem.theta, "noise_scale", batch_size)


def expand_training(config: SweepConfig) -> tuple[list[TrainCell | NoiseCell], list[str]]:
    """All distinct cells of a training sweep and the skipped combinations (as `expand`): per (problem, variant,
    N) in config order, its NoiseCell (when noise_reps > 0 and the problem has an exact objective, whose Hessian
    it needs) and then its runs, optimizer × lr × seed index. A combination the estimator refuses (rloo at N = 1,
    `exact` without an exact gradient) is skipped and said; a batch size above the budget, a run that would not
    fit in memory or more than MAX_CELLS cells is a ConfigError (one line)."""
    train_table = config.train
    if train_table is None:
        raise ConfigError("not a training sweep: it has no [train] table")
    cells: dict[str, TrainCell | NoiseCell] = {}
    skipped: dict[str, None] = {}
    sized: set[tuple] = set()
    for m in _measurements(config):
        p, settings = m.problem, m.train or train_table
        runs_per = len(settings.optimizers) * len(settings.lr) * settings.seeds
        if m.batch_size > settings.budget:
            raise ConfigError(f"batch size {m.batch_size} is above train.budget={settings.budget}: a run makes "
                              f"budget // N updates; lower the batch size or raise the budget")
        try:
            if isinstance(m.estimator, ConfigError):
                raise m.estimator
            m.estimator.check(p.problem, m.batch_size)
        except ConfigError as err:
            skipped.setdefault(f"{p.label} / {m.variant} / N={m.batch_size}: {err}")
            continue
        _check_train_size(m, settings, sized)
        if len(cells) + runs_per + 1 > MAX_CELLS:
            raise ConfigError(f"the sweep expands to more than {MAX_CELLS} cells; lower train.seeds, train.lr or "
                              "the axes")
        identity = (config.name, p.label, p.env, p.options, p.theta, m.estimator.name, m.variant,
                    tuple(sorted(m.estimator.as_dict().items())))
        for path_score in settings.noise_path if settings.noise_reps else ():
            noise = _noise_cell(config, m, settings.noise_reps, path_score, identity, skipped)
            if noise is not None:
                cells.setdefault(noise.cell_id, noise)
        for optimizer in settings.optimizers:
            for lr in settings.lr:
                for seed_index in range(settings.seeds):
                    cell = TrainCell(*identity, optimizer, lr, m.batch_size, settings.budget, seed_index,
                                     train_seed(config.seed, p, seed_index), settings.eval_episodes,
                                     settings.eval_every)
                    cells.setdefault(cell.cell_id, cell)
    return list(cells.values()), list(skipped)


def _noise_cell(config: SweepConfig, m: _Measurement, reps: int, path_score: float, identity: tuple,
                skipped: dict) -> NoiseCell | None:
    """The (problem, variant, N) noise-scale cell of `reps` batches at `path_score` along the exact-gradient path, or
    None (said in `skipped`) where it cannot be measured."""
    p = m.problem
    try:
        p.problem.require(Capability.EXACT_GRADIENT, because="which the noise scale (its exact G and Hessian) needs")
        if path_score > 0:
            p.problem.require(Capability.OPTIMUM, because="which the exact-gradient path's normalized score needs")
        check_reference(p.problem, m.estimator.target)
        check_memory(p.problem, m.batch_size, reps, group_size=m.estimator.group_size)
    except ConfigError as err:
        text = str(err).replace("--batch-size", "batch_sizes").replace("--reps", "train.noise_reps")
        skipped.setdefault(f"{p.label} / {m.variant} / N={m.batch_size} (noise scale): {text}")
        return None
    return NoiseCell(*identity, m.batch_size, reps, noise_seed(config.seed, p, m.batch_size), path_score)


def _check_train_size(m: _Measurement, settings: TrainTable, sized: set[tuple]) -> None:
    """A run holds one batch of N (and, where J is not exact, one evaluation batch): refuse what cannot fit."""
    key = (m.problem.env, m.problem.options, m.batch_size, m.estimator.group_size)
    if key in sized:
        return
    sized.add(key)
    try:
        check_memory(m.problem.problem, m.batch_size, 1, group_size=m.estimator.group_size)
        if not m.problem.problem.supports(Capability.EXACT_GRADIENT):
            check_memory(m.problem.problem, settings.eval_episodes, 1)
    except ConfigError as err:
        text = str(err).replace("--batch-size", "batch_sizes / train.eval_episodes").replace("--reps", "train.seeds")
        raise ConfigError(f"{m.problem.key} ({m.problem.label}), N={m.batch_size}: {text}") from None


def train_axes(cells: list) -> dict[str, Any]:
    """What a training report needs to know of the plan beyond the config: its axes and the planned ids of each
    kind (recorded in `_sweep.json`). Every axis is read off the planned cells, so it is the union over the
    estimator tables with their own [train] settings (`noise_reps`: the M of the noise-scale cells; [] for none)."""
    runs = [c for c in cells if isinstance(c, TrainCell)]
    noise = [c for c in cells if isinstance(c, NoiseCell)]
    return {
        "optimizers": list(dict.fromkeys(c.optimizer for c in runs)), "lr": sorted({c.lr for c in runs}),
        "budget": sorted({c.budget for c in runs}), "seeds": max((c.seed_index + 1 for c in runs), default=0),
        "seed_indices": sorted({c.seed_index for c in runs}),
        "batch_sizes": sorted({c.batch_size for c in runs}), "noise_reps": sorted({c.reps for c in noise}),
        "problems": list(dict.fromkeys(c.problem for c in runs)),
        "variants": list(dict.fromkeys(c.variant for c in runs)),
        "train_cell_ids": [c.cell_id for c in runs], "noise_cell_ids": [c.cell_id for c in noise],
    }


# ------------------------------------------------------------------------------------------- rows

def theta_for(problem, choice: str) -> torch.Tensor:
    """θ of a cell: the problem's default, or seeded N(0, scale²) noise around it."""
    if choice == "default":
        return problem.default_theta()
    _, scale, seed = choice.split(":")
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow gives ±inf, refused by check_theta
        noise = np.random.default_rng(int(seed)).normal(scale=float(scale), size=problem.num_params)
    return problem.default_theta() + torch.as_tensor(noise)


OPTION_PREFIX = "opt_"  # a measure row's typed column of each estimator option: opt_<name>


@functools.cache
def option_columns() -> Mapping[str, type]:
    """opt_<name> → the type (bool, int, float or str) of option <name>'s values, over every registered
    estimator: the typed columns every measure row has, null where the cell's estimator has no such option, so
    that every cell file of a sweep has one schema and `pd.read_parquet` of the folder keeps them all (pyarrow
    takes a folder's schema from one file). The type is that of the parsed default; an option name declared
    with two types, or a value of another type, is a TypeError (a bug of the registry, caught by the tests)."""
    columns: dict[str, type] = {}
    for name, config in ESTIMATORS.items():
        for key, spec in config.options().items():
            kind = type(spec.parser(spec.default))
            if kind not in (bool, int, float, str):
                raise TypeError(f"estimator {name}: option {key} has values of type {kind.__name__}, which no "
                                "opt_ column holds (bool, int, float, str)")
            column = OPTION_PREFIX + key
            if columns.setdefault(column, kind) is not kind:
                raise TypeError(f"option {key} has values of type {columns[column].__name__} in one estimator and "
                                f"{kind.__name__} in {name}")
    return MappingProxyType(columns)


def option_row(config: Estimator) -> dict[str, Any]:
    """The opt_<name> columns of a row from its estimator's resolved config: the value of every option that
    applies (defaults included), None where the estimator has no such option or where its `only_if` does not
    hold (`critic_samples` unless `critic=fitted`): a null says the option plays no part in the measurement."""
    specs = config.options()
    values = {key: value for key, value in config.as_dict().items()
              if specs[key].only_if is None or specs[key].only_if.holds(config)}
    return {column: values.get(column.removeprefix(OPTION_PREFIX)) for column in option_columns()}


def run_cell(cell: Cell) -> dict[str, Any]:
    """Run one cell → one tidy row (config, metrics with CI bounds, cost, provenance); the estimator's options
    are in `estimator_options` (JSON, as given) and in the typed `opt_<name>` columns (resolved)."""
    with single_thread():
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
        **option_row(resolve_estimator(cell.estimator, dict(cell.estimator_options))),
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


@functools.cache
def provenance() -> Mapping[str, str]:
    """Library versions and the git commit of the code that produced a row: computed once per process (the
    commit costs a subprocess) and read-only, so no caller can change what later rows record."""
    from importlib.metadata import version

    import gymnasium
    import pandas

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return MappingProxyType({
        "pgvar_version": version("pgvar"), "python_version": platform.python_version(),
        "torch_version": torch.__version__, "numpy_version": np.__version__,
        "gymnasium_version": gymnasium.__version__, "pandas_version": pandas.__version__,
        "git_commit": commit,
    })


# ------------------------------------------------------------------------------------- training rows

def run(cell: Cell | TrainCell | NoiseCell) -> dict[str, Any]:
    """Run any kind of cell → its row (what the executors call)."""
    if isinstance(cell, TrainCell):
        return run_train_cell(cell)
    if isinstance(cell, NoiseCell):
        return run_noise_cell(cell)
    return run_cell(cell)


def _identity(cell: TrainCell | NoiseCell) -> dict[str, Any]:
    return {"kind": cell.kind, "cell_id": cell.cell_id, "sweep": cell.sweep, "problem": cell.problem,
            "env": cell.env, "env_options": json.dumps(dict(cell.env_options), sort_keys=True), "theta": cell.theta,
            "estimator": cell.estimator, "variant": cell.variant,
            "estimator_options": json.dumps(dict(cell.estimator_options), sort_keys=True)}


def _optional(value: Any) -> float:
    """A summary value that may be None (censored, undefined) → float, NaN for None."""
    return math.nan if value is None else float(value)


def run_columns(result: TrainingRun, problem: Problem) -> dict[str, Any]:
    """The stored columns of a training run on `problem` beyond its identity: its summary, its curve at the evaluated
    updates (list columns) and where a problem with arms settled (`arm_outcome`). NaN for what is undefined or
    censored; `failed_defined` says whether `failed` means anything."""
    summary = result.summary()
    at = result.evaluated
    failed = summary["failed"]
    return {
        "updates": int(summary["updates"]), "J0": float(result.objective[0]), "J_star": float(result.optimum),
        "final_J": float(summary["final_objective"]), "final_score": float(summary["final_score"]),
        "auc": float(summary["auc"]),
        **{key: _optional(summary[key]) for key in ("samples_to_50", "samples_to_90", "updates_to_50",
                                                    "updates_to_90")},
        "failed": bool(failed), "failed_defined": failed is not None, "diverged": bool(summary["diverged"]),
        "diverged_at": -1 if summary["diverged_at"] is None else int(summary["diverged_at"]),
        "nonfinite": int(summary["nonfinite"]), "env_steps": int(summary["env_steps"]),
        "seconds": float(summary["seconds"]),
        "curve_updates": [int(k) for k in result.update[at]], "curve_samples": [int(n) for n in result.samples[at]],
        "curve_J": [float(j) for j in result.objective[at]], "curve_score": [float(s) for s in result.score[at]],
        "curve_grad_norm": [float(g) for g in result.grad_norm[at]],
        "arm_outcome": problem.arm_outcome(torch.as_tensor(result.theta)),
    }


def run_train_cell(cell: TrainCell) -> dict[str, Any]:
    """One training run → one row: identity, the run's summary, its curve at the evaluated updates (list
    columns) and provenance. A diverged run is a row like any other (`diverged`, final score and AUC −∞)."""
    with single_thread():
        problem = make_problem(cell.env, dict(cell.env_options))
        result = train(problem, cell.estimator, cell.settings(), dict(cell.estimator_options),
                       theta=theta_for(problem, cell.theta), show_progress=False)
    row = _identity(cell)
    row.update({"optimizer": cell.optimizer, "lr": float(cell.lr), "batch_size": cell.batch_size,
                "budget": cell.budget, "seed_index": cell.seed_index, "seed": cell.seed})
    row.update(run_columns(result, problem))
    row.update(provenance())
    return row


@functools.lru_cache(maxsize=64)
def path_point(env: str, env_options: tuple[tuple[str, Any], ...], theta: str, path_score: float) -> PathPoint:
    """`bench.noise_scale.exact_path_point` of a problem, θ₀ choice and score: a deterministic function of them, the
    same for every variant and N measured there, so computed once per process (and returned to every noise cell of
    that point: none may modify its θ), with one torch thread as every cell runs, whoever calls it first."""
    from bench.noise_scale import exact_path_point  # the noise-scale bridge

    with single_thread():
        problem = make_problem(env, dict(env_options))
        return exact_path_point(problem, theta_for(problem, theta), path_score)


def run_noise_cell(cell: NoiseCell) -> dict[str, Any]:
    """One noise-scale measurement → one row: `bench.noise_scale.NoiseScale.to_row()` under the cell's identity."""
    from bench.noise_scale import noise_scale  # the noise-scale bridge

    with single_thread():
        problem = make_problem(cell.env, dict(cell.env_options))
        estimator = resolve_estimator(cell.estimator, dict(cell.estimator_options))
        point = path_point(cell.env, cell.env_options, cell.theta, cell.path_score)
        result = noise_scale(problem, estimator, point.theta.clone(), cell.batch_size, cell.reps, cell.seed)
    row = {**_identity(cell), "batch_size": cell.batch_size, "reps": cell.reps, "seed": cell.seed,
           "path_target": float(cell.path_score), "path_score": float(point.score), "path_steps": point.steps,
           "path_reached": point.reached}
    for key, value in result.to_row().items():
        row.setdefault(key, value)  # the cell's identity wins over anything the measurement says of itself
    row.update(provenance())
    return row
