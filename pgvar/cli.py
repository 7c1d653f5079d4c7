"""The `pgvar` command: `pgvar list`, `pgvar measure`, `pgvar train`, `pgvar sweep`, `pgvar report` (the top layer: it composes
bench/ and reports/, and nothing imports it).

Every project and numerical import is deferred to the command that needs it: `pgvar`, `pgvar --help`, `pgvar COMMAND
--help` and `pgvar --version` import neither torch nor the problems (tests/test_cli.py checks it), and `pgvar list`
imports only the registries (envs, estimators), not the harness, scipy or pandas, and does not run torch's import
(pgvar/deferred.py)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from bench.progress import INTERVAL_ENV, PROGRESS_SECONDS
from bench.reference_defaults import CACHE_ENV, DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_WORKERS, DEFAULT_SAMPLES, KINDS, \
    WORKERS_ENV

if TYPE_CHECKING:
    from envs.spec import Option


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (no usage block), exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        print(f"pgvar: error: {_one_line(message)}", file=sys.stderr)
        raise SystemExit(2)


def _load_theta(path: str):
    """The array or tensor in a .npy or .pt file (`Problem.check_theta` checks its dtype, shape and values)."""
    import numpy as np
    import torch

    from envs.spec import ConfigError

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--theta {path}: " + ("not a regular file" if file.exists() else "no such file"))
    if file.suffix not in (".npy", ".pt"):
        raise ConfigError(f"--theta {path}: expected a .npy or .pt file")
    try:
        loaded = np.load(file, allow_pickle=False) if file.suffix == ".npy" else torch.load(file, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is one user-facing error
        if file.suffix == ".npy" and isinstance(err, ValueError):  # np.load took it for a pickle and refused it
            raise ConfigError(f"--theta {path}: not an .npy array of numbers (pickles are not loaded)") from None
        raise ConfigError(f"--theta {path}: cannot read it ({type(err).__name__}: {err})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):  # np.load reads the contents, whatever the suffix says
        loaded.close()
        raise ConfigError(f"--theta {path}: an .npz archive, not one array; save θ with numpy.save")
    if file.suffix == ".pt" and not isinstance(loaded, torch.Tensor):
        raise ConfigError(f"--theta {path}: holds a {type(loaded).__name__}, not one tensor; save θ with torch.save")
    return loaded


def _describe_options(options: dict[str, Option]) -> list[str]:
    def show(value):
        if isinstance(value, tuple):
            return ",".join(f"{v:g}" for v in value)
        return str(value).lower() if isinstance(value, bool) else str(value)

    return [f"      {name} = {show(o.default)}   ({o.parser.allowed}) {o.doc}"
            + (f"; only with {o.only_if}" if o.only_if else "") for name, o in options.items()]


def cmd_list(_: argparse.Namespace) -> int:
    from envs import PROBLEMS
    from envs.gym_vector import GYM_PREFIX
    from envs.memory import MEMORY_FRACTION, format_bytes, memory_limit
    from estimators import ESTIMATORS

    print("Problems (--env NAME, options with --env-opt KEY=VALUE):")
    for name, config_class in PROBLEMS.items():
        print(f"  {name}: {config_class.doc}")
        print("\n".join(_describe_options(config_class.options())))
    print(f"  {GYM_PREFIX}<id>: any registered gymnasium id through SyncVectorEnv, MLP policy from its spaces, "
          "sampled reference (e.g. gym:CartPole-v1); options as above plus num_envs = 8 (SyncVectorEnv width)")
    print("\nEstimators (--estimator NAME, options with --est-opt KEY=VALUE):")
    for name, config_class in ESTIMATORS.items():
        print(f"  {name}: {config_class.doc}; estimates {config_class.target_text}; {config_class.bias_text}")
        print("\n".join(_describe_options(config_class.options())))
    print(f"\nSizes: a problem, estimator or measurement whose estimated peak memory exceeds {MEMORY_FRACTION:.0%} of "
          f"the available memory ({format_bytes(memory_limit())} now) is refused before anything is allocated")
    return 0


def _num(value, spec: str = ".6g", missing: str = "n/a") -> str:
    """A number of a record, where NaN and ±∞ became None: `missing` then."""
    return missing if value is None else format(value, spec)


def _fmt_ci(value, ci) -> str:
    if value is None:
        return "n/a"
    if ci is None or ci[0] is None or ci[1] is None:
        return f"{value:.6g}"
    return f"{value:.6g}  [{ci[0]:.6g}, {ci[1]:.6g}]"


def _fmt_se(value, se) -> str:
    return _num(value) if not se else f"{_num(value)} ± {se:.2g}"


def _describe_reference(record: dict) -> str:
    if record["reference_kind"] == "exact":
        return "exact"
    cached = ", from the cache" if record["reference_cached"] else f", {_num(record['reference_seconds'], '.3g')} s"
    relative = record["relative_bias_resolution"]
    return (f"sampled: {record['reference_estimator']}, {record['reference_samples']} trajectories{cached}; "
            f"bias resolution {_num(record['bias_resolution'], '.3g')}"
            + (f" = {relative:.3g} of the norm" if relative else ""))


def render_table(record: dict) -> str:
    from bench.metrics import HEAVY_TAIL_KURTOSIS, METRICS_WITH_CI, NONFINITE_LIMIT

    opts = ", ".join(f"{k}={v}" for k, v in record["estimator_options"].items())
    lines = [
        f"{record['env']} ({record['num_params']} parameters, γ={_num(record['gamma'], 'g')}, H={record['horizon']}), "
        f"J(θ) = {_fmt_se(record['objective'], record['objective_se'])}, ‖{record['target']}‖ = "
        f"{_num(record['reference_norm'])} ({_describe_reference(record)})",
        f"{record['estimator']} ({opts}): target {record['target']}, declared "
        + ("unbiased" if record["declared_unbiased"] else "biased"),
        f"N = {record['batch_size']} trajectories × M = {record['reps']} batches, seed {record['seed']}",
        "",
        f"{'metric':<18} value  [95% CI]",
    ]
    for name in METRICS_WITH_CI:
        lines.append(f"{name:<18} {_fmt_ci(record[name], record[name + '_ci'])}")
    lines.append(f"{'bias_pvalue':<18} {_fmt_ci(record['bias_pvalue'], None)}  (H0: E ĝ = {record['target']})")
    lines.append(f"{'nonfinite':<18} {record['nonfinite']} of {record['reps']} estimates"
                 + (" (excluded from every metric above)" if record["nonfinite"] else ""))
    if record["estimator_info"]:
        lines.append(f"{'estimator':<18} " + ", ".join(f"{k}={v}" for k, v in record["estimator_info"].items()))
    if record["heavy_tailed"]:
        lines.append(
            f"warning: heavy-tailed estimates (tail kurtosis {_num(record['tail_kurtosis'], '.3g', 'undefined')}, "
            f"limit {HEAVY_TAIL_KURTOSIS:g}): the CIs are too narrow and the p-value optimistic at this M; raise --reps "
            "or --batch-size"
        )
    # .get: records written before these flags existed have none.
    if (record.get("nonfinite_fraction") or 0) > NONFINITE_LIMIT:
        lines.append(
            f"warning: {record['nonfinite_fraction']:.1%} of the estimates are non-finite (limit "
            f"{NONFINITE_LIMIT:.0%}): the metrics above are those of the finite remainder, not of the estimator"
        )
    if record.get("degenerate"):
        lines.append(
            "warning: degenerate estimates (all negligible against the target, or all identical: e.g. importance "
            "weights that underflowed): nothing to measure, so no CI and no p-value; bring the behaviour policy "
            "closer or θ back to where the policy is not saturated"
        )
    lines.append(
        f"{'cost':<18} {_num(record['seconds'], '.3g')} s, {record['env_steps']} env steps "
        f"({_num(record['env_steps_per_estimate'], '.4g')} steps per estimate)"
    )
    return "\n".join(lines)


def cmd_measure(args: argparse.Namespace) -> int:
    from bench.harness import measure
    from bench.reference import ReferenceConfig
    from envs import make_problem
    from envs.spec import parse_key_values

    problem = make_problem(args.env, parse_key_values(args.env_opt, "--env-opt"))
    theta = _load_theta(args.theta) if args.theta else None
    reference = ReferenceConfig(args.reference, args.reference_samples, args.reference_batch_size,
                                args.reference_seed, args.reference_cache, not args.no_reference_cache)
    if args.reference_cache:  # a bad folder is the user's mistake even where the reference turns out exact
        reference.check_cache()
    result = measure(
        problem, args.estimator, args.batch_size, args.reps, args.seed, theta,
        parse_key_values(args.est_opt, "--est-opt"), show_progress=not args.quiet, reference_config=reference,
        workers=args.chunk_workers,
    )
    record = result.to_dict()
    print(json.dumps(record, ensure_ascii=False) if args.json else render_table(record))
    return 0


def render_training(record: dict, rows: int = 10) -> str:
    """The curve of a `TrainingRun.to_dict()` record every ~K/`rows` updates (and the last), then its summary."""
    opts = ", ".join(f"{k}={v}" for k, v in record["estimator_options"].items())
    curve = record["curve"]
    count = len(curve["update"])
    stride = max(1, (count - 1) // rows)
    shown = sorted({*range(0, count, stride), count - 1})
    optimum = "" if record["optimum"] is None else f", J* = {_num(record['optimum'])}"
    lines = [
        f"{record['env']} ({record['num_params']} parameters, γ={_num(record['gamma'], 'g')}, H={record['horizon']}), "
        f"J {record['objective_kind']}{optimum}",
        f"{record['estimator']} ({opts}), {record['optimizer']} lr={_num(record['lr'], 'g')}, "
        f"N = {record['batch_size']}, budget {record['budget']} trajectories = {record['updates_planned']} updates, "
        f"seed {record['seed']}",
        "",
        f"{'k':>7} {'samples':>9} {'J':>22} {'s':>10} {'‖ĝ‖':>11}",
    ]
    for i in shown:
        j = _fmt_se(curve["objective"][i], curve["objective_se"][i]) if curve["objective"][i] is not None else "—"
        lines.append(f"{curve['update'][i]:>7} {curve['samples'][i]:>9} {j:>22} {_num(curve['score'][i], '.4f'):>10} "
                     f"{_num(curve['grad_norm'][i], '.4g', '—'):>11}")

    def reach(percent: int) -> str:
        k = record[f"updates_to_{percent}"]
        return "not reached" if k is None else f"{record[f'samples_to_{percent}']} samples ({k} updates)"

    lines += [
        "",
        f"final J = {_num(record['final_objective'])}, final score s = "
        + ("-inf (diverged)" if record["diverged"] else _num(record["final_score"], ".4f"))
        + f", AUC = {'-inf' if record['diverged'] else _num(record['auc'], '.4f')}",
        f"to 50% of J* − J(θ₀): {reach(50)}; to 90%: {reach(90)}",
        f"failed (final s < {record['failure_score']:g}): {_num(record['failed'], '', 'n/a (no J*)')}; "
        f"non-finite estimates skipped: {record['nonfinite']}; {record['env_steps']} env steps, "
        f"{_num(record['seconds'], '.3g')} s",
    ]
    if record["diverged"]:
        lines.append(f"warning: diverged at update {record['diverged_at']} (θ or J non-finite); the run stopped there "
                     "and scores as the worst (-inf)")
    if record["nonfinite"]:
        lines.append(f"warning: {record['nonfinite']} updates skipped for a non-finite estimate "
                     f"(first at k = {record['nonfinite_updates'][0]})")
    return "\n".join(lines)


TRAIN_FLAGS = ("optimizer", "lr", "batch_size", "budget", "seed", "eval_episodes", "eval_every")


def cmd_train(args: argparse.Namespace) -> int:
    from bench.training import TrainSettings, train
    from envs import make_problem
    from envs.spec import parse_key_values

    settings = TrainSettings.parse({key: getattr(args, key) for key in TRAIN_FLAGS if getattr(args, key) is not None})
    problem = make_problem(args.env, parse_key_values(args.env_opt, "--env-opt"))
    theta = _load_theta(args.theta) if args.theta else None
    run = train(problem, args.estimator, settings, parse_key_values(args.est_opt, "--est-opt"), theta,
                show_progress=not args.quiet)
    record = run.to_dict()
    print(json.dumps(record, ensure_ascii=False) if args.json else render_training(record))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from bench.sweep import load_config, run_sweep
    from envs.spec import ConfigError

    config = load_config(args.config)
    summary = run_sweep(config, args.results, args.executor, args.workers, args.scheduler, args.fresh,
                        log=lambda line: print(f"pgvar: {line}", file=sys.stderr), show_progress=not args.quiet)
    if summary.skipped:
        reasons = sorted({line.split(": ", 1)[1] for line in summary.skipped})
        print(f"skipped {len(summary.skipped)} combinations that do not apply: {'; '.join(reasons)}", file=sys.stderr)
    fresh = f"; --fresh deleted {summary.deleted} files the store had written" if args.fresh else ""
    failed = f", {len(summary.failed)} failed" if summary.failed else ""
    print(f"sweep {config.name}: {summary.cells} cells, {summary.ran} run{failed}, {summary.reused} reused{fresh}; "
          f"results in {summary.folder}")
    if summary.failed:  # every other cell is written; exit 2 with one line saying where the errors are
        first = summary.failed[0]
        raise ConfigError(f"{len(summary.failed)} of {summary.cells} cells failed (first: {first['problem']} / "
                          f"{first['variant']} / N={first['batch_size']}: {first['error'][:200]}); their errors are in "
                          f"{summary.folder}/_failed-<cell id>.json; rerun to retry them")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from reports.report import build_report

    index, rebuilt = build_report(Path(args.results_dir), Path(args.out), force=args.force,
                                  warn=lambda line: print(f"pgvar: warning: {line}", file=sys.stderr),
                                  training_dir=Path(args.training) if args.training else None,
                                  show_progress=not args.quiet)
    print(f"report: {index}" + ("" if rebuilt else " (up to date: results and report code unchanged)"))
    return 0


def _add_problem_and_estimator(parser: argparse.ArgumentParser, estimator_help: str, theta_name: str) -> None:
    """The flags `measure` and `train` share: the problem, the estimator, their options and θ."""
    parser.add_argument("--env", required=True, help="problem name (see `pgvar list`)")
    parser.add_argument("--estimator", required=True, help=estimator_help)
    parser.add_argument("--env-opt", action="append", metavar="KEY=VALUE", help="problem option (repeatable)")
    parser.add_argument("--est-opt", action="append", metavar="KEY=VALUE", help="estimator option (repeatable)")
    parser.add_argument("--theta", metavar="PATH", help=f"{theta_name} as a .npy or .pt file (default: the problem's θ)")


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true",
                        help="no progress on stderr (otherwise a bar on a terminal, elsewhere a line every "
                        f"{PROGRESS_SECONDS:g} s or ${INTERVAL_ENV}; always silent under CI=true)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pgvar", description="Measure bias and variance of policy-gradient estimators.")
    parser.add_argument("--version", action="version", version=f"pgvar {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    sub.add_parser("list", help="problems and estimators with their options").set_defaults(run=cmd_list)

    m = sub.add_parser("measure", help="M batches of N trajectories → metrics with 95%% CIs")
    _add_problem_and_estimator(m, "estimator name (see `pgvar list`)", "θ")
    m.add_argument("--batch-size", type=int, required=True, metavar="N", help="trajectories per batch (≥ 1)")
    m.add_argument("--reps", type=int, required=True, metavar="M", help="independent batches (≥ 2)")
    m.add_argument("--seed", type=int, required=True, metavar="S", help="root seed of all randomness")
    m.add_argument("--reference", default="auto", choices=KINDS,
                   help="reference gradient: auto (exact if the problem has it, else sampled), exact or sampled")
    m.add_argument("--reference-samples", type=int, default=DEFAULT_SAMPLES, metavar="K·N",
                   help=f"trajectories behind a sampled reference (default {DEFAULT_SAMPLES})")
    m.add_argument("--reference-batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                   help=f"trajectories per reference batch (default {DEFAULT_BATCH_SIZE})")
    m.add_argument("--reference-seed", type=int, default=0, metavar="S", help="seed of a sampled reference (default 0)")
    m.add_argument("--reference-cache", metavar="DIR",
                   help=f"cache folder of sampled references (default ${CACHE_ENV} or .cache/references)")
    m.add_argument("--no-reference-cache", action="store_true", help="recompute the reference, store nothing")
    m.add_argument("--chunk-workers", type=int, metavar="K",
                   help="processes drawing the chunks of batches of a problem with a sampled reference, one torch "
                   f"thread each; the numbers do not depend on it (default ${WORKERS_ENV} or min({DEFAULT_CHUNK_WORKERS}, "
                   "cores))")
    m.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    _add_quiet(m)
    m.set_defaults(run=cmd_measure)

    t = sub.add_parser("train", help="one training run: the estimator drives sgd/adam; the learning curve of J")
    _add_problem_and_estimator(t, "estimator name (see `pgvar list`); `exact` is the control", "θ₀")
    t.add_argument("--optimizer", metavar="NAME", help="sgd (default) or adam")
    t.add_argument("--lr", required=True, metavar="LR", help="learning rate (≥ 0)")
    t.add_argument("--batch-size", required=True, metavar="N", help="trajectories per update (≥ 1)")
    t.add_argument("--budget", required=True, metavar="B", help="training trajectories (K = B // N updates)")
    t.add_argument("--seed", required=True, metavar="S", help="root seed of all randomness")
    t.add_argument("--eval-episodes", metavar="N", help="evaluation trajectories where J is not exact (default 256)")
    t.add_argument("--eval-every", metavar="K", help="updates between evaluations where J is not exact (default 10)")
    t.add_argument("--json", action="store_true", help="print the whole record as one JSON object")
    _add_quiet(t)
    t.set_defaults(run=cmd_train)

    s = sub.add_parser("sweep", help="run every cell of a sweep config into results/<name>/ (resumable)")
    s.add_argument("config", help="sweep TOML file, e.g. configs/default.toml")
    s.add_argument("--executor", default="processes", help="inprocess, processes (default) or dask")
    s.add_argument("--workers", type=int, help="worker processes (default: all cores)")
    s.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler address (default: a LocalCluster)")
    s.add_argument("--results", default="results", help="results root (default: results)")
    s.add_argument("--fresh", action="store_true", help="delete this sweep's results and start over")
    _add_quiet(s)
    s.set_defaults(run=cmd_sweep)

    r = sub.add_parser("report", help="figures, rliable statistics and one HTML file from a results folder")
    r.add_argument("results_dir", help="a sweep's results folder, e.g. results/default")
    r.add_argument("--out", default="reports/out", help="output folder (default: reports/out)")
    r.add_argument("--training", metavar="DIR",
                   help="a training sweep's results folder (e.g. results/train): adds the Training section")
    r.add_argument("--force", action="store_true", help="rebuild even if results and code are unchanged")
    _add_quiet(r)
    r.set_defaults(run=cmd_report)
    return parser


def _version() -> str:
    try:
        return version("pgvar")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


ALLOCATOR_MESSAGES = ("not enough memory", "DefaultCPUAllocator", "out of memory")
DEBUG_ENV = "PGVAR_DEBUG"  # =1: let unexpected errors end in their traceback


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:  # bare `pgvar`: what there is to run, and how to ask for more
            parser.print_help()
            return 0
    except SystemExit as exit_:  # --help, --version: argparse exits 0 after printing; a bad flag: 2 (one line)
        return exit_.code if isinstance(exit_.code, int) else 0
    except BrokenPipeError:  # e.g. `pgvar --help | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command; every user error is one line on stderr and exit status 2."""
    from pgvar.deferred import deferred_import

    # `pgvar list` imports every problem and estimator module without running torch's import (pgvar/deferred.py)
    with deferred_import("torch") if args.command == "list" else contextlib.nullcontext():
        from envs.spec import ConfigError

        try:
            return args.run(args)
        except ConfigError as err:
            print(f"pgvar: error: {_one_line(err)}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # e.g. `pgvar measure ... | head`: the reader left, nothing to report
            sys.stderr.close()
            return 0
        except KeyboardInterrupt:
            print("pgvar: interrupted", file=sys.stderr)
            return 130
        except (OSError, ValueError, MemoryError, RuntimeError) as err:
            # The last resort for what no specific check caught (each known case has its own message first):
            # input the OS refuses, values numpy or torch refuse, allocations the machine cannot hold.
            allocator = isinstance(err, MemoryError) or any(text in str(err) for text in ALLOCATOR_MESSAGES)
            if os.environ.get(DEBUG_ENV) == "1" or (isinstance(err, RuntimeError) and not allocator):
                raise
            what = "out of memory" if allocator else type(err).__name__
            print(f"pgvar: error: {what}: {_one_line(err)} (set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
