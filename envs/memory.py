"""How much memory a configuration may take, and the one-line refusal of one that would not fit.

Sizes are checked from the options alone, before anything is allocated: a problem in its builder (its tables,
θ and exact objective), the harness before a measurement (`bench.harness.check_memory`: one chunk of batches
and the M estimates). An allocation the machine cannot hold ends in the allocator's traceback, a MemoryError
or the kernel's kill, and a near miss swaps; so the limit is a fraction of the memory available now.
"""

from __future__ import annotations

import math
from pathlib import Path

from envs.spec import ConfigError

MEMORY_FRACTION = 0.5  # of the available memory: the estimates are rough, and other processes need room
MEMINFO = Path("/proc/meminfo")


def available_bytes() -> float:
    """Memory available to a new allocation (Linux MemAvailable, else psutil), or ∞ when neither can tell."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return math.inf
    return float(psutil.virtual_memory().available)


def memory_limit() -> float:
    """The bytes a configuration may need: MEMORY_FRACTION of `available_bytes()`."""
    return MEMORY_FRACTION * available_bytes()


def format_bytes(count: float) -> str:
    """1.5e9 → '1.5 GB' (decimal units)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count:.0f} B"


def check_bytes(estimate: float, what: str, lower: str) -> None:
    """ConfigError when `what` (e.g. "env garnet with 10000 × 1000 × 10000 outcomes") needs `estimate` bytes,
    more than `memory_limit()`; `lower` names the knobs that shrink it."""
    available = available_bytes()
    limit = MEMORY_FRACTION * available
    if estimate > limit:
        raise ConfigError(f"{what} needs ≈ {format_bytes(estimate)}, over the memory limit {format_bytes(limit)} "
                          f"({MEMORY_FRACTION:.0%} of the {format_bytes(available)} available); lower {lower}")


__all__ = ["MEMORY_FRACTION", "available_bytes", "check_bytes", "format_bytes", "memory_limit"]
