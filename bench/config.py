"""Sweep configs: a TOML file → validated, frozen dataclasses.

Each table of the file has its own small parser; every mistake is one ConfigError line naming the file and
the key. Integers and numbers go through the option parsers of `envs.spec` (`Int`, `Float`), so a bound is
written once and reads the same as an option's. This checks the file alone: whether its problems, θ, sizes and
report variants make sense together is checked by expanding it into cells (`bench.cells.check_cells`).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from bench.reference import ReferenceConfig
from bench.store import check_name
from bench.training import OPTIMIZERS, TrainSettings
from envs.problem import problem_config_class
from envs.spec import Choice, ConfigError, Float, Int, Parser, resolve_options
from estimators import ESTIMATORS


@dataclass(frozen=True)
class ProblemTable:
    """One problem of a sweep."""

    env: str  # registered problem name
    options: tuple[tuple[str, Any], ...] = ()  # fixed options, resolved
    sweep: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # options crossed as axes
    theta: str = "default"  # "default" or "random:<scale>:<seed>" (seeded N(0, scale²) around the default)
    label: str = ""  # how the report names it; default: env and its non-default options
    batch_sizes: tuple[int, ...] = ()  # its own N range, for the estimator tables without theirs; empty: the sweep's


@dataclass(frozen=True)
class EstimatorTable:
    """One estimator of a sweep; every combination of its `sweep` axes is a variant."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()
    sweep: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    problems: tuple[str, ...] = ()  # labels (env names of unlabelled problems) it runs on; empty: every problem
    batch_sizes: tuple[int, ...] = ()  # on every problem it runs on; empty: each problem's own, else the sweep's
    train: "TrainTable | None" = None  # its own [train] settings (its `train` keys over the sweep's); None: the sweep's
    repetitions: int = 0  # its own independently seeded repetitions per measurement (e.g. ≥ 10 for rliable); 0: the sweep's


@dataclass(frozen=True)
class ReportSettings:
    """The sweep config's [report] table: what `pgvar report` compares. The report reads it back from the
    config `_sweep.json` records, through the same parser (`parse_report`)."""

    reference_variant: str = "reinforce"  # scores are −log(variance / this variant's variance)
    pairs: tuple[tuple[str, str], ...] = ()  # (X, Y): probability that X improves on Y
    bootstrap_reps: int = 2000
    seed: int = 0


@dataclass(frozen=True)
class TrainTable:
    """The sweep config's [train] table: with it the sweep is a *training sweep*. Every (problem, estimator
    variant, batch size N) becomes training runs (`bench.training.train`) crossed with these axes instead of a
    fixed-θ measurement. The budget is the same at every N (K = budget // N updates), so runs at different N
    compare at equal samples."""

    optimizers: tuple[str, ...] = ("sgd",)  # subset of bench.training.OPTIMIZERS
    lr: tuple[float, ...] = ()  # learning rates: a list, or a log grid {low, high, count} with inclusive ends
    budget: int = 2048  # training trajectories per run, at every batch size
    seeds: int = 10  # independent training seeds per (problem, variant, N, optimizer, lr)
    eval_episodes: int = 256  # evaluation trajectories where J is not exact
    eval_every: int = 1  # updates between evaluations where J is not exact (and the last)
    noise_reps: int = 0  # M batches of the fixed-θ noise-scale measurement at θ₀ per (problem, variant, N); 0 = none
    noise_path: tuple[float, ...] = (0.0,)  # normalized scores s of the exact-gradient path where it is measured


@dataclass(frozen=True)
class SweepConfig:
    """A whole sweep: problems × estimator variants × batch sizes × repetitions (a measurement sweep), or with a
    [train] table problems × estimator variants × batch sizes × optimizers × learning rates × seeds (a training
    sweep; `reps` and `repetitions` are then 0: they do not apply)."""

    name: str
    problems: tuple[ProblemTable, ...]
    estimators: tuple[EstimatorTable, ...]
    batch_sizes: tuple[int, ...]
    reps: int  # M, independent batches per measurement
    repetitions: int  # independent measurements per cell (rliable's runs)
    seed: int  # root seed
    report: ReportSettings = field(default_factory=ReportSettings)
    reference: tuple[tuple[str, Any], ...] = ()  # ReferenceConfig fields (samples, batch_size, seed) if not default
    train: TrainTable | None = None  # the [train] table of a training sweep; None for a measurement sweep

    @property
    def is_training(self) -> bool:
        return self.train is not None


MAX_BOOTSTRAP_REPS = 100_000  # the report's rliable resamples: more only costs memory and time
_SWEEP_KEYS = {"name", "problems", "estimators", "batch_sizes", "reps", "repetitions", "seed", "report", "reference",
               "train"}
MEASUREMENT_ONLY = ("reps", "repetitions", "reference")  # keys that do not apply to a training sweep
_TRAIN_KEYS = {"optimizers", "lr", "budget", "seeds", "eval_episodes", "eval_every", "noise_reps", "noise_path"}
_PATH_SCORE = Float(0.0, 0.99)  # s = 1 is reached only in the limit on most problems
_LR_GRID_KEYS = {"low", "high", "count"}
_SETTINGS = TrainSettings.options()  # the training run's own parsers: a [train] value reads as `pgvar train`'s
_OPTIMIZER = Choice(OPTIMIZERS)
_LR, _LR_LOW = _SETTINGS["lr"].parser, Float(0.0, low_open=True)  # a log grid needs low > 0
_LR_COUNT = Int(2, 1000)
_SEEDS = Int(2, 100_000)
_NOISE_REPS = Int(0, 10_000_000)
MAX_LRS = 1000
_PROBLEM_KEYS = {"env", "options", "sweep", "theta", "label", "batch_sizes"}
_ESTIMATOR_KEYS = {"name", "options", "sweep", "problems", "batch_sizes", "train", "repetitions"}
_REPETITIONS = Int(1)  # the sweep's and a table's own; too many is refused as too many cells (bench.cells.MAX_CELLS)
_REPORT_KEYS = {"reference_variant", "pairs", "bootstrap_reps", "seed"}
_REFERENCE_KEYS = {"samples", "batch_size", "seed"}
_THETA_SCALE, _THETA_SEED = Float(0), Int(0, 2 ** 128 - 1)  # a finite scale, and a seed numpy accepts


class Where:
    """Builds errors that name the file and the key."""

    def __init__(self, source: str):
        self.source = source

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {message}")

    def table(self, raw: Any, key: str, allowed: set[str]) -> Mapping[str, Any]:
        """`raw` if it is a table of `allowed` keys (`key`: where it is, "" for the file's top level)."""
        if not isinstance(raw, Mapping):
            raise self.error(key, "expected a table")
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise self.error(f"{key}.{unknown[0]}" if key else unknown[0],
                             f"unknown key; allowed: {', '.join(sorted(allowed))}")
        return raw

    def parsed(self, table: Mapping, key: str, parser: Parser, default: Any = None, within: str = "") -> Any:
        """`table[key]` (or `default`) through an `envs.spec` parser, whose allowed range the error names
        (`within`: the table's key, "" at the top level)."""
        value = table.get(key, default)
        try:
            return parser(value)
        except ValueError as err:
            raise self.error(f"{within}.{key}" if within else key, f"expected {err}, got {value!r}") from None


def read_config(path: str | Path) -> SweepConfig:
    """Read and parse a sweep TOML file; every problem is one ConfigError naming file and key."""
    path = Path(path)
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
    return parse_config(raw, Where(str(path)), default_name=path.stem)


def parse_config(raw: Mapping[str, Any], where: Where, default_name: str) -> SweepConfig:
    where.table(raw, "", _SWEEP_KEYS)
    name = raw.get("name", default_name)
    try:  # the name becomes results/<name>/: a plain identifier, so it can never be '..', '.' or a path
        check_name(name)
    except ValueError as err:
        raise where.error("name", str(err)) from None
    problems = tuple(parse_problem(where, f"problems[{i}]", t) for i, t in enumerate(raw.get("problems") or []))
    if not problems:
        raise where.error("problems", "expected at least one [[problems]] table")
    batch_sizes = _batch_sizes(where, "batch_sizes", raw.get("batch_sizes"))
    problem_names = {p.label or p.env for p in problems}  # a labelled problem is named by its label only
    # the sweep's [train] first: a bad value of it is named there, not in an estimator table that overrides others
    train = parse_train(where, raw["train"]) if "train" in raw else None
    estimators = tuple(parse_estimator(where, f"estimators[{i}]", t, problem_names, raw.get("train"))
                       for i, t in enumerate(raw.get("estimators") or []))
    if not estimators:
        raise where.error("estimators", "expected at least one [[estimators]] table")
    _check_problem_sizes_apply(where, problems, estimators)
    if "train" in raw:
        for key in MEASUREMENT_ONLY:
            if key in raw:
                raise where.error(key, "applies only to a measurement sweep; this one has a [train] table (its runs "
                                       "are set by train.seeds, its noise-scale measurement by train.noise_reps)")
        return SweepConfig(
            name=name, problems=problems, estimators=estimators, batch_sizes=batch_sizes, reps=0, repetitions=0,
            seed=where.parsed(raw, "seed", Int(0), 0), report=parse_report(where, raw.get("report", {})),
            train=train,
        )
    return SweepConfig(
        name=name, problems=problems, estimators=estimators, batch_sizes=batch_sizes,
        reps=where.parsed(raw, "reps", Int(2)), repetitions=where.parsed(raw, "repetitions", _REPETITIONS, 1),
        seed=where.parsed(raw, "seed", Int(0), 0), report=parse_report(where, raw.get("report", {})),
        reference=parse_reference(where, raw.get("reference", {})),
    )


def parse_problem(where: Where, key: str, raw: Any) -> ProblemTable:
    table = where.table(raw, key, _PROBLEM_KEYS)
    env, options, axes = _registered(where, key, table, "env", "env", problem_config_class)
    label = table.get("label", "")
    if not isinstance(label, str):
        raise where.error(f"{key}.label", "expected a string")
    return ProblemTable(env, options, axes, parse_theta_choice(where, f"{key}.theta", table.get("theta", "default")),
                        label, _own_batch_sizes(where, key, table))


def _check_problem_sizes_apply(where: Where, problems: tuple[ProblemTable, ...],
                               estimators: tuple[EstimatorTable, ...]) -> None:
    """A problem's own batch_sizes serve the estimator tables that run on it without batch_sizes of their own (which
    win: they apply to every problem of the table); refused when there is no such table, as they would be ignored."""
    for index, problem in enumerate(problems):
        name = problem.label or problem.env
        if problem.batch_sizes and not any(not e.batch_sizes and (not e.problems or name in e.problems)
                                           for e in estimators):
            raise where.error(f"problems[{index}].batch_sizes", f"apply to no [[estimators]] table: a table's own "
                                                                f"batch_sizes win, and every table running on {name!r} "
                                                                "has its own")


def parse_estimator(where: Where, key: str, raw: Any, problem_names: set[str],
                    sweep_train: Any = None) -> EstimatorTable:
    """One [[estimators]] table; in a training sweep (`sweep_train`: the raw [train] table) its own `train` table
    overrides keys of the sweep's for this estimator's runs (e.g. more seeds or another lr grid for one experiment);
    in a measurement sweep its own `repetitions` override the sweep's for its measurements (e.g. ≥ 10 independently
    seeded repetitions of one block, for rliable, without repeating the whole sweep that often)."""
    table = where.table(raw, key, _ESTIMATOR_KEYS)
    name, options, axes = _registered(where, key, table, "name", "estimator", ESTIMATORS.get)
    only = table.get("problems", [])
    if not isinstance(only, list) or any(p not in problem_names for p in only):
        raise where.error(f"{key}.problems", f"expected a list of problem labels (envs if unlabelled) of this sweep "
                                             f"({', '.join(sorted(problem_names))}), got {only!r}")
    own_sizes = _own_batch_sizes(where, key, table)
    own_train = None
    if "train" in table:
        if sweep_train is None:
            raise where.error(f"{key}.train", "applies only to a training sweep (one with a [train] table)")
        override = where.table(table["train"], f"{key}.train", _TRAIN_KEYS)
        own_train = parse_train(where, {**sweep_train, **override}, f"{key}.train")  # [train] itself parsed first
    own_repetitions = 0
    if "repetitions" in table:
        if sweep_train is not None:
            raise where.error(f"{key}.repetitions", "applies only to a measurement sweep; this one has a [train] "
                                                    "table (its runs are set by train.seeds)")
        own_repetitions = where.parsed(table, "repetitions", _REPETITIONS, within=key)
    return EstimatorTable(name, options, axes, tuple(only), own_sizes, own_train, own_repetitions)


def parse_report(where: Where, raw: Any) -> ReportSettings:
    table = where.table(raw, "report", _REPORT_KEYS)
    pairs = table.get("pairs", [])
    if not isinstance(pairs, list) or any(not isinstance(p, list) or len(p) != 2 or not all(isinstance(x, str) for x in p)
                                          for p in pairs):
        raise where.error("report.pairs", "expected a list of [variant, variant] pairs")
    reference = table.get("reference_variant", ReportSettings.reference_variant)
    if not isinstance(reference, str):
        raise where.error("report.reference_variant", "expected a variant label")
    return ReportSettings(
        reference_variant=reference, pairs=tuple(tuple(p) for p in pairs),
        bootstrap_reps=where.parsed(table, "bootstrap_reps", Int(100, MAX_BOOTSTRAP_REPS),
                                    ReportSettings.bootstrap_reps, "report"),
        seed=where.parsed(table, "seed", Int(0, 2 ** 32 - 1), ReportSettings.seed, "report"),  # numpy's is 32-bit
    )


def parse_train(where: Where, raw: Any, within: str = "train") -> TrainTable:
    """The [train] table (or an estimator's settings over it, `within` = "estimators[i].train"): every value through
    the parsers `bench.training.TrainSettings` uses, so a value the sweep accepts is one a run accepts; errors are
    one line naming `<within>.<key>` and the allowed range."""
    table = where.table(raw, within, _TRAIN_KEYS)
    optimizers = table.get("optimizers", list(TrainTable.optimizers))
    try:
        if not isinstance(optimizers, list) or not optimizers:
            raise ValueError
        optimizers = tuple(dict.fromkeys(_OPTIMIZER(o) for o in optimizers))
    except ValueError:
        raise where.error(f"{within}.optimizers", f"expected a non-empty list, each {_OPTIMIZER.allowed}, "
                                                  f"got {optimizers!r}") from None
    if "lr" not in table:
        raise where.error(f"{within}.lr", "expected a list of learning rates or a log grid {low, high, count}")
    seeds = where.parsed(table, "seeds", _SEEDS, TrainTable.seeds, within)
    budget = where.parsed(table, "budget", _SETTINGS["budget"].parser, TrainTable.budget, within)
    noise_reps = where.parsed(table, "noise_reps", _NOISE_REPS, TrainTable.noise_reps, within)
    if noise_reps == 1:  # a covariance needs two batches
        raise where.error(f"{within}.noise_reps", "expected 0 (no noise-scale measurement) or an integer ≥ 2, got 1")
    return TrainTable(
        optimizers=optimizers, lr=_learning_rates(where, table["lr"], f"{within}.lr"), budget=budget, seeds=seeds,
        eval_episodes=where.parsed(table, "eval_episodes", _SETTINGS["eval_episodes"].parser,
                                   TrainTable.eval_episodes, within),
        eval_every=where.parsed(table, "eval_every", _SETTINGS["eval_every"].parser, TrainTable.eval_every, within),
        noise_reps=noise_reps, noise_path=_noise_path(where, table.get("noise_path", list(TrainTable.noise_path)),
                                                      f"{within}.noise_path"),
    )


def _noise_path(where: Where, value: Any, key: str) -> tuple[float, ...]:
    """The normalized scores s ∈ [0, 0.99] of the exact-gradient path (bench.noise_scale.exact_path_point) where the
    noise scale is measured, sorted, repeats dropped; 0 is θ₀."""
    try:
        if not isinstance(value, list) or not value or len(value) > 20:
            raise ValueError
        return tuple(sorted(set(_PATH_SCORE(v) for v in value)))
    except ValueError:
        raise where.error(key, f"expected a non-empty list of at most 20 normalized scores, each "
                               f"{_PATH_SCORE.allowed} (0 is θ₀), got {value!r}") from None


def _learning_rates(where: Where, value: Any, key: str = "train.lr") -> tuple[float, ...]:
    """`lr` as a list (each ≥ 0, kept in order, repeats dropped) or a log grid {low, high, count}: `count` values
    from `low` to `high` inclusive, equally spaced in log, each rounded to 12 significant digits (so 0.1 is 0.1)."""
    if isinstance(value, Mapping):
        grid = where.table(value, key, _LR_GRID_KEYS)
        for name in sorted(_LR_GRID_KEYS):
            if name not in grid:
                raise where.error(f"{key}.{name}", "missing; a log grid is {low, high, count}")
        low = where.parsed(grid, "low", _LR_LOW, within=key)
        high = where.parsed(grid, "high", _LR_LOW, within=key)
        count = where.parsed(grid, "count", _LR_COUNT, within=key)
        if not high > low:
            raise where.error(f"{key}.high", f"expected a number above low={low:g}, got {high!r}")
        ratio = math.log(high / low)
        return tuple(float(f"{low * math.exp(ratio * i / (count - 1)):.12g}") for i in range(count - 1)) + (high,)
    try:
        if not isinstance(value, list) or not value or len(value) > MAX_LRS:
            raise ValueError
        return tuple(dict.fromkeys(_LR(v) for v in value))
    except ValueError:
        raise where.error(key, f"expected a non-empty list of at most {MAX_LRS} learning rates, each "
                               f"{_LR.allowed}, or a log grid {{low, high, count}}, got {value!r}") from None


def parse_reference(where: Where, raw: Any) -> tuple[tuple[str, Any], ...]:
    """The [reference] table (sampled references of problems without an exact gradient), validated."""
    table = where.table(raw, "reference", _REFERENCE_KEYS)
    try:
        ReferenceConfig(**table)
    except (ConfigError, TypeError) as err:
        raise where.error("reference", str(err)) from None
    return tuple(sorted(table.items()))


def parse_theta_choice(where: Where, key: str, text: Any) -> str:
    if text == "default":
        return text
    parts = str(text).split(":")
    try:
        if not isinstance(text, str) or parts[0] != "random" or len(parts) != 3:
            raise ValueError
        _THETA_SCALE(parts[1]), _THETA_SEED(parts[2])
    except ValueError:
        raise where.error(key, f"expected 'default' or 'random:<finite scale ≥ 0>:<integer seed ≥ 0>', "
                               f"got {text!r}") from None
    return text


def _registered(where: Where, key: str, table: Mapping, name_field: str, kind: str, lookup):
    """The registered name of a [[problems]] or [[estimators]] table (`lookup` raises ConfigError listing the
    valid ones), its parsed options and axes."""
    name = table.get(name_field)
    if not isinstance(name, str):
        raise where.error(f"{key}.{name_field}", f"expected the name of a registered {kind}, got {name!r}")
    try:
        spec = lookup(name)
    except ConfigError as err:
        raise where.error(f"{key}.{name_field}", str(err)) from None
    return (name, *_options(where, key, f"{kind} {name}", spec.options(), table.get("options", {}),
                            table.get("sweep", {})))


def _options(where: Where, key: str, owner: str, specs, fixed: Any, sweep: Any):
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


_BATCH_SIZE = Int(1)


def _own_batch_sizes(where: Where, key: str, table: Mapping) -> tuple[int, ...]:
    """A [[problems]] or [[estimators]] table's own `batch_sizes`, () where it has none (the next level's apply)."""
    return _batch_sizes(where, f"{key}.batch_sizes", table["batch_sizes"]) if "batch_sizes" in table else ()


def _batch_sizes(where: Where, key: str, value: Any) -> tuple[int, ...]:
    try:
        if not isinstance(value, list) or not value:
            raise ValueError
        return tuple(_BATCH_SIZE(n) for n in value)
    except ValueError:
        raise where.error(key, f"expected a non-empty list of batch sizes, each {_BATCH_SIZE.allowed}, "
                               f"got {value!r}") from None
