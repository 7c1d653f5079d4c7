"""Print each benchmark group's medians and the ratios between its roles from a pytest-benchmark JSON.

Benchmarks declare `extra_info["role"]` ("fast" or "slow twin"; "naive", "surrogate", "vmap" or "packed" for
the autodiff methods; "gym loop", "batched B=…" or "batched vmap B=…" for rollouts; "pgvar", "cleanrl" and
"competent", "pgvar 1 worker", "pgvar cold pool" and "policy kernels" for the CartPole job) and, when they time
different amounts of work, `extra_info["reps"]`: the ratios are then taken per replicate (per env step for
the rollouts, whose `extra_info["env_steps_per_second"]` is printed too)."""

from __future__ import annotations

import json
import sys
from collections import defaultdict

# (numerator, denominator) roles whose per-replicate median ratio is printed when a group has both
RATIOS = [("slow twin", "fast"), ("naive", "vmap"), ("surrogate", "vmap"), ("naive", "surrogate"),
          ("vmap", "packed"), ("gym loop", "batched B=4096"), ("gym loop", "batched B=16384"),
          ("gym loop", "batched vmap B=4096"), ("batched vmap B=4096", "batched B=4096"),
          ("cleanrl", "pgvar"), ("competent", "pgvar"), ("cleanrl", "pgvar 1 worker"),
          ("competent", "pgvar 1 worker"), ("pgvar 1 worker", "pgvar"), ("pgvar cold pool", "pgvar"),
          ("pgvar 1 worker", "policy kernels"), ("pgvar", "policy kernels")]


def main(path: str) -> int:
    with open(path) as f:
        data = json.load(f)
    groups: dict[str, list[dict]] = defaultdict(list)
    for bench in data["benchmarks"]:
        groups[bench["group"] or bench["name"]].append(bench)
    for group, benches in groups.items():
        print(f"\n{group}")
        per_rep = {}
        for b in benches:
            info = b.get("extra_info", {})
            median, reps = b["stats"]["median"], info.get("reps", 1)
            per_rep[info.get("role", b["name"])] = median / reps
            rate = f", {info['env_steps_per_second']:.4g} env steps/s" if "env_steps_per_second" in info else ""
            rate += f", cosine to pgvar {info['cosine_to_pgvar']:.4f}" if "cosine_to_pgvar" in info else ""
            rate += f", {info['workers']} chunk workers" if "workers" in info else ""
            rate += (f", peak RSS {info['peak_rss_gib']:.3g} GiB + helpers {info['helper_peak_rss_gib']:.3g} GiB"
                     if "helper_peak_rss_gib" in info else "")
            print(f"  {b['name']:<34} median {median:.4g} s over {b['stats']['rounds']} rounds, "
                  f"{reps} reps: {median / reps * 1e3:.4g} ms per replicate{rate} ({info.get('role', '')})")
        for slow, fast in RATIOS:
            if slow in per_rep and fast in per_rep:
                print(f"  {slow} / {fast}, per replicate: {per_rep[slow] / per_rep[fast]:.3g}×")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
