"""Print each benchmark group's medians and the ratios between its roles from a pytest-benchmark JSON.

Benchmarks declare `extra_info["role"]` ("fast" or "slow twin"; "naive", "surrogate" or "vmap" for the
autodiff methods; "gym loop" or "batched" for rollouts) and, when they time different amounts of work,
`extra_info["reps"]`: the ratios are then taken per replicate."""

from __future__ import annotations

import json
import sys
from collections import defaultdict

# (numerator, denominator) roles whose per-replicate median ratio is printed when a group has both
RATIOS = [("slow twin", "fast"), ("naive", "vmap"), ("surrogate", "vmap"), ("naive", "surrogate"),
          ("gym loop", "batched")]


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
            print(f"  {b['name']:<34} median {median:.4g} s over {b['stats']['rounds']} rounds, "
                  f"{reps} reps: {median / reps * 1e3:.4g} ms per replicate ({info.get('role', '')})")
        for slow, fast in RATIOS:
            if slow in per_rep and fast in per_rep:
                print(f"  {slow} / {fast}, per replicate: {per_rep[slow] / per_rep[fast]:.3g}×")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
