"""The statistics of a training sweep (rows kind="train", one per run, and kind="noise_scale", see
bench/cells.py): loaded with their own schema check, and every number the report's Training section shows.

Runs and independence. A run is (problem, estimator variant, optimizer, learning rate, batch size N, seed index).
Runs of one (problem, seed index) share their seed (common random numbers) across variants, learning rates,
optimizers and N; runs of different seed indices are independent. So every interval here resamples seed
indices: an interval over the runs of one setting treats its seeds as the independent units, and a paired
comparison (X − Y at the same problem, N, learning rate and seed index) resamples the pairs.

Scores. The normalized score s = (J − J(θ₀)) / (J* − J(θ₀)) (1 = the optimum, 0 = no progress) needs J*
(Capability.OPTIMUM); problems without it are left out of every statistic and named. A diverged run's final score
and AUC are −∞ in the rows; here every final score and AUC is clipped below at SCORE_FLOOR = −1 (a run that ended
as far below its start as the optimum is above it) and a diverged run scores exactly the floor. So a diverged run
is the worst there is (it ties only with runs at least that bad), IQM, median and mean stay finite and
bootstrap percentiles defined, and the mean says how much the floor costs: it is stated wherever a mean is shown,
and the failure and divergence fractions are always shown beside.

Learning-rate selection is split-half: for each (problem, variant, optimizer, N) the learning rate is chosen by
the IQM of the final score over the seeds with an even index (ties: the larger mean, then the smaller learning
rate), and every number reported "at the selected learning rate" uses only the seeds with an odd index. The
learning-rate curves show every learning rate over all seeds (no selection there).

Intervals, all 95% percentile bootstrap over seeds:
- per problem (one task): our own vectorized bootstrap on a numpy Generator seeded from (report seed, a stable
  hash of the setting), the same resampling as rliable's stratified bootstrap with one task (and ~100× faster);
- across problems: rliable (reports/rliable_stats.py's helpers, the global RNG seeded as there): IQM, median,
  mean, optimality gap (γ = 1), probability of improvement, performance profiles; tasks = problems, runs =
  evaluation-half seeds;
- paired differences: `paired_bootstrap`, resampling seed indices jointly for X and Y (rliable resamples each
  variant's runs independently, which ignores the pairing).
An interval of zero width (every resample gave the same value, e.g. a deterministic control whose runs all
agree) is never shown as an interval: it is written "no spread".

Samples to 90% of the optimum are right-censored at the budget: reported as the fraction of runs that reached it
(Clopper–Pearson interval) and the median among those that did (bootstrap over the successes), never a mean that
drops the failures.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from bench.store import LOCK_FILE, META_FILE, ResultsStore, cell_file_id, failure_file_id, is_store_file, one_line
from envs.spec import ConfigError
from reports.findings import fmt_ci
from reports.rliable_stats import (
    IMPROVEMENT_COLUMNS,
    INTERVAL_COLUMNS,
    PROFILE_COLUMNS,
    Score,
    aggregates_and_profiles,
    concat,
    score_matrices,
    tagged_improvements,
)

TRAIN_KIND, NOISE_KIND = "train", "noise_scale"
SCORE_FLOOR = -1.0  # final scores and AUCs are clipped below here; a diverged run scores exactly this
CONFIDENCE = 0.95
CONTROL_ESTIMATOR = "exact"  # the exact-gradient control
TARGET_COLUMN = "samples_to_90"
CURVE_POINTS = 25  # points of a sample-efficiency curve (evenly spaced evaluated updates, first and last kept)
FINAL_SCORE = Score("final_score", "final normalized score", 1.0,
                    "γ = 1, the optimum: the gap is the mean shortfall of the final score from the optimum")

# ------------------------------------------------------------------------------------------------ loading

_IDENTITY = ("kind", "cell_id", "problem", "env", "env_options", "estimator", "variant", "estimator_options")
TRAIN_TEXT = frozenset({*_IDENTITY, "optimizer", "arm_outcome"})
TRAIN_NUMBER = frozenset({"lr", "J0", "J_star", "final_J", "final_score", "auc", "samples_to_50", "samples_to_90",
                          "updates_to_50", "updates_to_90", "seconds"})
TRAIN_INTEGER = frozenset({"batch_size", "budget", "seed_index", "seed", "updates", "diverged_at", "nonfinite",
                           "env_steps"})
TRAIN_BOOLEAN = frozenset({"failed", "failed_defined", "diverged"})
TRAIN_LISTS = {"curve_updates": "integer", "curve_samples": "integer", "curve_J": "number", "curve_score": "number",
               "curve_grad_norm": "number"}
NOISE_TEXT = frozenset(_IDENTITY)
NOISE_NUMBER = frozenset({"grad_norm_sq", "trace_sigma", "b_simple", "curvature", "trace_h_sigma", "b_noise",
                          "eps_max", "eps_opt", "step_length", "path_target", "path_score"})
NOISE_INTEGER = frozenset({"batch_size", "reps", "nonfinite", "path_steps"})
NOISE_BOOLEAN = frozenset({"model_applies", "path_reached"})
RUN_KEY = ["problem", "variant", "optimizer", "batch_size", "lr", "seed_index"]


@dataclass(frozen=True)
class TrainingResults:
    """A loaded training folder."""

    folder: str
    runs: pd.DataFrame  # kind="train", one row per run, sorted by RUN_KEY; plus the derived columns of `_derive`
    noise: pd.DataFrame  # kind="noise_scale", one row per (problem, variant, N); may be empty
    planned: int | None  # cells the recorded sweep plans (None without a readable _sweep.json)
    unreadable: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def _check_schema(table, kind: str) -> None:
    """ValueError (one line) unless the pyarrow table has every column of `kind`'s schema with its type."""
    import pyarrow as pa

    number = lambda t: pa.types.is_integer(t) or pa.types.is_floating(t)  # noqa: E731
    text = lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)  # noqa: E731
    if kind == TRAIN_KIND:
        kinds = [(TRAIN_TEXT, text, "text"), (TRAIN_NUMBER, number, "a number"),
                 (TRAIN_INTEGER, pa.types.is_integer, "an integer"), (TRAIN_BOOLEAN, pa.types.is_boolean, "a boolean")]
    else:
        kinds = [(NOISE_TEXT, text, "text"), (NOISE_NUMBER, number, "a number"),
                 (NOISE_INTEGER, pa.types.is_integer, "an integer"), (NOISE_BOOLEAN, pa.types.is_boolean, "a boolean")]
    lists = TRAIN_LISTS if kind == TRAIN_KIND else {}
    required = set(lists).union(*(columns for columns, _, _ in kinds))
    missing = sorted(required - set(table.column_names))
    if missing:
        raise ValueError(f"a {kind!r} row lacking columns {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    for columns, accepts, what in kinds:
        for column in sorted(columns):
            column_type = table.schema.field(column).type
            if not accepts(column_type):
                raise ValueError(f"column {column} is {column_type}, expected {what}")
            if columns is not TRAIN_NUMBER and columns is not NOISE_NUMBER and table.column(column).null_count:
                raise ValueError(f"column {column} is null")
    for column, what in lists.items():
        column_type = table.schema.field(column).type
        if not (pa.types.is_list(column_type) or pa.types.is_large_list(column_type)) or not (
                number(column_type.value_type) if what == "number" else pa.types.is_integer(column_type.value_type)):
            raise ValueError(f"column {column} is {column_type}, expected a list of {what}s")


def load_training(folder: Path) -> TrainingResults:
    """Read a training sweep's folder (written by `pgvar sweep` with a [train] table). ConfigError (one line) when it
    cannot be used at all; a file that cannot be used is skipped and named in `unreadable`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--training {folder}: " + ("not a folder" if folder.exists() else "no such folder"))
    store = ResultsStore(folder)
    planned, plan, notes = None, None, []
    if (folder / META_FILE).is_file():
        try:
            meta = store.meta()
            recorded = meta.get("cell_ids")
            if isinstance(recorded, list) and all(isinstance(i, str) for i in recorded):
                plan = set(recorded)
                planned = len(plan)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
            notes.append(f"{META_FILE} unreadable ({type(err).__name__}: {one_line(err)}): every cell file is read")
    else:
        notes.append(f"no {META_FILE}: every cell file in the folder is read")
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        raise ConfigError(f"--training {folder}: cannot list it ({err.strerror or err})") from None
    unreadable, failed, frames, stale = [], [], {TRAIN_KIND: [], NOISE_KIND: []}, 0
    for path in entries:
        cell_id, failure_id = cell_file_id(path.name), failure_file_id(path.name)
        if path.name in (META_FILE, LOCK_FILE) or (path.name.startswith(".") and is_store_file(path.name)):
            continue
        if failure_id is not None:
            if plan is None or failure_id in plan:
                failed.append(_failure_line(path))
            continue
        if cell_id is None:
            unreadable.append(f"{path.name}: not a file `pgvar sweep` writes (ignored)")
            continue
        if plan is not None and cell_id not in plan:
            stale += 1
            continue
        try:
            table = store.read_cell(cell_id)
            kind = table.column("kind").to_pylist()[0] if "kind" in table.column_names else None
            if kind not in (TRAIN_KIND, NOISE_KIND):
                raise ValueError(f"kind {kind!r} is neither {TRAIN_KIND!r} nor {NOISE_KIND!r} (a measurement sweep's "
                                 "cell? --training takes a training sweep's folder)")
            _check_schema(table, kind)
            frames[kind].append(table.to_pandas())
        except ValueError as err:
            unreadable.append(f"{path.name}: {err}")
        except Exception as err:  # noqa: BLE001 - pyarrow conversion of a damaged file: named, never raised
            unreadable.append(f"{path.name}: unusable values ({type(err).__name__}: {one_line(err)})")
    if stale:
        notes.append(f"{stale} cell file(s) the recorded sweep does not plan left out (an older config's)")
    if not frames[TRAIN_KIND]:
        why = f"; {len(unreadable)} unreadable, first {unreadable[0]}" if unreadable else ""
        raise ConfigError(f"--training {folder}: no finished training run (kind={TRAIN_KIND!r}){why}")
    runs = pd.concat(frames[TRAIN_KIND], ignore_index=True)
    duplicated = runs.duplicated(RUN_KEY)
    if duplicated.any():
        first = runs.loc[duplicated, RUN_KEY].iloc[0].to_dict()
        raise ConfigError(f"--training {folder}: two runs are {first} (results of different configs mixed)")
    runs = derive(runs)
    noise = pd.concat(frames[NOISE_KIND], ignore_index=True) if frames[NOISE_KIND] else pd.DataFrame(
        columns=sorted({*NOISE_TEXT, *NOISE_NUMBER, *NOISE_INTEGER, *NOISE_BOOLEAN}))
    noise = noise.sort_values(["problem", "variant", "batch_size", "path_target"], kind="stable").reset_index(drop=True)
    return TrainingResults(str(folder), runs, noise, planned, tuple(unreadable), tuple(failed), tuple(notes))


def _failure_line(path: Path) -> str:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        what = " / ".join(str(record[k]) for k in ("problem", "variant", "batch_size", "lr", "seed_index")
                          if k in record)
        return f"{what}: {one_line(Exception(record.get('error', '')))} ({path.name})"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, AttributeError) as err:
        return f"{path.name}: unreadable failure record ({type(err).__name__})"


def derive(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows sorted by RUN_KEY with the columns the statistics use: `arm` (the variant, with the optimizer when
    the sweep has several), `score` and `auc_score` (clipped at SCORE_FLOOR, a diverged run exactly the floor; NaN
    without J*), `failure` (failed or diverged; NaN where undefined), `reached` (samples_to_90 not censored)."""
    runs = runs.sort_values(RUN_KEY, kind="stable").reset_index(drop=True)
    several = runs["optimizer"].nunique() > 1
    arm = runs["variant"] + (" [" + runs["optimizer"] + "]" if several else "")
    diverged = runs["diverged"].astype(bool)
    defined = runs["J_star"].notna()
    score = runs["final_score"].astype(float).where(~diverged, SCORE_FLOOR).clip(lower=SCORE_FLOOR)
    auc = runs["auc"].astype(float).where(~diverged, SCORE_FLOOR).clip(lower=SCORE_FLOOR)
    failure = (runs["failed"].astype(bool) | diverged).astype(float).where(runs["failed_defined"].astype(bool)
                                                                           | diverged)
    return runs.assign(arm=arm, score=score.where(defined), auc_score=auc.where(defined), failure=failure,
                       reached=runs[TARGET_COLUMN].notna() & ~diverged, lr=runs["lr"].astype(float))


# --------------------------------------------------------------------------------------------- statistics


def iqm(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean along `axis` (scipy's trim_mean at 25%, rliable's aggregate_iqm for one task)."""
    return stats.trim_mean(values, 0.25, axis=axis)


def optimality_gap(values: np.ndarray, axis: int = -1, gamma: float = 1.0) -> np.ndarray:
    return gamma - np.mean(np.minimum(values, gamma), axis=axis)


STATISTICS: dict[str, Callable[..., np.ndarray]] = {
    "IQM": iqm, "Median": lambda v, axis=-1: np.median(v, axis=axis), "Mean": lambda v, axis=-1: np.mean(v, axis=axis),
    "Optimality gap": optimality_gap}


def stable_generator(seed: int, *key: object) -> np.random.Generator:
    """A Generator seeded from (seed, a hash of the key's text): each setting has its own stream, so adding a
    setting to a sweep does not move the others' intervals, and the same rows give the same numbers."""
    digest = hashlib.sha256(json.dumps([str(k) for k in key]).encode()).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])


def bootstrap(values: np.ndarray, statistic: Callable[..., np.ndarray], rng: np.random.Generator, reps: int,
              confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(statistic, lo, hi): the percentile bootstrap interval of statistic(values) resampling the values (the
    independent runs) with replacement. NaN interval with fewer than 2 values."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return math.nan, math.nan, math.nan
    point = float(statistic(values))
    if values.size < 2:
        return point, math.nan, math.nan
    draws = statistic(values[rng.integers(0, values.size, size=(reps, values.size))], axis=-1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    return point, float(low), float(high)


def paired_bootstrap(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, reps: int,
                     confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean of x − y, lo, hi): a percentile bootstrap over pairs: each resample draws pair indices with
    replacement and takes both members of each drawn pair, so the seed's shared part cancels. x[i], y[i] must be
    runs with the same seed (index)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples need the same shape, got {x.shape} and {y.shape}")
    return bootstrap(x - y, lambda v, axis=-1: np.mean(v, axis=axis), rng, reps, confidence)


def clopper_pearson(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    if trials == 0:
        return math.nan, math.nan
    interval = stats.binomtest(successes, trials).proportion_ci(confidence, method="exact")
    return float(interval.low), float(interval.high)


def halves(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(selection half: even seed index, evaluation half: odd seed index)."""
    even = runs["seed_index"] % 2 == 0
    return runs[even], runs[~even]


GROUP = ["problem", "arm", "optimizer", "batch_size"]


def select_learning_rates(runs: pd.DataFrame) -> pd.DataFrame:
    """The split-half learning rate of each (problem, arm, N): maximal IQM of the final score over the
    selection half (even seed indices) only; ties → the larger mean, then the smaller learning rate.
    → [problem, arm, optimizer, variant, batch_size, lr, selection_runs, selection_iqm, selection_mean]"""
    selection, _ = halves(runs[runs["score"].notna()])
    records = []
    for (problem, arm, optimizer, batch_size), group in selection.groupby(GROUP, sort=True):
        candidates = []
        for lr, at_lr in group.groupby("lr", sort=True):
            scores = at_lr["score"].to_numpy(dtype=float)
            candidates.append((-float(iqm(scores)), -float(scores.mean()), float(lr), len(scores)))
        best = min(candidates)
        records.append({"problem": problem, "arm": arm, "optimizer": optimizer,
                        "variant": group["variant"].iloc[0], "batch_size": int(batch_size), "lr": best[2],
                        "selection_runs": best[3], "selection_iqm": -best[0], "selection_mean": -best[1]})
    return pd.DataFrame(records, columns=["problem", "arm", "optimizer", "variant", "batch_size", "lr",
                                          "selection_runs", "selection_iqm", "selection_mean"])


def at_selected(runs: pd.DataFrame, selected: pd.DataFrame) -> pd.DataFrame:
    """The evaluation-half runs (odd seed indices) at each (problem, arm, N)'s selected learning rate."""
    _, evaluation = halves(runs)
    return evaluation.merge(selected[["problem", "arm", "batch_size", "lr"]], on=["problem", "arm", "batch_size", "lr"])


def _interval_record(values: np.ndarray, seed: int, reps: int, key: tuple, prefix: str) -> dict:
    out = {}
    for name, statistic in STATISTICS.items():
        point, low, high = bootstrap(values, statistic, stable_generator(seed, *key, prefix, name), reps)
        column = f"{prefix}_{name.lower().replace(' ', '_')}"
        out.update({column: point, f"{column}_lo": low, f"{column}_hi": high})
    return out


def summarize_runs(runs: pd.DataFrame, keys: Sequence[str], seed: int, reps: int,
                   with_auc: bool = True) -> pd.DataFrame:
    """Per group of `keys`: runs, failure and divergence fractions, IQM/median/mean/optimality gap of the final
    score (and of the AUC) with bootstrap intervals over the runs, the fraction reaching 90% of the optimum
    (Clopper–Pearson) and the median samples to it among those that did (bootstrap over the successes)."""
    records = []
    for key, group in runs.groupby(list(keys), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        record = dict(zip(keys, key))
        failures = group["failure"].dropna()
        successes = group.loc[group["reached"], TARGET_COLUMN].to_numpy(dtype=float)
        reach_lo, reach_hi = clopper_pearson(len(successes), len(group))
        median, median_lo, median_hi = bootstrap(successes, STATISTICS["Median"],
                                                 stable_generator(seed, *key, "reach"), reps)
        record.update({
            "runs": len(group), "spread": bool(np.ptp(group["score"].to_numpy(dtype=float)) > 0),
            "failure_fraction": float(failures.mean()) if len(failures) else math.nan,
            "failure_defined": len(failures), "diverged": int(group["diverged"].sum()),
            **_interval_record(group["score"].to_numpy(dtype=float), seed, reps, key, "score"),
            **(_interval_record(group["auc_score"].to_numpy(dtype=float), seed, reps, key, "auc")
               if with_auc else {}),
            "reached_fraction": len(successes) / len(group), "reached_lo": reach_lo, "reached_hi": reach_hi,
            "reached_runs": len(successes), "samples_to_90_median": median, "samples_to_90_median_lo": median_lo,
            "samples_to_90_median_hi": median_hi,
        })
        records.append(record)
    return pd.DataFrame(records)


def control_arms(runs: pd.DataFrame) -> list[str]:
    return sorted(set(runs.loc[runs["estimator"] == CONTROL_ESTIMATOR, "arm"]))


def vanilla_arms(runs: pd.DataFrame) -> list[str]:
    """REINFORCE without a baseline: estimator reinforce whose options say baseline none."""
    def vanilla(options: str) -> bool:
        try:
            return json.loads(options).get("baseline", "none") == "none"
        except (json.JSONDecodeError, AttributeError):
            return False
    is_reinforce = runs["estimator"] == "reinforce"
    return sorted(set(runs.loc[is_reinforce & runs["estimator_options"].map(vanilla), "arm"]))


def comparison_pairs(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """(X, Y) for every arm X but the exact control against the control and against vanilla REINFORCE."""
    controls = control_arms(runs)
    arms = [a for a in sorted(set(runs["arm"])) if a not in controls]
    pairs = []
    for reference in [*controls, *vanilla_arms(runs)]:
        pairs += [(x, reference) for x in arms if x != reference and (x, reference) not in pairs]
    return pairs


PAIRED_COLUMNS = ["problem", "batch_size", "lr", "x", "y", "which", "pairs", "difference", "lo", "hi", "x_wins",
                  "spread"]


def paired_differences(runs: pd.DataFrame, selected: pd.DataFrame, pairs: Sequence[tuple[str, str]], seed: int,
                       reps: int) -> pd.DataFrame:
    """Final score X − Y paired by seed at the same (problem, N, learning rate, seed index): at X's selected
    learning rate on the evaluation half (which="selected"), and at every learning rate over all seeds
    (which="every lr"). Mean difference with `paired_bootstrap`'s interval; x_wins: the fraction of pairs with X
    above Y."""
    scored = runs[runs["score"].notna()]
    wide = scored.pivot_table(index=["problem", "batch_size", "lr", "seed_index"], columns="arm", values="score",
                              aggfunc="first")
    chosen = {(r.problem, r.arm, r.batch_size): r.lr for r in selected.itertuples()}
    records = []

    def add(problem, batch_size, lr, x, y, which, frame):
        both = frame[[x, y]].dropna()
        if len(both) == 0:
            return
        d = both[x].to_numpy() - both[y].to_numpy()
        point, low, high = paired_bootstrap(both[x].to_numpy(), both[y].to_numpy(),
                                            stable_generator(seed, problem, batch_size, lr, x, y, which), reps)
        records.append({"problem": problem, "batch_size": int(batch_size), "lr": float(lr), "x": x, "y": y,
                        "which": which, "pairs": len(both), "difference": point, "lo": low, "hi": high,
                        "x_wins": float((d > 0).mean()), "spread": bool(np.ptp(d) > 0)})

    for (problem, batch_size, lr), frame in wide.groupby(level=["problem", "batch_size", "lr"], sort=True):
        for x, y in pairs:
            if x not in frame or y not in frame:
                continue
            add(problem, batch_size, lr, x, y, "every lr", frame)
            if chosen.get((problem, x, batch_size)) == lr:
                odd = frame[frame.index.get_level_values("seed_index") % 2 == 1]
                add(problem, batch_size, lr, x, y, "selected", odd)
    out = pd.DataFrame(records, columns=PAIRED_COLUMNS)
    return out.sort_values(["which", "problem", "batch_size", "x", "y", "lr"], kind="stable").reset_index(drop=True)


CURVE_COLUMNS = ["problem", "arm", "batch_size", "lr", "samples", "runs", "iqm", "lo", "hi"]


def curve_matrix(group: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(samples [P], scores [runs, P]) of the runs of one setting on the evaluated points of its longest
    non-diverged run, every score clipped at SCORE_FLOOR; a diverged run scores the floor from its divergence
    on. Points where a run has no evaluation are NaN."""
    lengths = [len(s) for s in group["curve_samples"]]
    longest = int(np.argmax(lengths))
    grid = np.asarray(group["curve_samples"].iloc[longest], dtype=np.int64)
    matrix = np.full((len(group), len(grid)), np.nan)
    for i, (samples, score, diverged) in enumerate(zip(group["curve_samples"], group["curve_score"],
                                                       group["diverged"])):
        samples, score = np.asarray(samples, dtype=np.int64), np.asarray(score, dtype=float)
        score = np.where(np.isfinite(score), score, SCORE_FLOOR)
        position = {int(s): j for j, s in enumerate(samples)}
        matrix[i] = [score[position[s]] if s in position else np.nan for s in grid]
        if diverged:  # the run stopped at its divergence: the floor at every point after its last evaluation
            matrix[i, grid > (samples[-1] if len(samples) else -1)] = SCORE_FLOOR
    return grid, np.maximum(matrix, SCORE_FLOOR)


def sample_efficiency(evaluation: pd.DataFrame, seed: int, reps: int) -> pd.DataFrame:
    """IQM of the normalized score against training samples, per (problem, arm, N) at the selected learning rate
    over the evaluation half, with pointwise bootstrap intervals over runs (rliable's sample-efficiency curve);
    CURVE_POINTS evenly spaced points. → CURVE_COLUMNS"""
    records = []
    for (problem, arm, batch_size, lr), group in evaluation[evaluation["score"].notna()].groupby(
            ["problem", "arm", "batch_size", "lr"], sort=True):
        grid, matrix = curve_matrix(group)
        keep = np.unique(np.linspace(0, len(grid) - 1, min(CURVE_POINTS, len(grid))).round().astype(int))
        grid, matrix = grid[keep], matrix[:, keep]
        complete = ~np.isnan(matrix).any(axis=0)
        grid, matrix = grid[complete], matrix[:, complete]
        n = matrix.shape[0]
        point = iqm(matrix, axis=0)
        if n >= 2:
            rng = stable_generator(seed, problem, arm, batch_size, lr, "curve")
            draws = iqm(matrix[rng.integers(0, n, size=(reps, n))], axis=1)  # [reps, P]
            alpha = (1 - CONFIDENCE) / 2
            low, high = np.quantile(draws, [alpha, 1 - alpha], axis=0)
        else:
            low = high = np.full(len(grid), np.nan)
        records += [{"problem": problem, "arm": arm, "batch_size": int(batch_size), "lr": float(lr),
                     "samples": int(s), "runs": n, "iqm": float(p), "lo": float(lo), "hi": float(hi)}
                    for s, p, lo, hi in zip(grid, point, low, high)]
    return pd.DataFrame(records, columns=CURVE_COLUMNS)


def learning_rate_curves(runs: pd.DataFrame, seed: int, reps: int) -> pd.DataFrame:
    """Final score against the learning rate per (problem, arm, N), all seeds: IQM [CI], mean, failure fraction."""
    records = []
    for (problem, arm, batch_size, lr), group in runs[runs["score"].notna()].groupby(
            ["problem", "arm", "batch_size", "lr"], sort=True):
        scores = group["score"].to_numpy(dtype=float)
        point, low, high = bootstrap(scores, iqm, stable_generator(seed, problem, arm, batch_size, lr, "lr"), reps)
        failures = group["failure"].dropna()
        records.append({"problem": problem, "arm": arm, "batch_size": int(batch_size), "lr": float(lr),
                        "runs": len(scores), "iqm": point, "lo": low, "hi": high, "mean": float(scores.mean()),
                        "spread": bool(np.ptp(scores) > 0),
                        "failure_fraction": float(failures.mean()) if len(failures) else math.nan,
                        "diverged": int(group["diverged"].sum())})
    return pd.DataFrame(records, columns=["problem", "arm", "batch_size", "lr", "runs", "iqm", "lo", "hi", "mean",
                                          "spread", "failure_fraction", "diverged"])


def verdicts(per_problem: pd.DataFrame, controls: Sequence[str]) -> pd.DataFrame:
    """Per (problem, N): the recommended arm (not the exact control) at its selected learning rate on the evaluation
    half, its interval and failure fraction, the arms it is tied with, and the control's IQM. The arm with the
    highest final-score IQM and the arms whose IQM intervals overlap its interval form the leading group (the data
    do not separate them by IQM); the recommendation is the one of that group with the lowest failure fraction,
    then the highest IQM, because IQM ignores failures of fewer than a quarter of the runs (a run that commits to a
    sub-optimal arm 20% of the time can still have the top IQM). The others of the group are its ties."""
    records = []
    for (problem, batch_size), group in per_problem.groupby(["problem", "batch_size"], sort=True):
        candidates = group[~group["arm"].isin(controls)].sort_values(["score_iqm", "arm"], ascending=[False, True],
                                                                     kind="stable")
        if candidates.empty:
            continue
        top = candidates.iloc[0]
        low, high = _bounds(top, "score_iqm")
        leading = candidates[[_bounds(r, "score_iqm")[1] >= low and _bounds(r, "score_iqm")[0] <= high
                              for _, r in candidates.iterrows()]]
        leading = leading.assign(_failure=leading["failure_fraction"].fillna(math.inf)).sort_values(
            ["_failure", "score_iqm", "arm"], ascending=[True, False, True], kind="stable")
        best = leading.iloc[0]
        ties = [arm for arm in leading["arm"].iloc[1:]]
        control = group[group["arm"].isin(controls)]
        records.append({"problem": problem, "batch_size": int(batch_size), "best": best["arm"], "lr": best["lr"],
                        "runs": int(best["runs"]), "iqm": best["score_iqm"], "lo": best["score_iqm_lo"],
                        "hi": best["score_iqm_hi"], "failure_fraction": best["failure_fraction"],
                        "ties": "; ".join(ties),
                        "control": control["arm"].iloc[0] if len(control) else "",
                        "control_iqm": control["score_iqm"].iloc[0] if len(control) else math.nan,
                        "control_lo": control["score_iqm_lo"].iloc[0] if len(control) else math.nan,
                        "control_hi": control["score_iqm_hi"].iloc[0] if len(control) else math.nan})
    return pd.DataFrame(records, columns=["problem", "batch_size", "best", "lr", "runs", "iqm", "lo", "hi",
                                          "failure_fraction", "ties", "control", "control_iqm", "control_lo",
                                          "control_hi"])


def _bounds(row, column: str) -> tuple[float, float]:
    """An interval for overlap tests: the point itself when the interval is undefined (fewer than 2 runs)."""
    low, high, point = row[f"{column}_lo"], row[f"{column}_hi"], row[column]
    return (point, point) if not (math.isfinite(low) and math.isfinite(high)) else (low, high)


@dataclass(frozen=True)
class Across:
    """rliable across problems at one N."""

    intervals: pd.DataFrame  # INTERVAL_COLUMNS
    improvements: pd.DataFrame  # IMPROVEMENT_COLUMNS
    profiles: pd.DataFrame  # PROFILE_COLUMNS
    failures: pd.DataFrame  # [batch_size, arm, runs, failure_fraction, diverged]
    notes: list[str]


def across_problems(evaluation: pd.DataFrame, pairs: Sequence[tuple[str, str]], seed: int, reps: int) -> Across:
    """IQM, median, mean and optimality gap (γ = 1) of the clipped final score over runs × problems, P(X > Y) for
    `pairs`, and performance profiles, with rliable at each N (tasks: problems; runs: evaluation-half seeds at each
    arm's selected learning rate), through reports/rliable_stats.py's helpers."""
    frame = evaluation[evaluation["score"].notna()].rename(columns={"arm": "variant_arm"})
    frame = frame.assign(variant=frame["variant_arm"], repetition=frame["seed_index"], final_score=frame["score"])
    arms = sorted(set(frame["variant"]))
    intervals, improvements, profiles, failures, notes = [], [], [], [], []
    for batch_size in sorted(int(n) for n in frame["batch_size"].unique()):
        matrices = score_matrices(frame[["problem", "variant", "batch_size", "repetition", "final_score"]],
                                  FINAL_SCORE, batch_size, arms)
        notes += matrices.notes
        if not matrices.score_dict:
            continue
        interval, profile = aggregates_and_profiles(matrices, FINAL_SCORE, batch_size, reps, seed)
        improvement = tagged_improvements(matrices, FINAL_SCORE, batch_size, pairs, reps, seed)
        intervals.append(interval)
        improvements.append(improvement)
        profiles.append(profile)
        at_n = frame[(frame["batch_size"] == batch_size) & frame["problem"].isin(matrices.tasks)]
        for arm in matrices.score_dict:
            of_arm = at_n[at_n["variant"] == arm]
            defined = of_arm["failure"].dropna()
            failures.append({"batch_size": batch_size, "arm": arm, "runs": len(of_arm),
                             "failure_fraction": float(defined.mean()) if len(defined) else math.nan,
                             "diverged": int(of_arm["diverged"].sum())})
    return Across(concat(intervals, INTERVAL_COLUMNS), concat(improvements, IMPROVEMENT_COLUMNS),
                  concat(profiles, PROFILE_COLUMNS),
                  pd.DataFrame(failures, columns=["batch_size", "arm", "runs", "failure_fraction", "diverged"]), notes)


NOISE_TABLE_COLUMNS = ["problem", "variant", "batch_size", "path_target", "path_score", "reps", "grad_norm_sq", "b_simple", "b_noise", "curvature",
                       "eps_max", "eps_opt", "model_applies", "selected_lr", "best_lr_all_seeds", "lr_low", "lr_high",
                       "ratio", "caveat"]


def noise_scale_table(noise: pd.DataFrame, runs: pd.DataFrame, selected: pd.DataFrame,
                      lr_curves: pd.DataFrame) -> pd.DataFrame:
    """Predicted ε_opt(N) at θ₀ and further along the exact-gradient path (`path_target`: the normalized score the
    point was asked for, `path_score` the one it has) against the measured best SGD learning rate at that N: the
    split-half selected one and the grid's best IQM over all seeds; ratio = selected / ε_opt. Empty when the sweep
    measured no noise scale."""
    if noise.empty:
        return pd.DataFrame(columns=NOISE_TABLE_COLUMNS)
    sgd = runs[runs["optimizer"] == "sgd"]
    records = []
    for r in noise.itertuples():
        arms = sorted(set(sgd.loc[(sgd["problem"] == r.problem) & (sgd["variant"] == r.variant), "arm"]))
        arm = arms[0] if arms else None
        chosen = selected[(selected["problem"] == r.problem) & (selected["arm"] == arm)
                          & (selected["batch_size"] == r.batch_size)]
        curve = lr_curves[(lr_curves["problem"] == r.problem) & (lr_curves["arm"] == arm)
                          & (lr_curves["batch_size"] == r.batch_size)]
        grid = sgd.loc[(sgd["problem"] == r.problem) & (sgd["variant"] == r.variant)
                       & (sgd["batch_size"] == r.batch_size), "lr"]
        selected_lr = float(chosen["lr"].iloc[0]) if len(chosen) else math.nan
        best_all = float(curve.sort_values(["iqm", "lr"], ascending=[False, True]).iloc[0]["lr"]) if len(curve) \
            else math.nan
        applies = bool(r.model_applies)
        eps = float(r.eps_opt) if applies else math.nan
        if not applies:
            caveat = ("model does not apply: the loss is not convex along G at θ₀ (curvature GᵀH_L G ≤ 0, or "
                      "GᵀH_L G + tr(H_L Σ_N) ≤ 0), so it predicts no optimal step")
        elif len(grid) and not (grid.min() <= eps <= grid.max()):
            caveat = "ε_opt lies outside the learning-rate grid"
        else:
            caveat = ""
        records.append({"problem": r.problem, "variant": r.variant, "batch_size": int(r.batch_size),
                        "path_target": float(r.path_target), "path_score": float(r.path_score), "reps": int(r.reps), "grad_norm_sq": float(r.grad_norm_sq), "b_simple": float(r.b_simple),
                        "b_noise": float(r.b_noise), "curvature": float(r.curvature), "eps_max": float(r.eps_max),
                        "eps_opt": eps, "model_applies": applies, "selected_lr": selected_lr,
                        "best_lr_all_seeds": best_all, "lr_low": float(grid.min()) if len(grid) else math.nan,
                        "lr_high": float(grid.max()) if len(grid) else math.nan,
                        "ratio": selected_lr / eps if applies and eps > 0 else math.nan, "caveat": caveat})
    return pd.DataFrame(records, columns=NOISE_TABLE_COLUMNS)


COMMITMENT_COLUMNS = ["problem", "arm", "optimizer", "batch_size", "lr", "runs", "sub_optimal", "fraction", "lo", "hi",
                      "optimal", "undecided"]
TREND_COLUMNS = ["problem", "arm", "optimizer", "batch_size", "learning_rates", "seeds", "statistic", "p_value",
                 "permutations"]
TREND_PERMUTATIONS = 10_000


def _with_arms(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs on problems with arms (`arm_outcome` is "" elsewhere)."""
    return runs[runs["arm_outcome"] != ""]


def commitment_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Where runs on problems with arms ended (`arm_outcome`, e.g. the softmax bandit): per (problem, arm, optimizer,
    N, lr) the runs settled on a sub-optimal arm (the commitment of Chung et al. 2021) with a Clopper–Pearson 95%
    interval, and the runs settled on the optimum or undecided at the end of the budget (an undecided run may still
    commit: then the fraction is a lower bound, and the page says so)."""
    records = []
    for key, group in _with_arms(runs).groupby(GROUP + ["lr"], sort=True):
        outcome = group["arm_outcome"]
        committed, total = int((outcome == "sub-optimal").sum()), len(group)
        lo, hi = clopper_pearson(committed, total)
        records.append({**dict(zip(GROUP + ["lr"], key)), "runs": total, "sub_optimal": committed,
                        "fraction": committed / total, "lo": lo, "hi": hi, "optimal": int((outcome == "optimal").sum()),
                        "undecided": int((outcome == "undecided").sum())})
    return pd.DataFrame(records, columns=COMMITMENT_COLUMNS)


def commitment_trend(runs: pd.DataFrame, seed: int, permutations: int = TREND_PERMUTATIONS) -> pd.DataFrame:
    """Does commitment grow with the learning rate? Per (problem, arm, optimizer, N) with ≥ 2 learning rates, the
    statistic T = Σ_runs log(lr)·[sub-optimal] and a one-sided permutation p-value: under H0 (given its seed, a
    run's outcome does not depend on the learning rate) the outcomes of one seed are exchangeable across the
    learning rates, so each permutation shuffles them within every seed (the common random numbers stay paired);
    p = (1 + #{T_perm ≥ T}) / (1 + permutations), seeded per setting. Only seeds run at every learning rate count."""
    records = []
    for key, group in _with_arms(runs).groupby(GROUP, sort=True):
        table = group.pivot_table(index="seed_index", columns="lr", values="arm_outcome", aggfunc="first")
        table = table.dropna()
        if table.shape[1] < 2 or table.shape[0] < 2:
            continue
        committed = (table.to_numpy() == "sub-optimal").astype(float)  # [seeds, lrs]
        scores = np.log(table.columns.to_numpy(dtype=float))  # [lrs]
        observed = float((committed * scores).sum())
        rng = stable_generator(seed, "commitment trend", *key)
        order = rng.random((permutations, *committed.shape)).argsort(axis=-1)  # [R, seeds, lrs]
        shuffled = np.take_along_axis(np.broadcast_to(committed, order.shape), order, axis=-1)
        null = (shuffled * scores).sum(axis=(1, 2))
        p_value = (1 + int((null >= observed - 1e-12).sum())) / (1 + permutations)
        records.append({**dict(zip(GROUP, key)), "learning_rates": table.shape[1], "seeds": table.shape[0],
                        "statistic": observed, "p_value": p_value, "permutations": permutations})
    return pd.DataFrame(records, columns=TREND_COLUMNS)


CRITICAL_COLUMNS = ["problem", "arm", "optimizer", "batch_sizes", "updates_to_target", "best_lrs", "e_min", "b_crit",
                    "b_crit_lo", "b_crit_hi", "s_min", "fit", "b_noise_theta0"]


def _updates_matrix(group: pd.DataFrame, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(U [N, lr, seed], lrs): updates to 90% of J* − J(θ₀) of every run of one (problem, arm, optimizer), +∞ where
    censored (the target not reached within the budget) or the run is missing."""
    lrs = np.array(sorted(set(group["lr"])))
    seeds = sorted(set(group["seed_index"]))
    matrix = np.full((len(sizes), len(lrs), len(seeds)), math.inf)
    n_at, lr_at, seed_at = ({v: i for i, v in enumerate(values)} for values in (sizes, lrs, seeds))
    updates = group["updates_to_90"].astype(float).where(group["reached"], math.inf)
    for n, lr, s, u in zip(group["batch_size"], group["lr"], group["seed_index"], updates):
        matrix[n_at[n], lr_at[lr], seed_at[s]] = u
    return matrix, lrs


def _fewest_updates(matrix: np.ndarray) -> np.ndarray:
    """E(N) [..., N]: over the learning rates, the fewest median updates to target, each learning rate's median over
    its seeds with a censored run counting +∞ (finite only where at least half of them reached the target: never a
    median of the successes alone).  matrix [..., N, lr, seed] → [..., N]."""
    return np.median(matrix, axis=-1).min(axis=-1)


def fit_critical_batch(batch_sizes: np.ndarray, updates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E_min, B_crit) of McCandlish et al.'s E(N) = E_min (1 + B_crit / N) (their eq. 2.11, updates to a target at
    batch size N; equivalently samples S(N) = N·E(N) = S_min (1 + N / B_crit), S_min = E_min·B_crit), by least
    squares of E on 1/N over the batch sizes with a finite E: E = a + b/N, E_min = a, B_crit = b / a. NaN where the
    model does not fit (a ≤ 0 or b < 0: the updates to target do not fall with N as it says) or fewer than 2 batch
    sizes have a finite E.  batch_sizes [N], updates [..., N] → two arrays [...]."""
    x = np.broadcast_to(1.0 / np.asarray(batch_sizes, dtype=float), updates.shape)
    keep = np.isfinite(updates)
    count = keep.sum(-1)
    x_mean = np.where(keep, x, 0).sum(-1) / np.maximum(count, 1)
    y_mean = np.where(keep, updates, 0).sum(-1) / np.maximum(count, 1)
    dx = np.where(keep, x - x_mean[..., None], 0)
    dy = np.where(keep, updates - y_mean[..., None], 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (dx * dy).sum(-1) / (dx * dx).sum(-1)
        intercept = y_mean - slope * x_mean
        fits = (count >= 2) & (intercept > 0) & (slope >= 0)
        return np.where(fits, intercept, np.nan), np.where(fits, slope / intercept, np.nan)


def critical_batch(runs: pd.DataFrame, noise: pd.DataFrame, seed: int, reps: int) -> pd.DataFrame:
    """Per (problem, arm, optimizer) with ≥ 2 batch sizes: the updates to 90% at each N (best learning rate, all
    seeds), the fitted E_min and B_crit with a 95% percentile bootstrap interval over seed indices (a resample draws
    seed indices with replacement and keeps every run of a drawn seed, at every N and learning rate: the common
    random numbers stay paired; resamples where the model does not fit are left out of the interval and counted in
    `fit`), S_min = E_min·B_crit, and B_noise at θ₀ at the largest N beside it (McCandlish's prediction B_crit ≈
    B_noise). `fit`: "exact" with 2 batch sizes (two points, two unknowns: no check of the model), "least
    squares" with more, "does not fit" where the point estimate does not."""
    records = []
    for (problem, arm, optimizer), group in runs[runs["score"].notna()].groupby(["problem", "arm", "optimizer"]):
        sizes = np.array(sorted(set(group["batch_size"])))
        if len(sizes) < 2:
            continue
        matrix, lrs = _updates_matrix(group, sizes)  # [N, lr, seed]
        updates = _fewest_updates(matrix)
        best = [lrs[np.median(matrix[i], axis=-1).argmin()] if math.isfinite(e) else math.nan
                for i, e in enumerate(updates)]
        e_min, b_crit = (float(v) for v in fit_critical_batch(sizes, updates))
        lo = hi = math.nan
        unfit = 0
        if math.isfinite(b_crit) and matrix.shape[-1] >= 2:
            rng = stable_generator(seed, "critical batch", problem, arm, optimizer)
            draws = rng.integers(0, matrix.shape[-1], size=(reps, matrix.shape[-1]))  # [R, seeds]
            resampled = np.moveaxis(matrix[:, :, draws], 2, 0)  # [R, N, lr, seeds]
            boot = fit_critical_batch(sizes, _fewest_updates(resampled))[1]
            unfit = int(np.isnan(boot).sum())
            if np.isfinite(boot).sum() >= 2:
                lo, hi = (float(v) for v in np.nanpercentile(boot, [2.5, 97.5]))
        variant = group["variant"].iloc[0]
        at_start = noise[(noise["problem"] == problem) & (noise["variant"] == variant) & (noise["path_target"] == 0)
                         & noise["model_applies"].astype(bool)] if len(noise) else noise
        b_noise = float(at_start.sort_values("batch_size")["b_noise"].iloc[-1]) if len(at_start) else math.nan
        kind = "exact" if np.isfinite(updates).sum() == 2 else "least squares"
        records.append({"problem": problem, "arm": arm, "optimizer": optimizer,
                        "batch_sizes": " ".join(str(int(n)) for n in sizes),
                        "updates_to_target": " ".join(f"{e:g}" if math.isfinite(e) else "∞" for e in updates),
                        "best_lrs": " ".join(f"{lr:g}" if math.isfinite(lr) else "—" for lr in best),
                        "e_min": e_min, "b_crit": b_crit, "b_crit_lo": lo, "b_crit_hi": hi,
                        "s_min": e_min * b_crit if math.isfinite(b_crit) else math.nan,
                        "fit": (f"{kind}; {unfit} of {reps} resamples do not fit" if unfit else kind)
                        if math.isfinite(b_crit) else "does not fit", "b_noise_theta0": b_noise})
    return pd.DataFrame(records, columns=CRITICAL_COLUMNS)


# ----------------------------------------------------------------------------------------------- analysis

TRAINING_TABLES = ("training_runs.csv", "training_selected_lr.csv", "training_per_problem.csv",
                   "training_verdicts.csv", "training_paired.csv", "training_curves.csv", "training_lr.csv",
                   "training_aggregates.csv", "training_improvement.csv", "training_profiles.csv",
                   "training_failures.csv", "training_noise_scale.csv", "training_commitment.csv",
                   "training_commitment_trend.csv", "training_critical_batch.csv")
RUN_CSV_COLUMNS = ["problem", "arm", "variant", "estimator", "optimizer", "batch_size", "budget", "lr", "seed_index",
                   "seed", "updates", "J0", "J_star", "final_J", "final_score", "score", "auc", "auc_score",
                   "samples_to_50", "samples_to_90", "failed", "failed_defined", "diverged", "diverged_at",
                   "nonfinite", "env_steps", "seconds"]


@dataclass(frozen=True)
class TrainingAnalysis:
    results: TrainingResults
    scored: pd.DataFrame  # runs with a normalized score
    selected: pd.DataFrame
    evaluation: pd.DataFrame  # evaluation-half runs at the selected learning rates
    per_problem: pd.DataFrame
    verdicts: pd.DataFrame
    paired: pd.DataFrame
    curves: pd.DataFrame
    lr_curves: pd.DataFrame
    across: Across
    noise: pd.DataFrame
    commitment: pd.DataFrame
    commitment_trend: pd.DataFrame
    critical: pd.DataFrame
    controls: list[str]
    vanilla: list[str]
    pairs: list[tuple[str, str]]
    seed: int
    reps: int
    notes: list[str] = field(default_factory=list)

    def tables(self) -> dict[str, pd.DataFrame]:
        runs = self.results.runs
        out = {
            "training_runs.csv": runs[[c for c in RUN_CSV_COLUMNS if c in runs]],
            "training_selected_lr.csv": self.selected, "training_per_problem.csv": self.per_problem,
            "training_verdicts.csv": self.verdicts, "training_paired.csv": self.paired,
            "training_curves.csv": self.curves, "training_lr.csv": self.lr_curves,
            "training_aggregates.csv": self.across.intervals, "training_improvement.csv": self.across.improvements,
            "training_profiles.csv": self.across.profiles, "training_failures.csv": self.across.failures,
            "training_noise_scale.csv": self.noise, "training_commitment.csv": self.commitment,
            "training_commitment_trend.csv": self.commitment_trend, "training_critical_batch.csv": self.critical,
        }
        assert tuple(sorted(out)) == tuple(sorted(TRAINING_TABLES)), "a new table belongs in TRAINING_TABLES"
        return out


def analyse_training(results: TrainingResults, seed: int, reps: int) -> TrainingAnalysis:
    """Every statistic of the Training section from the loaded rows; the same rows give the same numbers."""
    runs = results.runs
    notes = [f"problem {p} left out: no optimum J* (Capability.OPTIMUM), so no normalized score"
             for p in sorted(set(runs.loc[runs["score"].isna(), "problem"]) - set(runs.loc[runs["score"].notna(),
                                                                                         "problem"]))]
    scored = runs[runs["score"].notna()]
    seeds = sorted(set(scored["seed_index"]))
    if not any(s % 2 == 0 for s in seeds) or not any(s % 2 == 1 for s in seeds):
        notes.append("the split-half selection needs seeds with even and odd indices: "
                     f"only {seeds} present, so nothing is evaluated at a selected learning rate")
    selected = select_learning_rates(scored)
    evaluation = at_selected(scored, selected)
    per_problem = summarize_runs(evaluation, ["problem", "arm", "batch_size", "lr"], seed, reps)
    controls, vanilla = control_arms(scored), vanilla_arms(scored)
    pairs = comparison_pairs(scored)
    lr_curves = learning_rate_curves(scored, seed, reps)
    return TrainingAnalysis(
        results=results, scored=scored, selected=selected, evaluation=evaluation, per_problem=per_problem,
        verdicts=verdicts(per_problem, controls) if len(per_problem) else verdicts(
            pd.DataFrame(columns=["problem", "batch_size", "arm", "score_iqm"]), controls),
        paired=paired_differences(scored, selected, pairs, seed, reps),
        curves=sample_efficiency(evaluation, seed, reps), lr_curves=lr_curves,
        across=across_problems(evaluation, pairs, seed, reps),
        noise=noise_scale_table(results.noise, scored, selected, lr_curves), commitment=commitment_table(runs),
        commitment_trend=commitment_trend(runs, seed), critical=critical_batch(scored, results.noise, seed, reps),
        controls=controls, vanilla=vanilla,
        pairs=pairs, seed=seed, reps=reps, notes=notes)


# ----------------------------------------------------------------------------------------------- wording


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: float) -> str:
    """Three significant digits, "n/a" for a missing or non-finite value."""
    return f"{value:.3g}" if _real(value) else "n/a"


def fmt_interval(value: float, low: float, high: float) -> str:
    """"value [low, high]" with the digits its ends need to print apart; "value (no spread)" when the interval has
    zero width (every resample gave the same number: not a certainty, the runs just did not differ); just the value
    when undefined (< 2 runs). The fixed-θ sections' `findings.fmt_ci`, so both print intervals one way."""
    if not _real(value):
        return fmt(value)
    return fmt_ci(float(value), float(low), float(high))


def fmt_fraction(value: float) -> str:
    return f"{value:.0%}" if _real(value) else "n/a"
